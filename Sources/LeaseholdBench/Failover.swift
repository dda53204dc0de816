import Foundation
import Leasehold
import LeaseholdTesting
import RedisClient

#if canImport(Glibc)
    import Glibc
#endif

struct FailoverSeries: Codable, Sendable {
    var kind: String  // "crash (kill -9), TTL" | "crash (kill -9), crash release" | "graceful (SIGTERM)"
    var ttlSeconds: Double
    var trials: Int
    /// Kill/signal → first acquisition by another member, ms.
    var latency: Distribution
    /// Remaining TTL of the lease at the kill (PTTL read just before), ms.
    var remainingTTL: Distribution
    /// latency − remaining TTL, ms (crash only): what the takeover adds to the physical bound.
    var excessOverTTL: Distribution?
    var samples: [Double]
    var loadAverage: String
}

struct FailoverReport: Codable, Sendable {
    var machine: MachineInfo
    var pingRoundTripMs: Double
    var method: String
    var series: [FailoverSeries]
}

/// Failover with real `leaseholdd` processes: two members of one job (`placement: any`,
/// log handler every 1h); the bench kills the current leader and timestamps the first
/// `acquired`/`expired_takeover` event by the other member on the job's event stream
/// (XREAD BLOCK, so the reading is push-based, not polled).
enum FailoverScenario {
    static let job = "job-0"

    static func run(options: BenchOptions) async throws {
        guard benchDaemonAvailable() else {
            print(
                "failover: \(benchDaemonBinary) not found: build it first (swift build -c release --product leaseholdd)"
            )
            return
        }
        let redis = try await startRedis()
        let rtt = await pingRoundTripMs(redis)
        var series: [FailoverSeries] = []
        // Crash without crash release is bounded by the lease TTL; with it (the default), by
        // the guardian noticing the death and releasing.
        let plan: [(String, Int, Int)] = [
            ("graceful", 2, options.gracefulTrials),
            ("crash", 2, options.crashTrials2s),
            ("crash-release", 2, options.crashReleaseTrials),
            ("crash", 10, options.crashTrials10s),
            ("crash-release", 10, options.crashReleaseTrials),
        ]
        for (kind, ttl, trials) in plan where trials > 0 {
            log("failover: \(kind) ttl=\(ttl)s trials=\(trials)")
            series.append(
                try await runSeries(
                    redis: redis, crash: kind != "graceful", crashRelease: kind != "crash", ttlSeconds: ttl,
                    trials: trials))
        }
        await redis.stop()
        printTable(
            "Failover with leaseholdd processes (ms; PING round trip \(fmt(rtt, 3)) ms)",
            header: [
                "kind", "ttl", "n", "p50", "p90", "p99", "max", "remaining TTL p50", "excess p50", "excess p99",
                "excess max", "load",
            ],
            rows: series.map { s in
                [
                    s.kind, fmt(s.ttlSeconds, 0) + "s", "\(s.trials)", fmt(s.latency.p50), fmt(s.latency.p90),
                    fmt(s.latency.p99), fmt(s.latency.max),
                    s.excessOverTTL == nil ? "-" : fmt(s.remainingTTL.p50),
                    s.excessOverTTL.map { fmt($0.p50) } ?? "-", s.excessOverTTL.map { fmt($0.p99) } ?? "-",
                    s.excessOverTTL.map { fmt($0.max) } ?? "-", s.loadAverage,
                ]
            })
        writeJSON(
            FailoverReport(
                machine: MachineInfo.current(), pingRoundTripMs: rtt,
                method:
                    "2 leaseholdd processes, 1 job, placement any; kill -9 (crash_release false: TTL takeover; true: the guardian releases) or SIGTERM of the leader; latency = signal sent → acquisition event by the other member read via XREAD BLOCK; the killed member is restarted and the next trial kills whichever member leads, after a random delay in [0, renew interval)",
                series: series), name: "failover", options: options)
    }

    static func runSeries(
        redis: RedisServerProcess, crash: Bool, crashRelease: Bool = false, ttlSeconds: Int, trials: Int
    ) async throws -> FailoverSeries {
        let directory = try TempDirectory()
        let namespace = "leasehold"
        let config = try writeCatalog(
            directory: directory.path, jobs: 1, lease: "\(ttlSeconds)s", placement: "any", crashRelease: crashRelease)
        let keys = LeaseKeys(namespace: namespace)
        // Fresh keys per series.
        _ = try await redis.command("FLUSHALL")
        let connection = RedisConnection(
            configuration: redis.configuration(commandTimeout: .seconds(Int64(ttlSeconds) * 3 + 10)))
        var daemons: [String: DaemonProcess] = [:]
        for name in ["a", "b"] {
            daemons[name] = try startDaemon(name, config: config, redisURL: redis.url)
        }
        let renewEvery = Double(ttlSeconds) / 3
        var latencies: [Double] = []
        var remaining: [Double] = []
        var excess: [Double] = []

        func leader() async -> String? {
            guard let value = try? await connection.send(["GET", keys.lease(job)]).string else { return nil }
            return LeaseValue(parsing: value)?.owner.member
        }
        func incarnation(_ name: String) async -> String? {
            try? await connection.send(["HGET", keys.member(name), "incarnation"]).string
        }

        // Wait for a leader and both members' heartbeats.
        _ = try? await eventually("a leader and both heartbeats", within: .seconds(20)) {
            let hasLeader = await leader() != nil
            let a = await incarnation("a")
            let b = await incarnation("b")
            return hasLeader && a != nil && b != nil
        }
        for trial in 0..<trials {
            try? await Task.sleep(for: .milliseconds(Int64(Double.random(in: 0..<renewEvery) * 1000)))
            guard let victim = await leader(), let process = daemons[victim] else {
                log("failover: no leader before trial \(trial)")
                break
            }
            let oldIncarnation = await incarnation(victim)
            let last =
                try await connection.send(["XREVRANGE", keys.events(job), "+", "-", "COUNT", "1"]).array?.first?.array?
                .first?.string ?? "0-0"
            let pttl = try await connection.send(["PTTL", keys.lease(job)]).integer ?? -1
            process.signal(crash ? SIGKILL : SIGTERM)
            let t0 = benchClock.now
            var cursor = last
            var t1: ContinuousClock.Instant?
            reading: while benchClock.now - t0 < .seconds(Int64(ttlSeconds) * 3 + 5) {
                let reply = try await connection.send([
                    "XREAD", "BLOCK", String(ttlSeconds * 3000 + 5000), "STREAMS", keys.events(job), cursor,
                ])
                let now = benchClock.now
                guard let entries = reply.array?.first?.array?.last?.array else { continue }
                for entry in entries {
                    guard let parts = entry.array, parts.count == 2, let id = parts[0].string,
                        let fields = parts[1].array
                    else { continue }
                    cursor = id
                    var map: [String: String] = [:]
                    for i in stride(from: 0, to: fields.count - 1, by: 2) {
                        map[fields[i].string ?? ""] = fields[i + 1].string ?? ""
                    }
                    if ["acquired", "expired_takeover", "crash_release"].contains(map["type"] ?? ""),
                        map["member"] != victim
                    {
                        t1 = now
                        break reading
                    }
                }
            }
            guard let t1 else {
                log("failover: no takeover within bound in trial \(trial)")
                break
            }
            let latency = (t1 - t0).ms
            latencies.append(latency)
            remaining.append(Double(pttl))
            if crash && !crashRelease { excess.append(latency - Double(pttl)) }
            // Restart the victim as a standby (new incarnation) and wait for its heartbeat.
            _ = try? await process.waitForExit(within: .seconds(15))
            daemons[victim] = try startDaemon(victim, config: config, redisURL: redis.url)
            _ = try? await eventually(
                "the restarted member's heartbeat", within: .seconds(20), every: .milliseconds(10)
            ) {
                let current = await incarnation(victim)
                return current != nil && current != oldIncarnation
            }
            // Give the restarted member its first acquire attempt (it learns the holder's expiry).
            try? await Task.sleep(for: .milliseconds(100))
        }
        for daemon in daemons.values { await daemon.stop(within: .seconds(12)) }
        await connection.close()
        return FailoverSeries(
            kind: crash
                ? (crashRelease ? "crash (kill -9), crash release" : "crash (kill -9), TTL") : "graceful (SIGTERM)",
            ttlSeconds: Double(ttlSeconds), trials: latencies.count,
            latency: Distribution(latencies), remainingTTL: Distribution(remaining),
            excessOverTTL: crash && !crashRelease ? Distribution(excess) : nil, samples: latencies,
            loadAverage: loadAverage())
    }
}
