import Foundation
import LeaseholdTesting
import RedisClient

#if canImport(Glibc)
    import Glibc
#endif

struct FootprintReport: Codable, Sendable {
    struct Member: Codable, Sendable {
        var name: String
        var leases: Int
        var rssMB: Double
        var cpuPercent: Double
    }
    var machine: MachineInfo
    var jobs: Int
    var members: Int
    var lease: String
    var warmupSeconds: Double
    var windowSeconds: Double
    var perMember: [Member]
    var redisCPUPercent: Double
    var loadAverage: String
}

/// `leaseholdd` (release build) with 1,000 log jobs (every: 1h): RSS and CPU per process in
/// steady state, for 1 member (leads everything) and 3 members (spread placement).
enum FootprintScenario {
    static func run(options: BenchOptions) async throws {
        guard benchDaemonAvailable() else {
            print(
                "footprint: \(benchDaemonBinary) not found: build it first (swift build -c release --product leaseholdd)"
            )
            return
        }
        let jobs = options.quick ? 100 : 1000
        // 1 member (leads everything) and 3 members (spread) side by side, each with its own
        // redis-server: leaseholdd uses ~1 % of a core, so they hardly disturb each other.
        var reports: [FootprintReport] = []
        if options.quick {
            reports.append(try await measure(jobs: jobs, members: 1, options: options))
        } else {
            async let one = measure(jobs: jobs, members: 1, options: options)
            async let three = measure(jobs: jobs, members: 3, options: options)
            reports = [try await one, try await three]
        }
        var rows: [[String]] = []
        for report in reports {
            for member in report.perMember {
                rows.append([
                    "\(report.members)", member.name, "\(member.leases)", fmt(member.rssMB), fmt(member.cpuPercent, 2),
                    fmt(report.redisCPUPercent, 2), report.loadAverage,
                ])
            }
        }
        printTable(
            "leaseholdd footprint (\(jobs) log jobs every 1h, lease \(reports.first?.lease ?? "?"), steady-state window)",
            header: ["members", "member", "leases held", "RSS MB", "CPU % of a core", "redis CPU %", "load"], rows: rows
        )
        writeJSON(reports, name: "footprint", options: options)
    }

    static func measure(jobs: Int, members: Int, options: BenchOptions) async throws -> FootprintReport {
        log("footprint: \(jobs) jobs, \(members) member(s)")
        let redis = try await startRedis()
        let directory = try TempDirectory()
        let lease = "10s"
        let config = try writeCatalog(directory: directory.path, jobs: jobs, lease: lease, placement: "spread")
        var daemons: [DaemonProcess] = []
        for i in 0..<members {
            daemons.append(try startDaemon("f\(i)", config: config, redisURL: redis.url))
        }
        let probe = RedisConnection(configuration: redis.configuration(commandTimeout: .seconds(10)))
        // Warm-up: acquisition, first handler runs, placement handoffs (stability = lease 10 s).
        let warmup: Duration = options.quick ? .seconds(2) : .seconds(20)
        let window: Duration = options.quick ? .seconds(2) : .seconds(20)
        try? await Task.sleep(for: warmup)
        let cpuBefore = daemons.map { procCPUSeconds(pid: $0.pid) ?? 0 }
        let redisBefore = try await RedisCounters.read(probe)
        let start = benchClock.now
        try? await Task.sleep(for: window)
        let wall = (benchClock.now - start).secondsValue
        let cpuAfter = daemons.map { procCPUSeconds(pid: $0.pid) ?? 0 }
        let redisAfter = try await RedisCounters.read(probe)
        var perMember: [FootprintReport.Member] = []
        for (i, daemon) in daemons.enumerated() {
            var held = 0
            for j in 0..<jobs {
                if let value = try? await probe.send(["GET", "{leasehold}:{job-\(j)}:lease"]).string,
                    value.hasPrefix("\(daemon.name)@")
                {
                    held += 1
                }
            }
            perMember.append(
                .init(
                    name: daemon.name, leases: held, rssMB: procRSSMegabytes(pid: daemon.pid) ?? .nan,
                    cpuPercent: (cpuAfter[i] - cpuBefore[i]) / wall * 100))
        }
        let load = loadAverage()
        await withDiscardingTaskGroup { group in
            for daemon in daemons { group.addTask { await daemon.stop(within: .seconds(15)) } }
        }
        await probe.close()
        await redis.stop()
        return FootprintReport(
            machine: MachineInfo.current(), jobs: jobs, members: members, lease: lease,
            warmupSeconds: warmup.secondsValue,
            windowSeconds: wall, perMember: perMember,
            redisCPUPercent: (redisAfter.cpuSeconds - redisBefore.cpuSeconds) / wall * 100,
            loadAverage: load)
    }
}
