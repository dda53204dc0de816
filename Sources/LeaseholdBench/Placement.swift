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
    var machine: MachineInfo
    var pure: Pure
    var live: Live?
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
        writeJSON(
            PlacementReport(machine: MachineInfo.current(), pure: pure, live: live), name: "placement", options: options
        )
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
