import Foundation
import Leasehold
import LeaseholdTesting
import RedisClient
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A rolling deploy of three real `leaseholdd` members by SIGHUP, one member at a time, with
/// members running different catalogs in between: a job added on one member first, a job
/// removed, a schedule shortened, and a broken catalog (Docs/OPERATIONS.md "Deploying
/// changes"). Assertions read each job's events and runs streams in Redis and the members'
/// own logs; bounds are generous (loaded CI cores), figures are printed.
@Suite(.timeLimit(.minutes(3)))
struct RollingDeployTests {
    static let ttl = Duration.seconds(3)
    static let shell =
        #"handler: shell, schedule: continuous, config: { command: [sh, -c, "while true; do sleep 0.2; done"], kill_grace: 1s }"#

    static let v1 = """
        version: 1
        redis: { namespace: NAMESPACE }
        defaults: { lease: 3s, placement: spread }
        jobs:
          - { name: steady1, \(shell) }
          - { name: steady2, \(shell) }
          - { name: gone, \(shell) }
          - { name: sched, handler: log, schedule: { every: 1h } }
        """
    /// The added job: named so that rendezvous over all three members picks m3, not m1, the
    /// member that gets it first (with placement blind to catalogs, m1 would hand it to
    /// members that do not carry it, over and over).
    static let added = (0..<1000).map { "added\($0)" }.first { name in
        Rendezvous.preferred(job: name, among: ["m1", "m2", "m3"].map { RendezvousMember(name: $0) }) == "m3"
            && Rendezvous.preferred(job: name, among: ["m1", "m2"].map { RendezvousMember(name: $0) }) == "m2"
    }!
    static let v2 = """
        version: 1
        redis: { namespace: NAMESPACE }
        defaults: { lease: 3s, placement: spread }
        jobs:
          - { name: steady1, \(shell) }
          - { name: steady2, \(shell) }
          - { name: \(added), \(shell) }
          - { name: sched, handler: log, schedule: { every: 2s } }
        """

    /// Acquisitions (acquired or expired takeovers) in an events stream.
    static func acquisitions(_ events: [[String: String]]) -> [[String: String]] {
        events.filter { $0["type"] == "acquired" || $0["type"] == "expired_takeover" }
    }

    /// How many runs of `job` a member's log says ended.
    static func runsEnded(_ member: DaemonProcess, _ job: String) -> Int {
        member.lines.filter { $0.message == "run ended" && $0.job == job }.count
    }

    @Test func rollingDeployBySIGHUP() async throws {
        let fleet = try await DaemonFleet(catalog: Self.v1)
        let names = ["m1", "m2", "m3"]
        var paths: [String: String] = [:]
        for name in names { paths[name] = try fleet.writeCatalog("cat-\(name).yaml", Self.v1) }
        let port = FreePort.next()
        var members: [String: DaemonProcess] = [:]
        for name in names {
            members[name] = try fleet.start(
                name, catalog: paths[name], extra: name == "m2" ? ["--http", "127.0.0.1:\(port)"] : [])
        }
        let diagnostics = { names.map { members[$0]!.logTail(25) }.joined(separator: "\n") }
        func holder(_ job: String) async throws -> LeaseValue? { try await fleet.holder(job) }
        func holders(_ jobs: [String]) async throws -> [String: LeaseValue]? {
            var result: [String: LeaseValue] = [:]
            for job in jobs {
                guard let value = try await holder(job) else { return nil }
                result[job] = value
            }
            return result
        }

        // Settled: every job led, the same leaders twice in a row, after placement had time.
        let v1Jobs = ["steady1", "steady2", "gone", "sched"]
        try await eventually("three live members", within: .seconds(20), diagnostics: diagnostics) {
            try await fleet.redis.command("ZCARD", fleet.keys.members).integer == 3 ? true : nil
        }
        let settleAfter = ContinuousClock.now + Self.ttl * 2
        var previous: [String: LeaseValue]?
        let settled = try await eventually(
            "stable leaders", within: .seconds(40), every: .seconds(1), diagnostics: diagnostics
        ) { () async throws -> [String: LeaseValue]? in
            guard ContinuousClock.now >= settleAfter, let current = try await holders(v1Jobs) else { return nil }
            defer { previous = current }
            return current == previous ? current : nil
        }
        try await eventually("sched ran once", within: .seconds(20), diagnostics: diagnostics) {
            try await fleet.runs("sched").isEmpty ? nil : true
        }
        let steadyRuns = ["steady1", "steady2"].map { job in
            (job, Self.runsEnded(members[settled[job]!.owner.member]!, job))
        }

        // Step 1: m1 gets v2. `added` exists on m1 only: it is led by m1, once, with no
        // handoff for as long as the catalogs differ (three leases and more).
        try fleet.writeCatalog("cat-m1.yaml", Self.v2)
        members["m1"]!.signal(SIGHUP)
        try await members["m1"]!.waitForLine("reloaded") { $0.message == "catalog reloaded" }
        let added = Self.added
        try await eventually("m1 leads the added job", within: .seconds(15), diagnostics: diagnostics) {
            try await holder(added)?.owner.member == "m1" ? true : nil
        }
        try await Task.sleep(for: Self.ttl * 3)
        let addedWhileSkewed = try await fleet.events(added)
        #expect(Self.acquisitions(addedWhileSkewed).count == 1, "\(addedWhileSkewed)")
        #expect(addedWhileSkewed.allSatisfy { $0["type"] != "handed_off" && $0["type"] != "released" })
        #expect(try await holder(added)?.owner.member == "m1")

        // Steps 2 and 3. Before the last carrier of `gone` drops it, it must lead it; its
        // handler stops and the lease is released within about one renew tick of the reload.
        var goneStops: [Duration] = []
        for name in ["m2", "m3"] {
            if name == "m3" {
                try await eventually("m3 leads gone", within: .seconds(20), diagnostics: diagnostics) {
                    try await holder("gone")?.owner.member == "m3" ? true : nil
                }
            }
            let goneHolder = try await holder("gone")?.owner.member
            try fleet.writeCatalog("cat-\(name).yaml", Self.v2)
            let member = members[name]!
            member.signal(SIGHUP)
            let reloadLine = try await member.waitForLine("SIGHUP") { $0.message == "SIGHUP: reloading the catalog" }
            try await member.waitForLine("reloaded") { $0.message == "catalog reloaded" }
            if goneHolder == name {
                let released = try await member.waitForLine("gone released", within: .seconds(10)) {
                    $0.job == "gone" && $0.message == "released leadership" && $0.at >= reloadLine.at
                }
                goneStops.append(released.at - reloadLine.at)
            }
        }
        print("rolling deploy: removed job released \(goneStops.map { milliseconds($0) }) ms after the reload")
        #expect(!goneStops.isEmpty)
        // One renew tick is 1 s; the shell job's TERM takes a moment more; loaded CI more.
        for stop in goneStops { #expect(stop < Self.ttl, "removed job stopped after \(stop)") }
        try await eventually("gone stays unled", within: .seconds(10), diagnostics: diagnostics) {
            try await holder("gone") == nil ? true : nil
        }

        // The shortened schedule: the leader runs at the new cadence within one new period
        // (2 s, plus slack), and no slot runs twice.
        let runsBefore = try await fleet.runs("sched").count
        let cadenceFrom = ContinuousClock.now
        try await eventually("sched at the new cadence", within: .seconds(15), diagnostics: diagnostics) {
            try await fleet.runs("sched").count >= runsBefore + 2 ? true : nil
        }
        print("rolling deploy: two runs at the new cadence after \(milliseconds(ContinuousClock.now - cadenceFrom)) ms")
        let runs = try await fleet.runs("sched")
        let slots = runs.compactMap(\.slot)
        #expect(slots.count == runs.count && zip(slots, slots.dropFirst()).allSatisfy { $0 < $1 }, "\(runs)")

        // Unchanged jobs kept lease, token and handler through the whole rollout.
        for (job, ended) in steadyRuns {
            #expect(try await holder(job) == settled[job], "\(job) moved or got a new token")
            #expect(Self.runsEnded(members[settled[job]!.owner.member]!, job) == ended, "\(job) restarted")
        }
        // Once m2 carries it, the added job moves to m2 (its choice among m1 and m2), and
        // once m3 does, to m3: each move one sticky handoff, never to a member without it.
        try await eventually("the added job on m3", within: .seconds(20), diagnostics: diagnostics) {
            try await holder(added)?.owner.member == "m3" ? true : nil
        }
        let addedEvents = try await fleet.events(added)
        let handoffs = addedEvents.filter { $0["type"] == "handed_off" }
        #expect(handoffs.count <= 2 && Self.acquisitions(addedEvents).count == handoffs.count + 1, "\(addedEvents)")
        #expect(addedEvents.allSatisfy { $0["type"] != "lost" && $0["type"] != "expired_takeover" })

        // A broken catalog by SIGHUP: every problem logged with its place, the old catalog
        // runs on, every job still led with the same token, and the failure is counted.
        let jobsNow = ["steady1", "steady2", added, "sched"]
        let before = try #require(try await holders(jobsNow))
        try fleet.writeCatalog("cat-m2.yaml", "version: 1\njobs:\n  - { name: broken, handler: nope }\n  - [\n")
        members["m2"]!.signal(SIGHUP)
        try await members["m2"]!.waitForLine("reload failed") {
            $0.message?.hasPrefix("catalog reload failed") == true
        }
        let located = members["m2"]!.lines.filter {
            $0.message?.hasPrefix("catalog reload: ") == true && $0.message!.contains("cat-m2.yaml:")
        }
        #expect(!located.isEmpty, "\(diagnostics())")
        try await Task.sleep(for: Self.ttl * 2)
        #expect(try await holders(jobsNow) == before)
        for name in names { #expect(members[name]!.isRunning, "\(name) died:\n\(members[name]!.logTail())") }
        let metrics = try await eventually("reload counters", within: .seconds(10)) { () async -> String? in
            guard let result = await httpGetOffPool(port: port, path: "/metrics"), result.status == 200 else {
                return nil
            }
            return result.body
        }
        #expect(metrics.contains(#"leasehold_catalog_reloads_total{result="failure"} 1"#), "\(metrics)")
        #expect(metrics.contains(#"leasehold_catalog_reloads_total{result="success"} 1"#))
        #expect(metrics.contains("leasehold_catalog_info{digest="))
        for name in names { await members[name]!.stop() }
    }
}
