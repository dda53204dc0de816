import Foundation
import Leasehold
import LeaseholdTesting
import RedisClient
import Testing

@testable import LeaseholdCLI

/// A fleet written directly into Redis, the way members of different versions leave it: the
/// tests control exactly which member advertises which catalog.
struct FleetFixture {
    let server: RedisServerProcess
    let ns: String
    var keys: LeaseKeys { LeaseKeys(namespace: ns) }

    static let digestA = "a1b2c3d4e5f60718"
    static let digestB = "b0b1b2b3b4b5b6b7"
    static let digestGone = "c0c1c2c3c4c5c6c7"

    /// Redis `TIME` in ms: member liveness is judged against it, not against this process's clock.
    func redisNowMs() async throws -> Int64 {
        let reply = try await server.command("TIME")
        let parts = try #require(reply.array)
        return Int64(parts[0].string ?? "0")! * 1000 + Int64(parts[1].string ?? "0")! / 1000
    }

    /// A member entry: zset score = heartbeat expiry (live for a minute, or expired 5 s ago),
    /// its hash as the renew script writes it, plus `catalog` / `jobs` when given, and the
    /// catalog set of `carries` under the digest.
    func member(
        _ name: String, catalog: String?, carries: [String] = [], jobs: Int? = nil, live: Bool = true
    ) async throws {
        let now = try await redisNowMs()
        _ = try await server.command("ZADD", keys.members, String(live ? now + 60_000 : now - 5_000), name)
        var hash = [
            "HSET", keys.member(name), "incarnation", "inc-\(name)", "tick_at", String(now - 500), "heartbeat_ms",
            "3000", "left_at", "", "host", "host-\(name)", "version", "test",
        ]
        if let catalog { hash += ["catalog", catalog] }
        if let jobs = jobs ?? (catalog == nil ? nil : carries.count) { hash += ["jobs", String(jobs)] }
        _ = try await server.command(hash)
        if let catalog, !carries.isEmpty { _ = try await server.command(["SADD", keys.catalog(catalog)] + carries) }
    }

    /// The keys a job leaves behind after members ran it: ns:jobs entry, fence, state, events,
    /// runs; a lease when `holder` is given.
    func jobKeys(_ job: String, fence: String, holder: String? = nil) async throws {
        _ = try await server.command("SADD", keys.jobs, job)
        _ = try await server.command("SET", keys.fence(job), fence)
        _ = try await server.command("HSET", keys.state(job), "holder", "", "released_at", "1000")
        _ = try await server.command("XADD", keys.events(job), "*", "type", "released", "member", "m0")
        _ = try await server.command("XADD", keys.runs(job), "*", "token", fence, "member", "m0")
        if let holder { _ = try await server.command("SET", keys.lease(job), "\(holder):\(fence)", "PX", "60000") }
    }

    func exists(_ key: String) async throws -> Bool { try await server.command("EXISTS", key).integer == 1 }

    /// The fleet of most tests: m1 and m2 live with different catalogs, m3 expired (its
    /// catalog no longer counts); `retired` and `retired-held` are carried by no live member,
    /// `retired-held` still has a lease.
    static func standard(_ ns: String) async throws -> FleetFixture {
        let fixture = FleetFixture(server: try await RedisServerProcess(), ns: ns)
        try await fixture.member("m1", catalog: digestA, carries: ["alpha", "beta"])
        try await fixture.member("m2", catalog: digestB, carries: ["alpha", "gamma"])
        try await fixture.member("m3", catalog: digestGone, carries: ["retired", "retired-held"], live: false)
        for job in ["alpha", "beta", "gamma"] { try await fixture.jobKeys(job, fence: "7") }
        try await fixture.jobKeys("retired", fence: "41")
        try await fixture.jobKeys("retired-held", fence: "42", holder: "m3@inc-m3")
        return fixture
    }

    func run(_ arguments: [String], stdinIsTerminal: Bool = false, answer: String? = nil) async -> (
        code: Int32, out: String, err: String
    ) {
        let capture = CLICapture()
        let code = await LeaseholdTool.run(
            arguments + ["--redis", server.url, "--namespace", ns],
            io: capture.io(stdinIsTerminal: stdinIsTerminal, readLine: { answer }))
        return (code, capture.stdout, capture.stderr)
    }
}

func jobRows(_ text: String) throws -> [String: [String: Any]] {
    let rows = try #require(try cliJSON(text)["jobs"] as? [[String: Any]])
    return Dictionary(uniqueKeysWithValues: rows.map { ($0["name"] as? String ?? "", $0) })
}

@Suite("leasehold members/status/prune across catalogs", .serialized, .timeLimit(.minutes(2)))
struct CLIFleetChangeTests {
    @Test func membersShowCatalogDigestAndJobCount() async throws {
        let fleet = try await FleetFixture.standard("fm")
        try await fleet.member("m4", catalog: nil)
        let table = await fleet.run(["members"])
        #expect(table.code == 0, "\(table.err)")
        let lines = table.out.split(separator: "\n").map(String.init)
        let header = try #require(lines.first)
        #expect(header.contains("VERSION  CATALOG  JOBS  UP SINCE"), "\(table.out)")
        let column = try #require(header.range(of: "CATALOG")).lowerBound.utf16Offset(in: header)
        func row(_ name: String) throws -> String { try #require(lines.first { $0.hasPrefix(name + " ") }) }
        func cells(_ name: String) throws -> [Substring] {
            let line = try row(name)
            return line.dropFirst(column).split(separator: " ", omittingEmptySubsequences: true)
        }
        #expect(try cells("m1").prefix(2) == ["a1b2c3d", "2"], "\(table.out)")
        #expect(try cells("m2").prefix(2) == ["b0b1b2b", "2"])
        #expect(try cells("m4").prefix(2) == ["-", "-"], "an older member advertises nothing")

        let json = await fleet.run(["members", "--json"])
        #expect(json.code == 0)
        let members = try #require(try cliJSON(json.out)["members"] as? [[String: Any]])
        let byName = Dictionary(uniqueKeysWithValues: members.map { ($0["name"] as? String ?? "", $0) })
        #expect(byName["m1"]?["catalog"] as? String == FleetFixture.digestA)
        #expect((byName["m1"]?["jobs"] as? NSNumber)?.intValue == 2)
        #expect(byName["m3"]?["catalog"] as? String == FleetFixture.digestGone)
        #expect(byName["m4"]?["catalog"] is NSNull)
        #expect(byName["m4"]?["jobs"] is NSNull)
    }

    @Test func statusCountsCatalogsAndMarksJobsNoLiveMemberCarries() async throws {
        let fleet = try await FleetFixture.standard("fs")
        let catalog = try cliCatalog(server: fleet.server, namespace: fleet.ns, jobs: ["alpha", "beta", "draft"])
        let table = await fleet.run(["status", "--config", catalog])
        #expect(table.code == 0, "\(table.err)")
        let lines = table.out.split(separator: "\n").map(String.init)
        #expect(lines.contains("2 catalogs among 2 live members"), "\(table.out)")
        #expect(lines.contains { $0.hasPrefix("retired (not in catalog, not carried) ") })
        #expect(lines.contains { $0.hasPrefix("retired-held (not in catalog, not carried) ") })
        // A job of the operator's catalog no live member carries is marked too.
        #expect(lines.contains { $0.hasPrefix("draft (not carried) ") })
        for job in ["alpha", "beta", "gamma (not in catalog)"] {
            #expect(lines.contains { $0.hasPrefix(job + " ") && !$0.contains("not carried") }, "\(job)")
        }
        #expect(lines.contains("3 jobs not carried by any live member (leasehold prune deletes their keys)"))

        let json = await fleet.run(["status", "--config", catalog, "--json"])
        #expect(json.code == 0)
        let object = try cliJSON(json.out)
        let rows = try jobRows(json.out)
        #expect(rows.keys.sorted() == ["alpha", "beta", "draft", "gamma", "retired", "retired-held"])
        #expect(rows["alpha"]?["carried_by"] as? [String] == ["m1", "m2"])
        #expect(rows["beta"]?["carried_by"] as? [String] == ["m1"])
        #expect(rows["gamma"]?["carried_by"] as? [String] == ["m2"])
        #expect(rows["retired"]?["carried_by"] as? [String] == [], "the expired m3 carries nothing")
        let catalogs = try #require(object["catalogs"] as? [String: [String]])
        #expect(catalogs == [FleetFixture.digestA: ["m1"], FleetFixture.digestB: ["m2"]])

        // An older member (no catalog field) carries an unknown set: it counts as carrying
        // everything, so nothing is "not carried" any more.
        try await fleet.member("m4", catalog: nil)
        let mixed = await fleet.run(["status", "--config", catalog])
        #expect(mixed.out.contains("2 catalogs among 3 live members"), "\(mixed.out)")
        #expect(!mixed.out.contains("not carried"), "\(mixed.out)")
        let mixedRows = try jobRows(await fleet.run(["status", "--config", catalog, "--json"]).out)
        #expect(mixedRows["retired"]?["carried_by"] as? [String] == ["m4"])
        #expect(mixedRows["alpha"]?["carried_by"] as? [String] == ["m1", "m2", "m4"])
    }

    @Test func oneCatalogPrintsNoCatalogLineAndOneOfEachIsSingular() async throws {
        let fleet = FleetFixture(server: try await RedisServerProcess(), ns: "f1")
        try await fleet.member("m1", catalog: FleetFixture.digestA, carries: ["alpha"])
        try await fleet.jobKeys("alpha", fence: "1")
        try await fleet.jobKeys("retired", fence: "2")
        // (An explicit catalog: a ./jobs.yaml in the working directory would add its jobs.)
        let catalog = try cliCatalog(server: fleet.server, namespace: fleet.ns, jobs: ["alpha"])
        let single = await fleet.run(["status", "--config", catalog])
        #expect(!single.out.contains("among"), "\(single.out)")
        #expect(single.out.contains("1 job not carried by any live member (leasehold prune deletes its keys)"))
        try await fleet.member("m2", catalog: FleetFixture.digestB, carries: ["alpha", "retired"])
        let two = await fleet.run(["status", "--config", catalog])
        #expect(two.out.contains("\n2 catalogs among 2 live members\n"), "\(two.out)")
        #expect(!two.out.contains("not carried"))
    }

    @Test func pruneDeletesTheKeysOfJobsNoLiveMemberCarriesButKeepsTheFence() async throws {
        let fleet = try await FleetFixture.standard("fp")
        let keys = fleet.keys

        // Without a terminal and without --yes it refuses before touching anything.
        let refused = await fleet.run(["prune"])
        #expect(refused.code == 2)
        #expect(refused.out == "")
        #expect(
            refused.err
                == "leasehold: refusing to prune without a terminal to confirm on: pass --yes (or --dry-run to only list)\n"
        )
        #expect(try await fleet.exists(keys.state("retired")))

        // A dry run lists and deletes nothing.
        let dry = await fleet.run(["prune", "--dry-run"])
        #expect(dry.code == 0, "\(dry.err)")
        #expect(
            dry.out.contains(
                "would prune retired: would delete {fp}:{retired}:state, {fp}:{retired}:events, {fp}:{retired}:runs; would remove from {fp}:jobs"
            ), "\(dry.out)")
        #expect(dry.out.contains("skipped retired-held: its lease is held by m3 (token 42)"))
        #expect(dry.out.contains("nothing deleted"))
        let dryJSON = try cliJSON(await fleet.run(["prune", "--dry-run", "--json"]).out)
        #expect(dryJSON["dry_run"] as? Bool == true)
        #expect((dryJSON["pruned"] as? [[String: Any]])?.map { $0["job"] as? String } == ["retired"])
        for key in [keys.state("retired"), keys.events("retired"), keys.runs("retired")] {
            #expect(try await fleet.exists(key), "\(key) survives a dry run")
        }

        // On a terminal, anything but yes deletes nothing.
        let declined = await fleet.run(["prune"], stdinIsTerminal: true, answer: "n")
        #expect(declined.code == 2)
        #expect(declined.err.contains("Delete the keys of 1 job? [y/N] "), "\(declined.err)")
        #expect(declined.err.contains("would prune retired:"))
        #expect(try await fleet.exists(keys.state("retired")))

        let result = await fleet.run(["prune", "--json"], stdinIsTerminal: true, answer: "y")
        #expect(result.code == 0, "\(result.err)")
        let object = try cliJSON(result.out)
        #expect(object["dry_run"] as? Bool == false)
        let pruned = try #require(object["pruned"] as? [[String: Any]])
        #expect(pruned.count == 1)
        #expect(pruned.first?["job"] as? String == "retired")
        #expect(
            pruned.first?["keys"] as? [String] == [
                keys.state("retired"), keys.events("retired"), keys.runs("retired"),
            ])
        #expect(pruned.first?["jobs_set_entry"] as? Bool == true)
        let skipped = try #require(object["skipped"] as? [[String: Any]])
        #expect(skipped.map { $0["job"] as? String } == ["retired-held"])
        #expect((skipped.first?["reason"] as? String)?.contains("held by m3") == true)

        for key in [keys.lease("retired"), keys.state("retired"), keys.events("retired"), keys.runs("retired")] {
            #expect(try await fleet.exists(key) == false, "\(key) deleted")
        }
        #expect(try await fleet.server.command("SISMEMBER", keys.jobs, "retired").integer == 0)
        // The fence stays: a job that comes back gets a higher token than any it had.
        #expect(try await fleet.server.command("GET", keys.fence("retired")).string == "41")
        // The held job and every carried job are untouched.
        #expect(try await fleet.exists(keys.lease("retired-held")))
        #expect(try await fleet.exists(keys.state("retired-held")))
        for job in ["alpha", "beta", "gamma"] {
            #expect(try await fleet.exists(keys.state(job)))
            #expect(try await fleet.server.command("SISMEMBER", keys.jobs, job).integer == 1)
        }

        // Nothing left to prune: said so, exit 0.
        let again = await fleet.run(["prune", "--yes"])
        #expect(again.code == 0)
        #expect(again.out.contains("nothing to prune"), "\(again.out)")
        #expect(again.out.contains("skipped retired-held"))
    }

    @Test func pruneTextOutputNamesTheKeysItDeleted() async throws {
        let fleet = try await FleetFixture.standard("ft")
        let result = await fleet.run(["prune", "--yes"])
        #expect(result.code == 0, "\(result.err)")
        #expect(
            result.out == """
                pruned retired: deleted {ft}:{retired}:state, {ft}:{retired}:events, {ft}:{retired}:runs; removed from {ft}:jobs
                skipped retired-held: its lease is held by m3 (token 42)
                pruned 1 job, skipped 1; fence keys kept, so tokens keep rising if a job comes back

                """)
    }

    @Test func pruneDeletesNothingWhileAnOlderMemberOrNoMemberIsLive() async throws {
        let fleet = try await FleetFixture.standard("fo")
        try await fleet.member("m4", catalog: nil)
        let older = await fleet.run(["prune", "--yes"])
        #expect(older.code == 1)
        #expect(older.out == "")
        #expect(
            older.err
                == "leasehold: m4 advertises no catalog (an older version, carrying an unknown set of jobs); nothing deleted until every live member advertises its catalog\n"
        )
        #expect(try await fleet.exists(fleet.keys.state("retired")))

        // A digest whose job set is missing is as unknown as no digest.
        let missing = FleetFixture(server: fleet.server, ns: "fo2")
        try await missing.member("m1", catalog: FleetFixture.digestA)
        try await missing.jobKeys("retired", fence: "3")
        let unknownSet = await missing.run(["prune", "--yes"])
        #expect(unknownSet.code == 1)
        #expect(
            unknownSet.err.contains("m1 advertises catalog \(FleetFixture.digestA) but {fo2}:catalog:"),
            "\(unknownSet.err)")
        #expect(try await missing.exists(missing.keys.state("retired")))
        let status = await missing.run(["status"])
        #expect(
            status.out.contains(
                "problem: catalog \(FleetFixture.digestA): {fo2}:catalog:\(FleetFixture.digestA) does not exist; m1 counted as carrying every job"
            ), "\(status.out)")

        // No live member: the expired m3 says nothing about today's fleet.
        let empty = FleetFixture(server: fleet.server, ns: "fo3")
        try await empty.member("m3", catalog: FleetFixture.digestA, carries: ["alpha"], live: false)
        try await empty.jobKeys("retired", fence: "3")
        let none = await empty.run(["prune", "--yes"])
        #expect(none.code == 1)
        #expect(
            none.err
                == "leasehold: no live member in namespace fo3: cannot tell which jobs the fleet carries; nothing deleted\n"
        )
        #expect(try await empty.exists(empty.keys.state("retired")))
    }

    /// Between the listing (or the operator's answer) and the delete, a member may start
    /// carrying the job or take its lease: the script checks again and skips it.
    @Test func theScriptChecksAgainAtDeleteTime() async throws {
        let fleet = try await FleetFixture.standard("fr")
        try await fleet.jobKeys("retired-2", fence: "5")
        try await fleet.jobKeys("retired-3", fence: "6")
        try await fleet.jobKeys("retired-4", fence: "8")
        let connection = RedisConnection(configuration: fleet.server.configuration())
        let reader = SnapshotReader(connection: connection, keys: fleet.keys)
        let snapshot = try await reader.snapshot(catalogJobs: [])
        try PrunePlan.checkFleet(snapshot)
        let plan = try await PrunePlan.make(snapshot, reader: reader)
        #expect(plan.pruned.map(\.job) == ["retired", "retired-2", "retired-3", "retired-4"])

        // Meanwhile: m2 now carries retired-2, someone took retired-3's lease, an older
        // member joined (it may carry retired-4).
        _ = try await fleet.server.command("SADD", fleet.keys.catalog(FleetFixture.digestB), "retired-2")
        _ = try await fleet.server.command("SET", fleet.keys.lease("retired-3"), "m2@inc-m2:9", "PX", "60000")
        let done = try await PrunePlan(keys: fleet.keys, pruned: Array(plan.pruned.prefix(3))).execute(reader: reader)
        #expect(done.pruned.map(\.job) == ["retired"])
        try await fleet.member("m5", catalog: nil)
        let late = try await PrunePlan(keys: fleet.keys, pruned: [plan.pruned[3]]).execute(reader: reader)
        await connection.close()
        #expect(late.pruned.isEmpty)
        let reasons = Dictionary(uniqueKeysWithValues: (done.skipped + late.skipped).map { ($0.job, $0.reason) })
        #expect(reasons["retired-2"] == "m2 carries it now")
        #expect(reasons["retired-3"] == "its lease was taken meanwhile (m2@inc-m2:9)")
        #expect(reasons["retired-4"] == "m5 is live now and carries an unknown set of jobs")
        for job in ["retired-2", "retired-3", "retired-4"] {
            #expect(try await fleet.exists(fleet.keys.state(job)), "\(job) kept")
        }
        #expect(try await fleet.exists(fleet.keys.state("retired")) == false)
    }
}
