import Foundation
import Leasehold
import LeaseholdTesting
import RedisClient
import Synchronization
import Testing

@testable import LeaseholdCLI

/// The CLI tests' members: namespaced, with heartbeat metadata the CLI shows.
func cliMember(_ name: String, namespace: String, shutdownTimeout: Duration = .seconds(2)) -> TestMember.Options {
    TestMember.Options(
        keys: LeaseKeys(namespace: namespace), metadata: ["host": "host-\(name)", "pid": "4242", "version": "test"],
        shutdownTimeout: shutdownTimeout)
}

/// A catalog naming `jobs` (log handler) for the given server and namespace.
func cliCatalog(server: RedisServerProcess, namespace: String, jobs: [String]) throws -> String {
    var text = "version: 1\nredis:\n  url: \(server.url)\n  namespace: \(namespace)\njobs:\n"
    for job in jobs { text += "  - name: \(job)\n    handler: log\n    schedule: { every: 1h }\n" }
    return try cliTempFile(text)
}

func cliJSON(_ text: String) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
}

let cliTTL = LeaseTiming(ttl: .seconds(2))

@Suite("leasehold CLI against redis-server", .serialized, .timeLimit(.minutes(2)))
struct CLIRedisTests {
    @Test func statusJSONMatchesHoldersTokensAndTTLs() async throws {
        let server = try await RedisServerProcess()
        let ns = "st"
        let jobNames = ["alpha", "beta", "gamma", "delta"]
        // 4 s leases: the holders read below must still hold when the CLI reads, through the
        // 2 s stalls of a machine running every suite beside two CPU hogs (seen: all four
        // leases lost and taken again in between with 2 s leases).
        let timing = LeaseTiming(ttl: .seconds(4))
        let jobs = jobNames.map { LeaseJob(name: $0, timing: timing) }
        let config = try cliCatalog(server: server, namespace: ns, jobs: jobNames + ["never-run"])
        try await withMembers(
            ["m1", "m2"], redis: server.configuration(), jobs: jobs, options: { cliMember($0, namespace: ns) }
        ) { members in
            let (m1, m2) = (members[0], members[1])

            // Wait until every job is led, as the managers themselves see it.
            let holders: [String: (String, UInt64)] = try await eventually("every job led") {
                var map: [String: (String, UInt64)] = [:]
                for (name, member) in [("m1", m1), ("m2", m2)] {
                    for grant in member.manager.currentGrants { map[grant.job] = (name, grant.token) }
                }
                return map.count == jobNames.count ? map : nil
            }
            // And both members have heartbeated (both listed live).
            _ = try await eventually("both members live") { () -> Bool? in
                let r = await cliRun(["members", "--config", config, "--json"])
                let members = (try cliJSON(r.out)["members"] as? [[String: Any]]) ?? []
                return members.filter { $0["live"] as? Bool == true }.count == 2 ? true : nil
            }

            let result = await cliRun(["status", "--config", config, "--json"])
            #expect(result.code == 0, "\(result.err)")
            let object = try cliJSON(result.out)
            let rows = try #require(object["jobs"] as? [[String: Any]])
            #expect(rows.map { $0["name"] as? String } == (jobNames + ["never-run"]).sorted())
            for row in rows {
                let name = try #require(row["name"] as? String)
                if name == "never-run" {
                    #expect(row["leader"] is NSNull)
                    #expect(row["leaderless_ms"] is NSNull)
                    continue
                }
                let leader = try #require(row["leader"] as? [String: Any], "\(name) has no leader in \(result.out)")
                let (member, token) = try #require(holders[name])
                #expect(leader["member"] as? String == member)
                #expect((leader["token"] as? NSNumber)?.uint64Value == token)
                let expires = try #require((leader["expires_in_ms"] as? NSNumber)?.int64Value)
                #expect(expires > 0 && expires <= 4_000)
                // The lease value in Redis says the same.
                let value = try await server.command("GET", "{\(ns)}:{\(name)}:lease").string
                #expect(value?.hasPrefix("\(member)@") == true)
                #expect(value?.hasSuffix(":\(token)") == true)
                let preferred = try #require(row["preferred"] as? String)
                #expect(
                    preferred
                        == Rendezvous.preferred(
                            job: name, among: [RendezvousMember(name: "m1"), RendezvousMember(name: "m2")]))
            }
            let members = try #require(object["members"] as? [[String: Any]])
            #expect(members.map { $0["name"] as? String } == ["m1", "m2"])
            let led = members.compactMap { ($0["jobs_led"] as? NSNumber)?.intValue }.reduce(0, +)
            #expect(led == jobNames.count)
            #expect(members.allSatisfy { $0["host"] as? String == "host-\($0["name"] as? String ?? "")" })

            // The table lists the same jobs, aligned.
            let table = await cliRun(["status", "--config", config])
            #expect(table.code == 0)
            let lines = table.out.split(separator: "\n")
            #expect(lines.first?.hasPrefix("JOB") == true)
            // Header, jobs, never-run, the summary, and the line about never-run: no live
            // member carries it (it is only in the CLI's catalog).
            #expect(lines.count == jobNames.count + 4, "\(table.out)")
            #expect(table.out.contains("never led"))
            #expect(table.out.contains("never-run (not carried)"))

            await m1.stop()
            await m2.stop()
            // After a graceful stop every job is leaderless since its release.
            let after = try cliJSON(await cliRun(["status", "--config", config, "--json"]).out)
            for row in (after["jobs"] as? [[String: Any]] ?? []) where row["name"] as? String != "never-run" {
                #expect(row["leader"] is NSNull)
                #expect(row["leaderless_source"] as? String == "released")
            }
        }
    }

    @Test func historyShowsForcedFailoverInOrder() async throws {
        let server = try await RedisServerProcess()
        let ns = "hist"
        let job = LeaseJob(name: "failover", timing: cliTTL)
        let config = try cliCatalog(server: server, namespace: ns, jobs: ["failover"])
        try await withMember("m1", redis: server.configuration(), jobs: [job], options: cliMember("m1", namespace: ns))
        { m1 in
            let firstToken = try await eventually("m1 leads") { m1.manager.grant(for: "failover")?.token }
            try await withMember(
                "m2", redis: server.configuration(), jobs: [job], options: cliMember("m2", namespace: ns)
            ) { m2 in

                // m1 crashes: it stops without releasing, so m2 takes over once the lease expires.
                await m1.crash()
                let secondToken = try await eventually("m2 takes over") { m2.manager.grant(for: "failover")?.token }
                #expect(secondToken > firstToken)

                // The operator forces the lease away from m2: m2 loses it, then takes it up again.
                let forced = await cliRun(["release", "failover", "--force", "--yes", "--config", config])
                #expect(forced.code == 0, "\(forced.err)")
                #expect(forced.out.contains("m2"))
                let types: [String] = try await eventually("lost and re-acquired after the forced release") {
                    let r = await cliRun(["history", "failover", "--config", config, "--json"])
                    let events = (try cliJSON(r.out)["events"] as? [[String: Any]]) ?? []
                    let types = events.compactMap { $0["type"] as? String }
                    guard let forcedAt = types.firstIndex(of: "forced_release"),
                        types[forcedAt...].contains("lost"), types[forcedAt...].contains("acquired")
                    else { return nil }
                    return types
                }
                #expect(Array(types.prefix(3)) == ["acquired", "expired_takeover", "forced_release"])
                #expect(types.firstIndex(of: "lost")! < types.lastIndex(of: "acquired")!)

                let history = await cliRun(["history", "failover", "--config", config, "--json"])
                let events = try #require(try cliJSON(history.out)["events"] as? [[String: Any]])
                #expect(events[0]["member"] as? String == "m1")
                #expect((events[0]["token"] as? NSNumber)?.uint64Value == firstToken)
                #expect(events[1]["member"] as? String == "m2")
                #expect((events[1]["token"] as? NSNumber)?.uint64Value == secondToken)
                #expect((events[1]["previous"] as? String)?.hasPrefix("m1@") == true)
                #expect(events[1]["gap_ms"] is NSNumber)
                #expect(events[2]["by"] as? String != nil)
                // Tokens never go backwards along the trail.
                let acquiredTokens = events.filter { ["acquired", "expired_takeover"].contains($0["type"] as? String) }
                    .compactMap { ($0["token"] as? NSNumber)?.uint64Value }
                #expect(acquiredTokens == acquiredTokens.sorted())

                let table = await cliRun(["history", "failover", "--config", config])
                #expect(table.code == 0)
                let lines = table.out.split(separator: "\n").map(String.init)
                #expect(lines[0].hasPrefix("TIME (UTC)"))
                #expect(lines[1].contains("acquired") && lines[1].contains("m1"))
                #expect(lines[2].contains("expired takeover") && lines[2].contains("took over from m1"))
                #expect(lines[3].contains("forced release"))
                // --limit keeps the newest events, still oldest first.
                let limited = try cliJSON(
                    await cliRun(["history", "failover", "--config", config, "--json", "--limit", "2"]).out)
                let limitedEvents = limited["events"] as? [[String: Any]] ?? []
                #expect(limitedEvents.count == 2)
                #expect(limitedEvents.map { $0["id"] as? String } == events.suffix(2).map { $0["id"] as? String })

                let unknown = await cliRun(["history", "no-such-job", "--config", config])
                #expect(unknown.code == 1)
            }
        }
    }

    @Test func releaseMovesLeadershipToTheOtherMember() async throws {
        let server = try await RedisServerProcess()
        let ns = "rel"
        // Spread placement with a long stability window: placement itself never moves the job
        // during the test, and the non-preferred member waits before taking a free lease, so
        // after the handoff the preferred member takes it deterministically.
        let name = "handoff-job"
        let winner = Rendezvous.preferred(
            job: name, among: [RendezvousMember(name: "m1"), RendezvousMember(name: "m2")])!
        let loser = winner == "m1" ? "m2" : "m1"
        let job = LeaseJob(
            name: name, timing: cliTTL, placement: .spread(standbyDelay: .seconds(30), stability: .seconds(3600)))
        let config = try cliCatalog(server: server, namespace: ns, jobs: [name])

        let noLeader = await cliRun(["release", name, "--config", config])
        #expect(noLeader.code == 1)
        #expect(noLeader.err == "leasehold: job '\(name)' has no leader in namespace \(ns)\n")

        try await withMember(
            loser, redis: server.configuration(), jobs: [job], options: cliMember(loser, namespace: ns)
        ) { first in
            let firstToken = try await eventually("\(loser) leads") { first.manager.grant(for: name)?.token }
            try await withMember(
                winner, redis: server.configuration(), jobs: [job], options: cliMember(winner, namespace: ns)
            ) { second in
                _ = try await eventually("\(winner) heartbeats") { () -> Bool? in
                    let r = try await server.command("ZSCORE", "{\(ns)}:members", winner)
                    return r.isNull ? nil : true
                }

                let asked = await cliRun(["release", name, "--config", config])
                #expect(asked.code == 0, "\(asked.err)")
                #expect(asked.out.hasPrefix("asked \(loser) (instance "))
                #expect(asked.out.contains("token \(firstToken)"))

                let newToken = try await eventually("\(winner) takes over") { second.manager.grant(for: name)?.token }
                #expect(newToken > firstToken)
                #expect(first.log.events.contains(.handoffSuggested(job: name, to: nil)))
                let status = try cliJSON(await cliRun(["status", "--config", config, "--json"]).out)
                let row = try #require((status["jobs"] as? [[String: Any]])?.first)
                let leader = try #require(row["leader"] as? [String: Any])
                #expect(leader["member"] as? String == winner)
                #expect((leader["token"] as? NSNumber)?.uint64Value == newToken)
                let history = try cliJSON(await cliRun(["history", name, "--config", config, "--json"]).out)
                let types = (history["events"] as? [[String: Any]] ?? []).compactMap { $0["type"] as? String }
                #expect(types == ["acquired", "handed_off", "acquired"])

                // --json form of a handoff request.
                let json = await cliRun(["release", name, "--config", config, "--json"])
                let reply = try cliJSON(json.out)
                #expect(reply["action"] as? String == "handoff_requested")
                #expect((reply["leader"] as? [String: Any])?["member"] as? String == winner)
            }
        }
    }

    @Test func releasingThePreferredLeaderMovesTheJobAway() async throws {
        let server = try await RedisServerProcess()
        let ns = "rel-preferred"
        let name = "sticky-job"
        let preferred = Rendezvous.preferred(
            job: name, among: [RendezvousMember(name: "m1"), RendezvousMember(name: "m2")])!
        let other = preferred == "m1" ? "m2" : "m1"
        // The stability window (10 s) is how long the released member stands back.
        let job = LeaseJob(
            name: name, timing: cliTTL, placement: .spread(standbyDelay: .milliseconds(300), stability: .seconds(10)))
        let config = try cliCatalog(server: server, namespace: ns, jobs: [name])
        try await withMember(
            preferred, redis: server.configuration(), jobs: [job], options: cliMember(preferred, namespace: ns)
        ) { first in
            let firstToken = try await eventually("\(preferred) leads") { first.manager.grant(for: name)?.token }
            try await withMember(
                other, redis: server.configuration(), jobs: [job], options: cliMember(other, namespace: ns)
            ) { second in
                _ = try await eventually("\(other) heartbeats") { () -> Bool? in
                    try await server.command("ZSCORE", "{\(ns)}:members", other).isNull ? nil : true
                }
                let asked = await cliRun(["release", name, "--config", config])
                #expect(asked.code == 0, "\(asked.err)")
                // Without standing back, the preferred member took the lease again 1 ms later.
                let token = try await eventually("\(other) takes over", within: .seconds(10)) {
                    second.manager.grant(for: name)?.token
                }
                #expect(token > firstToken)
                try await Task.sleep(for: .seconds(2))
                #expect(try await server.lease(name, keys: LeaseKeys(namespace: ns))?.owner.member == other)
                #expect(first.manager.grant(for: name) == nil)
            }
        }
    }

    @Test func statusShowsARestartQuarantine() async throws {
        let server = try await RedisServerProcess()
        let keys = LeaseKeys()
        let time = try await server.command("TIME").array ?? []
        let nowMs = (Int64(time.first?.string ?? "0") ?? 0) * 1000
        _ = try await server.command("HSET", keys.epoch, "id", "1", "quarantine_until", String(nowMs + 60_000))
        let table = await cliRun(["status", "--redis", server.url])
        #expect(table.code == 0)
        #expect(table.out.contains("quarantine: Redis lost this namespace's data; no lease is granted for another"))
        let json = await cliRun(["status", "--json", "--redis", server.url])
        let until = try cliJSON(json.out)["quarantine_until_ms"] as? Int
        #expect(until == Int(nowMs + 60_000), "\(json.out)")
        // Over: nothing shown.
        _ = try await server.command("HSET", keys.epoch, "quarantine_until", String(nowMs - 1))
        let after = await cliRun(["status", "--redis", server.url])
        #expect(!after.out.contains("quarantine"))
        let afterJSON = await cliRun(["status", "--json", "--redis", server.url])
        #expect(try cliJSON(afterJSON.out)["quarantine_until_ms"] is NSNull)
    }

    @Test func forceWithoutTerminalOrYesIsRefused() async throws {
        let server = try await RedisServerProcess()
        _ = try await server.command("SET", "{leasehold}:{j}:lease", "m9@abc:7", "PX", "60000")
        let refused = await cliRun(["release", "j", "--force", "--redis", server.url])
        #expect(refused.code == 2)
        #expect(refused.err.contains("--yes"))
        #expect(try await server.command("GET", "{leasehold}:{j}:lease").string == "m9@abc:7")

        // On a terminal, a wrong answer changes nothing; the job name confirms.
        let capture = CLICapture()
        let declined = await LeaseholdTool.run(
            ["release", "j", "--force", "--redis", server.url],
            io: capture.io(stdinIsTerminal: true, readLine: { "no" }))
        #expect(declined == 2)
        #expect(try await server.command("GET", "{leasehold}:{j}:lease").isNull == false)
        let confirmed = await LeaseholdTool.run(
            ["release", "j", "--force", "--redis", server.url],
            io: CLICapture().io(stdinIsTerminal: true, readLine: { "j" }))
        #expect(confirmed == 0)
        #expect(try await server.command("GET", "{leasehold}:{j}:lease").isNull)
        #expect(try await server.command("HGET", "{leasehold}:{j}:state", "holder").string == "")
        let history = try cliJSON(await cliRun(["history", "j", "--redis", server.url, "--json"]).out)
        let event = try #require((history["events"] as? [[String: Any]])?.last)
        #expect(event["type"] as? String == "forced_release")
        #expect(event["member"] as? String == "m9")
        #expect((event["token"] as? NSNumber)?.uint64Value == 7)
    }

    @Test func redisUnreachableIsOneClearLine() async throws {
        let port = FreePort.next()
        for command in [["status"], ["members"], ["history", "x"], ["release", "x"]] {
            let result = await cliRun(command + ["--redis", "redis://:s3cret@127.0.0.1:\(port)/0"])
            #expect(result.code == 1)
            #expect(result.out == "")
            #expect(
                result.err
                    == "leasehold: cannot reach Redis at redis://:***@127.0.0.1:\(port)/0: connection refused — is redis-server running? (set --redis or LEASEHOLD_REDIS_URL)\n"
            )
            #expect(!result.err.contains("s3cret"))
        }
        // The environment variable is used when there is no flag.
        let env = await cliRun(["status"], environment: ["LEASEHOLD_REDIS_URL": "redis://127.0.0.1:\(port)/0"])
        #expect(env.code == 1)
        #expect(env.err.contains("127.0.0.1:\(port)"))
    }

    @Test func aPasswordFileAuthenticatesTheCLI() async throws {
        let server = try await RedisServerProcess(.init(password: "s3cret"))
        _ = try await server.command("SET", "{leasehold}:{j}:lease", "m9@abc:7", "PX", "60000")
        let file = try cliTempFile("s3cret\n")
        chmod(file, 0o600)
        let catalog = try cliTempFile("version: 1\njobs:\n  - { name: j, handler: log, schedule: { every: 1h } }\n")
        let plain = "redis://127.0.0.1:\(server.port)/0"
        func cliRun(_ arguments: [String], environment: [String: String] = [:]) async -> (
            code: Int32, out: String, err: String
        ) {
            await LeaseholdCLITests.cliRun(arguments + ["--config", catalog], environment: environment)
        }
        let refused = await cliRun(["status", "--redis", plain, "--json"])
        #expect(refused.code == 1, "\(refused)")
        for run in [
            await cliRun(["status", "--redis", plain, "--redis-password-file", file, "--json"]),
            await cliRun(
                ["status", "--redis", plain, "--json"], environment: ["LEASEHOLD_REDIS_PASSWORD_FILE": file]),
        ] {
            #expect(run.code == 0, "\(run.err)")
            #expect(run.out.contains("m9"), "\(run.out)")
        }
        let missing = await cliRun(["status", "--redis", plain, "--redis-password-file", file + ".missing"])
        #expect(missing.code == 2)
        #expect(missing.err.contains(file + ".missing") && !missing.err.contains("s3cret"), "\(missing.err)")
    }

    @Test func statusNamesAKeyOfTheWrongTypeInsteadOfFailing() async throws {
        let server = try await RedisServerProcess()
        _ = try await server.command("LPUSH", "{leasehold}:{broken}:events", "x")
        _ = try await server.command("HSET", "{leasehold}:{broken2}:lease", "a", "b")
        let catalog = try cliTempFile(
            "version: 1\njobs:\n  - { name: broken, handler: log, schedule: { every: 1h } }\n"
                + "  - { name: broken2, handler: log, schedule: { every: 1h } }\n"
                + "  - { name: fine, handler: log, schedule: { every: 1h } }\n")
        let json = await cliRun(["status", "--config", catalog, "--redis", server.url, "--json"])
        #expect(json.code == 0, "\(json.err)")
        let jobs = try #require(try cliJSON(json.out)["jobs"] as? [[String: Any]])
        let problems = Dictionary(
            uniqueKeysWithValues: jobs.map { ($0["name"] as? String ?? "", $0["problem"] as? String) })
        #expect(problems["broken"]??.contains("{leasehold}:{broken}:events holds a list, expected a stream") == true)
        #expect(problems["broken2"]??.contains("{leasehold}:{broken2}:lease") == true, "\(problems)")
        #expect(problems["fine"]! == nil)
        let table = await cliRun(["status", "--config", catalog, "--redis", server.url])
        #expect(table.code == 0)
        #expect(table.out.contains("problem: broken: {leasehold}:{broken}:events holds a list, expected a stream"))
    }

    @Test func snapshotOfManyJobsTakesFewRoundTrips() async throws {
        let server = try await RedisServerProcess()
        let count = 6_000
        // Fill Redis the way members would, in one pipeline.
        let connection = RedisConnection(configuration: server.configuration())
        var commands: [[String]] = []
        for i in 0..<count {
            let job = "job-\(i)"
            commands.append(["SADD", "{leasehold}:jobs", job])
            if i % 2 == 0 { commands.append(["SET", "{leasehold}:{\(job)}:lease", "m1@aa:\(i + 1)", "PX", "60000"]) }
            commands.append([
                "HSET", "{leasehold}:{\(job)}:state", "last_run_started", "1000", "last_run_finished", "1500",
                "last_result", "ok", "last_duration_ms", "500", "released_at", "2000",
            ])
        }
        _ = try await connection.pipeline(commands)
        await connection.close()
        let before = try await server.commandCount("get")
        let start = ContinuousClock.now
        let result = await cliRun(["status", "--redis", server.url, "--json"])
        let elapsed = ContinuousClock.now - start
        #expect(result.code == 0)
        // (Jobs of a ./jobs.yaml in the working directory are listed too: count only ours.)
        let allRows = try cliJSON(result.out)["jobs"] as? [[String: Any]] ?? []
        let rows = allRows.filter { ($0["name"] as? String)?.hasPrefix("job-") == true }
        #expect(rows.count == count)
        #expect(rows.filter { !($0["leader"] is NSNull) }.count == count / 2)
        // One GET per job in total: reads are batched, not per job per field.
        #expect(try await server.commandCount("get") - before == allRows.count)
        #expect(try await server.commandCount("hmget") <= allRows.count)
        #expect(elapsed < .seconds(20), "status of \(count) jobs took \(elapsed)")
    }
}
