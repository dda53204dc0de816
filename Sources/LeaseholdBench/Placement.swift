import Foundation
import Leasehold
import LeaseholdTesting
import RedisClient

struct PlacementReport: Codable, Sendable {
    struct Pure: Codable, Sendable {
        var jobs: Int
        var members: Int
        var maxOverMean: Double
        var minOverMean: Double
        var movesOnJoin: Int
        var movesOnLeave: Int
        var idealMoves: Double
    }
    struct Live: Codable, Sendable {
        var jobs: Int
        var members: Int
        var ttlSeconds: Double
        var initialConvergeSeconds: Double
        var joinConvergeSeconds: Double?
        var joinMoves: Int
        var leaveConvergeSeconds: Double?
        var leaveMoves: Int
        var maxOverMean: Double
    }
    /// Two members with different catalogs: `a` carries common + new jobs, `b` only the
    /// common ones (a rolling deploy that adds jobs, frozen half-way).
    struct Skew: Codable, Sendable {
        var windowSeconds: Double
        var ttlSeconds: Double
        var newJobs: Int
        /// New jobs whose rendezvous choice over both members is `b`, which does not carry them.
        var newJobsPreferringB: Int
        /// Acquisitions of each new job over the window (1 = led once, never moved).
        var maxAcquisitionsPerNewJob: Int
        var totalAcquisitionsOfNewJobs: Int
        /// Handoff suggestions for new jobs (to a member that does not carry them).
        var newJobHandoffs: Int
    }
    var machine: MachineInfo
    var pure: Pure
    var live: Live?
    var skew: Skew?
}

enum PlacementScenario {
    static func balance(_ assignment: [String: String], members: [String]) -> (max: Double, min: Double) {
        var counts = Dictionary(uniqueKeysWithValues: members.map { ($0, 0) })
        for member in assignment.values { counts[member, default: 0] += 1 }
        let mean = Double(assignment.count) / Double(members.count)
        return (Double(counts.values.max() ?? 0) / mean, Double(counts.values.min() ?? 0) / mean)
    }

    static func moves(_ a: [String: String], _ b: [String: String]) -> Int {
        a.keys.filter { a[$0] != b[$0] }.count
    }

    static func run(options: BenchOptions) async throws {
        let jobCount = 1000
        let memberCount = 10
        let jobNames = (0..<jobCount).map { "job-\($0)" }
        let names = (0..<memberCount).map { "m\($0)" }
        let base = Rendezvous.assignment(jobs: jobNames, members: names.map { RendezvousMember(name: $0) })
        let joined = Rendezvous.assignment(
            jobs: jobNames, members: (names + ["m\(memberCount)"]).map { RendezvousMember(name: $0) })
        // Leave: average over every member leaving in turn.
        var leaveMoves = 0
        for leaving in names {
            let left = Rendezvous.assignment(
                jobs: jobNames, members: names.filter { $0 != leaving }.map { RendezvousMember(name: $0) })
            leaveMoves += moves(base, left)
        }
        let b = balance(base, members: names)
        let pure = PlacementReport.Pure(
            jobs: jobCount, members: memberCount, maxOverMean: b.max, minOverMean: b.min,
            movesOnJoin: moves(base, joined), movesOnLeave: leaveMoves / memberCount,
            idealMoves: Double(jobCount) / Double(memberCount + 1))
        printTable(
            "Placement (pure rendezvous, 1,000 jobs, 10 members)",
            header: [
                "max/mean", "min/mean", "moves on join (11th)", "moves on leave (avg of 10)", "ideal join J/(N+1)",
                "ideal leave J/N",
            ],
            rows: [
                [
                    fmt(pure.maxOverMean, 3), fmt(pure.minOverMean, 3), "\(pure.movesOnJoin)", "\(pure.movesOnLeave)",
                    fmt(pure.idealMoves), fmt(Double(jobCount) / Double(memberCount)),
                ]
            ])

        let live = try await liveRun(jobs: options.quick ? 100 : jobCount, members: options.quick ? 3 : memberCount)
        if let live {
            printTable(
                "Placement (live, in-process members, TTL \(fmt(live.ttlSeconds, 0)) s, stability window = TTL)",
                header: [
                    "jobs", "members", "initial converge s", "join: converge s", "join: moves", "leave: converge s",
                    "leave: moves", "max/mean",
                ],
                rows: [
                    [
                        "\(live.jobs)", "\(live.members)", fmt(live.initialConvergeSeconds),
                        live.joinConvergeSeconds.map { fmt($0) } ?? "timeout",
                        "\(live.joinMoves)", live.leaveConvergeSeconds.map { fmt($0) } ?? "timeout",
                        "\(live.leaveMoves)", fmt(live.maxOverMean, 3),
                    ]
                ])
        }
        let skew = try await skewRun(window: options.quick ? .seconds(15) : .seconds(60))
        printTable(
            "Placement with different catalogs (a: 4 common + 6 new jobs, b: the 4 common ones; TTL 3 s)",
            header: ["window s", "new jobs", "b's choice", "max acquisitions per new job", "handoffs of new jobs"],
            rows: [
                [
                    fmt(skew.windowSeconds, 0), "\(skew.newJobs)", "\(skew.newJobsPreferringB)",
                    "\(skew.maxAcquisitionsPerNewJob)", "\(skew.newJobHandoffs)",
                ]
            ])
        writeJSON(
            PlacementReport(machine: MachineInfo.current(), pure: pure, live: live, skew: skew), name: "placement",
            options: options)
    }

    /// The ping-pong of issue 13 as a measurement: before catalog-aware placement, every new
    /// job whose choice was `b` moved to b and back every ~4.5 s.
    static func skewRun(window: Duration) async throws -> PlacementReport.Skew {
        log("placement: skew run, \(window)")
        let redis = try await startRedis()
        let ttl = Duration.seconds(3)
        func job(_ name: String) -> LeaseJob {
            JobSpec(name: name, handler: "log", schedule: .continuous, lease: ttl, placement: .spread).leaseJob
        }
        let common = (1...4).map { job("common\($0)") }
        let new = (1...6).map { job("newjob\($0)") }
        let config = daemonRedisConfiguration(redis.configuration(), jobs: common + new)
        func options(_ name: String, seed: UInt64) -> TestMember.Options {
            TestMember.Options(keys: LeaseKeys(namespace: "skew"), seed: seed, logger: quietLogger("bench.\(name)"))
        }
        let (acquisitions, handoffs) = try await withMember(
            "a", redis: config, jobs: common + new, options: options("a", seed: 1)
        ) { a in
            try await withMember("b", redis: config, jobs: common, options: options("b", seed: 2)) { b in
                try await Task.sleep(for: window)
                var counts: [String: Int] = [:]
                for member in [a, b] {
                    for acquisition in member.log.acquisitions { counts[acquisition.grant.job, default: 0] += 1 }
                }
                let handoffs = a.log.events.filter {
                    if case .handoffSuggested(let job, _) = $0 { job.hasPrefix("newjob") } else { false }
                }.count
                return (counts, handoffs)
            }
        }
        await redis.stop()
        let both = ["a", "b"].map { RendezvousMember(name: $0) }
        let perNew = new.map { acquisitions[$0.name] ?? 0 }
        return PlacementReport.Skew(
            windowSeconds: window.secondsValue, ttlSeconds: ttl.secondsValue, newJobs: new.count,
            newJobsPreferringB: new.filter { Rendezvous.preferred(job: $0.name, among: both) == "b" }.count,
            maxAcquisitionsPerNewJob: perNew.max() ?? 0, totalAcquisitionsOfNewJobs: perNew.reduce(0, +),
            newJobHandoffs: handoffs)
    }

    static func liveRun(jobs jobCount: Int, members memberCount: Int) async throws -> PlacementReport.Live? {
        log("placement: live run \(jobCount) jobs, \(memberCount) members")
        let redis = try await startRedis()
        let ttl = Duration.seconds(2)
        let jobs = benchJobs(count: jobCount, ttl: ttl)
        let config = daemonRedisConfiguration(redis.configuration(), jobs: jobs)
        func options(_ name: String, seed: UInt64) -> TestMember.Options {
            TestMember.Options(
                keys: LeaseKeys(namespace: "leasehold"), seed: seed, logger: quietLogger("bench.\(name)"))
        }
        func settled(_ list: [TestMember]) -> Bool {
            misplaced(jobs: jobs, holders: holders(list), members: list.map(\.name)) == 0
        }
        func converges(_ list: [TestMember]) async -> Bool {
            (try? await eventually("placement to settle", within: .seconds(30), every: .milliseconds(50)) {
                settled(list)
            }) != nil
        }
        let names = (0..<memberCount).map { "m\($0)" }
        let result = try await withMembers(
            names, redis: config, jobs: jobs, options: { options($0, seed: (UInt64($0.dropFirst()) ?? 0) + 1) }
        ) {
            initialMembers -> (
                initial: Double, joinSeconds: Double?, joinMoves: Int, leaveSeconds: Double?, leaveMoves: Int,
                balance: Double
            )? in
            var start = benchClock.now
            guard await converges(initialMembers) else {
                log("placement: initial placement did not converge")
                return nil
            }
            let initial = (benchClock.now - start).secondsValue
            // Join.
            let before = holders(initialMembers)
            start = benchClock.now
            return try await withMember(
                "m\(memberCount)", redis: config, jobs: jobs, options: options("m\(memberCount)", seed: 99)
            ) { newcomer in
                var members = initialMembers + [newcomer]
                let joinOK = await converges(members)
                let joinSeconds = (benchClock.now - start).secondsValue
                let afterJoin = holders(members)
                let b = balance(afterJoin, members: members.map(\.name))
                // Leave (graceful): the first member stops and releases.
                let leaving = members.removeFirst()
                start = benchClock.now
                await leaving.stop()
                let leaveOK = await converges(members)
                let leaveSeconds = (benchClock.now - start).secondsValue
                let afterLeave = holders(members)
                return (
                    initial, joinOK ? joinSeconds : nil, moves(before, afterJoin), leaveOK ? leaveSeconds : nil,
                    moves(afterJoin, afterLeave), b.max
                )
            }
        }
        await redis.stop()
        guard let result else { return nil }
        return PlacementReport.Live(
            jobs: jobCount, members: memberCount, ttlSeconds: ttl.secondsValue, initialConvergeSeconds: result.initial,
            joinConvergeSeconds: result.joinSeconds, joinMoves: result.joinMoves,
            leaveConvergeSeconds: result.leaveSeconds, leaveMoves: result.leaveMoves, maxOverMean: result.balance)
    }
}
