import Foundation
import Leasehold
import LeaseholdTesting
import RedisClient

/// What `redis.min_replicas` costs: the round trip of one member's renew call (the real
/// script, 10 leases) alone and pipelined with `WAIT 1` on a primary with one replica, and
/// the Redis CPU per call on the primary.
struct ReplicaWaitCell: Codable, Sendable {
    var minReplicas: Int
    var calls: Int
    var roundTripMs: Distribution
    var primaryCPUMicrosPerCall: Double
    var acknowledgedShortfalls: Int
}

enum ReplicaWaitScenario {
    static func run(options: BenchOptions) async throws {
        let calls = options.quick ? 500 : 5000
        let topology = try await SentinelTopology(replicas: 1, sentinels: 0)
        defer { Task { await topology.tearDown() } }
        let primary = topology.servers[0]
        let connection = RedisConnection(configuration: primary.configuration())
        let keys = LeaseKeys(namespace: "bench-wait")
        let owner = OwnerID(member: "bench")
        let codec = LeaseScriptCodec(keys: keys, owner: owner)
        let jobs = (0..<10).map { "job\($0)" }
        let acquire = codec.acquireCall(jobs.map { AcquireRequest(job: $0, ttlMs: 10_000) })
        let reply = try codec.decodeAcquire(
            try await connection.evaluate(acquire.script, keys: acquire.keys, arguments: acquire.arguments),
            count: jobs.count)
        var items: [RenewItem] = []
        for (job, outcome) in zip(jobs, reply.outcomes) {
            guard case .acquired(let token, _, _) = outcome else { throw TestSupportError("\(job): \(outcome)") }
            items.append(RenewItem(job: job, token: token, ttlMs: 10_000))
        }
        let renew = codec.renewCall(
            RenewBatch(leases: items, heartbeatTTLMs: 10_000, previousTickMs: 0, catalogDigest: "bench", jobCount: 10),
            metadata: ["weight": "1"])
        var cells: [ReplicaWaitCell] = []
        for minReplicas in [0, 1] {
            for _ in 0..<100 {  // warm up: script cache, connection, replica link
                _ = try await connection.evaluate(renew.script, keys: renew.keys, arguments: renew.arguments)
            }
            let before = try await RedisCounters.read(connection)
            var samples: [Double] = []
            var shortfalls = 0
            samples.reserveCapacity(calls)
            for _ in 0..<calls {
                let start = benchClock.now
                if minReplicas == 0 {
                    _ = try await connection.evaluate(renew.script, keys: renew.keys, arguments: renew.arguments)
                } else {
                    let (_, acknowledged) = try await connection.evaluate(
                        renew.script, keys: renew.keys, arguments: renew.arguments, waitingFor: minReplicas,
                        timeout: .milliseconds(250))
                    if acknowledged < minReplicas { shortfalls += 1 }
                }
                samples.append((benchClock.now - start).ms)
            }
            let after = try await RedisCounters.read(connection)
            cells.append(
                ReplicaWaitCell(
                    minReplicas: minReplicas, calls: calls, roundTripMs: Distribution(samples),
                    primaryCPUMicrosPerCall: (after.cpuSeconds - before.cpuSeconds) * 1e6 / Double(calls),
                    acknowledgedShortfalls: shortfalls))
        }
        await connection.close()
        printTable(
            "renew of 10 leases, primary + 1 replica on loopback (\(calls) calls each)",
            header: ["min_replicas", "p50 ms", "p90 ms", "p99 ms", "max ms", "primary CPU µs/call", "short acks"],
            rows: cells.map {
                [
                    String($0.minReplicas), fmt($0.roundTripMs.p50, 3), fmt($0.roundTripMs.p90, 3),
                    fmt($0.roundTripMs.p99, 3), fmt($0.roundTripMs.max, 2), fmt($0.primaryCPUMicrosPerCall, 1),
                    String($0.acknowledgedShortfalls),
                ]
            })
        writeJSON(cells, name: "replica-wait", options: options)
    }
}
