import Foundation
import Leasehold
import LeaseholdTesting
import RedisClient
import Synchronization

/// One cell of the Redis-cost matrix.
struct CostCell: Codable, Sendable {
    var mode: String  // "leasehold" | "per-lease"
    var members: Int
    var jobs: Int
    var ttlSeconds: Double
    var windowSeconds: Double
    var converged: Bool
    var convergeSeconds: Double
    /// Top-level client commands per second (leasehold: EVALSHA+EVAL; per-lease: EVALSHA+SET).
    var clientCommandsPerSecond: Double
    /// Script calls (EVALSHA + EVAL) per second.
    var scriptCallsPerSecond: Double
    /// Network round trips per second (equals client commands unless pipelined).
    var roundTripsPerSecond: Double?
    /// Every command Redis executed, including those run inside scripts.
    var totalCommandsPerSecond: Double
    /// Client commands per member per renew tick.
    var clientCommandsPerMemberTick: Double
    /// Redis CPU (user+sys) as a percentage of one core.
    var redisCPUPercent: Double
    /// Bench-process CPU divided by the member count, as a percentage of one core.
    var memberCPUPercent: Double
    var commandBreakdown: [String: Int]
    var loadAverage: String
    /// Leasehold mode: jobs not on their preferred member when the window started.
    var misplacedAtStart: Int?
    /// Leasehold mode: acquisitions (leadership changes) during the window; 0 in steady state.
    var acquisitionsInWindow: Int?
}

struct CostReport: Codable, Sendable {
    var machine: MachineInfo
    var cells: [CostCell]
    var enginePoll: [EnginePollCost]
    var notes: [String]
}

enum CostScenario {
    struct Config {
        var members: Int
        var jobs: Int
        var ttl: Duration
        var window: Duration
    }

    static func matrix(quick: Bool) -> [Config] {
        if quick {
            return [Config(members: 3, jobs: 1000, ttl: .seconds(2), window: .seconds(2))]
        }
        var configs: [Config] = []
        for jobs in [10, 1000, 10_000] {
            for members in [3, 10] {
                configs.append(
                    Config(members: members, jobs: jobs, ttl: .seconds(2), window: .seconds(jobs == 10 ? 5 : 7)))
            }
        }
        // 10 s leases renew every 3.3 s: a 10 s window holds 3 ticks. One cell only (time
        // budget of `make bench`).
        configs.append(Config(members: 10, jobs: 1000, ttl: .seconds(10), window: .seconds(10)))
        return configs
    }

    static func run(options: BenchOptions) async throws {
        let machine = MachineInfo.current()
        let pollCosts = [10, 1000, 10_000].map { EnginePollBench.measure(jobs: $0, polls: options.quick ? 20 : 200) }
        printTable(
            "LeaseEngine.poll with nothing due (10 members, this member leads its rendezvous share)",
            header: ["jobs", "led", "µs per poll"],
            rows: pollCosts.map { ["\($0.jobs)", "\($0.led)", fmt($0.microsecondsPerPoll)] })
        var cells: [CostCell] = []
        for config in matrix(quick: options.quick) where options.onlyJobs == nil || options.onlyJobs == config.jobs {
            for mode in ["leasehold", "per-lease"] {
                log("cost: \(mode) M=\(config.members) J=\(config.jobs) ttl=\(config.ttl)")
                let cell = try await measure(mode: mode, config: config)
                cells.append(cell)
                printRow(cell)
            }
        }
        var rows: [[String]] = []
        for cell in cells {
            rows.append(row(cell))
        }
        printTable(
            "Redis cost (window after convergence; member CPU = bench process CPU / M)",
            header: header, rows: rows)
        var ratioRows: [[String]] = []
        var notes: [String] = []
        for pair in stride(from: 0, to: cells.count - 1, by: 2) {
            let a = cells[pair]
            let b = cells[pair + 1]
            ratioRows.append([
                "M=\(a.members) J=\(a.jobs) ttl=\(fmt(a.ttlSeconds, 0))s",
                fmt(b.clientCommandsPerSecond / max(a.clientCommandsPerSecond, 0.001), 1) + "x",
                fmt(b.totalCommandsPerSecond / max(a.totalCommandsPerSecond, 0.001), 1) + "x",
                fmt(b.redisCPUPercent / max(a.redisCPUPercent, 0.001), 1) + "x",
                fmt(b.memberCPUPercent / max(a.memberCPUPercent, 0.001), 1) + "x",
            ])
        }
        printTable(
            "per-lease / leasehold ratios (same run)",
            header: ["cell", "client cmds", "total cmds", "redis cpu", "member cpu"], rows: ratioRows)
        notes.append("per-lease mode pipelines in batches of \(PerLeaseMember.pipelineBatch); no fencing counter")
        writeJSON(
            CostReport(machine: machine, cells: cells, enginePoll: pollCosts, notes: notes), name: "cost",
            options: options)
    }

    static let header = [
        "mode", "M", "J", "ttl", "conv s", "acq in win", "client/s", "evalsha/s", "rtt/s", "total cmd/s",
        "cmd/member/tick", "redis cpu%", "member cpu%", "load",
    ]

    static func row(_ cell: CostCell) -> [String] {
        [
            cell.mode, "\(cell.members)", "\(cell.jobs)", fmt(cell.ttlSeconds, 0) + "s",
            cell.converged ? fmt(cell.convergeSeconds) : "no(\(cell.misplacedAtStart ?? -1) off)",
            cell.acquisitionsInWindow.map { "\($0)" } ?? "-",
            fmt(cell.clientCommandsPerSecond), fmt(cell.scriptCallsPerSecond),
            cell.roundTripsPerSecond.map { fmt($0) } ?? fmt(cell.clientCommandsPerSecond),
            fmt(cell.totalCommandsPerSecond), fmt(cell.clientCommandsPerMemberTick, 2),
            fmt(cell.redisCPUPercent), fmt(cell.memberCPUPercent, 2), cell.loadAverage,
        ]
    }

    static func printRow(_ cell: CostCell) {
        log(zip(header, row(cell)).map { "\($0)=\($1)" }.joined(separator: " "))
    }

    static func measure(mode: String, config: Config) async throws -> CostCell {
        let redis = try await startRedis()
        defer { _ = redis }
        let timing = LeaseTiming(ttl: config.ttl)
        let redisConfig = daemonRedisConfiguration(redis.configuration(), jobs: benchJobs(count: 1, ttl: config.ttl))
        let probe = RedisConnection(configuration: redis.configuration(commandTimeout: .seconds(10)))
        let started = benchClock.now

        /// What one measurement window saw; `acquisitions` etc. are nil in the other mode.
        struct Window {
            var converged: Bool
            var convergeSeconds: Double
            var before: RedisCounters, after: RedisCounters
            var cpuBefore: Double, cpuAfter: Double
            var roundTrips: Int?
            var misplacedAtStart: Int?
            var acquisitionsInWindow: Int?
            var wall: Double
            var load: String
        }
        func window(
            converged: Bool, roundTrips: (() -> Int)?, misplacedNow: (() -> Int)?, acquisitions: (() -> Int)?
        ) async throws -> Window {
            let convergeSeconds = (benchClock.now - started).secondsValue
            let before = try await RedisCounters.read(probe)
            let cpuBefore = processCPUSeconds()
            let tripsBefore = roundTrips?() ?? 0
            let misplacedAtStart = misplacedNow?()
            let acquisitionsBefore = acquisitions?() ?? 0
            let windowStart = benchClock.now
            try? await Task.sleep(for: config.window)
            let after = try await RedisCounters.read(probe)
            let cpuAfter = processCPUSeconds()
            return Window(
                converged: converged, convergeSeconds: convergeSeconds, before: before, after: after,
                cpuBefore: cpuBefore, cpuAfter: cpuAfter, roundTrips: roundTrips.map { $0() - tripsBefore },
                misplacedAtStart: misplacedAtStart,
                acquisitionsInWindow: acquisitions.map { $0() - acquisitionsBefore },
                wall: (benchClock.now - windowStart).secondsValue, load: loadAverage())
        }

        let measured: Window
        if mode == "leasehold" {
            // Stability window capped at 2 s so 10 s leases converge within the time budget;
            // it only delays handoffs, the steady-state cost is the same.
            let jobs = benchJobs(count: config.jobs, ttl: config.ttl, stability: min(config.ttl, .seconds(2)))
            let names = (0..<config.members).map { "m\($0)" }
            let acquired = Atomic<Int>(0)
            measured = try await withMembers(
                names, redis: redisConfig, jobs: jobs,
                options: { name in
                    TestMember.Options(
                        keys: LeaseKeys(namespace: "leasehold"), seed: (UInt64(name.dropFirst()) ?? 0) + 1,
                        logger: quietLogger("bench.\(name)"),
                        onEvent: { _, event in if case .acquired = event { acquired.add(1, ordering: .relaxed) } })
                }
            ) { members in
                var lastReport = benchClock.now
                let converged =
                    (try? await eventually(
                        "convergence", within: config.ttl * 4 + .seconds(8), every: .milliseconds(250)
                    ) {
                        let off = misplaced(jobs: jobs, holders: holders(members), members: names)
                        if benchClock.now - lastReport > .seconds(5) {
                            lastReport = benchClock.now
                            log(
                                "  converging: \(off) jobs off their preferred member, \(acquired.load(ordering: .relaxed)) acquisitions so far"
                            )
                        }
                        return off == 0
                    }) != nil
                return try await window(
                    converged: converged, roundTrips: nil,
                    misplacedNow: { misplaced(jobs: jobs, holders: holders(members), members: names) },
                    acquisitions: { acquired.load(ordering: .relaxed) })
            }
        } else {
            let jobNames = (0..<config.jobs).map { "job-\($0)" }
            let members = (0..<config.members).map {
                PerLeaseMember(
                    name: "m\($0)", jobs: jobNames, ttl: config.ttl, renewEvery: timing.renewEvery, redis: redisConfig,
                    namespace: "perlease")
            }
            for (i, member) in members.enumerated() {
                // Spread the members' attempt phases over one TTL, as independent processes would be.
                member.start(attemptPhase: config.ttl * (Double(i) / Double(config.members)))
            }
            let converged =
                (try? await eventually("convergence", within: config.ttl * 3 + .seconds(10), every: .milliseconds(250))
                {
                    members.reduce(0) { $0 + $1.heldCount.load(ordering: .relaxed) } == config.jobs
                }) != nil
            // Let a full TTL pass so every member's standby cycle is in steady state.
            try? await Task.sleep(for: config.ttl)
            measured = try await window(
                converged: converged, roundTrips: { members.reduce(0) { $0 + $1.roundTrips.load(ordering: .relaxed) } },
                misplacedNow: nil, acquisitions: nil)
            await withTaskGroup(of: Void.self) { group in
                for member in members { group.addTask { await member.stop() } }
            }
        }
        await probe.close()
        await redis.stop()
        let (before, after, wall) = (measured.before, measured.after, measured.wall)

        let delta = after.delta(since: before)
        let scripts = Double((delta["evalsha"] ?? 0) + (delta["eval"] ?? 0))
        let client = mode == "leasehold" ? scripts : scripts + Double(delta["set"] ?? 0)
        let total = Double(delta.values.reduce(0, +))
        let ticksPerSecond = 1 / timing.renewEvery.secondsValue
        return CostCell(
            mode: mode, members: config.members, jobs: config.jobs, ttlSeconds: config.ttl.secondsValue,
            windowSeconds: wall, converged: measured.converged, convergeSeconds: measured.convergeSeconds,
            clientCommandsPerSecond: client / wall, scriptCallsPerSecond: scripts / wall,
            roundTripsPerSecond: measured.roundTrips.map { Double($0) / wall },
            totalCommandsPerSecond: total / wall,
            clientCommandsPerMemberTick: client / wall / Double(config.members) / ticksPerSecond,
            redisCPUPercent: (after.cpuSeconds - before.cpuSeconds) / wall * 100,
            memberCPUPercent: (measured.cpuAfter - measured.cpuBefore) / wall / Double(config.members) * 100,
            commandBreakdown: delta, loadAverage: measured.load, misplacedAtStart: measured.misplacedAtStart,
            acquisitionsInWindow: measured.acquisitionsInWindow)
    }
}
