import Foundation
import RedisClient
import Synchronization

/// The per-lease baseline: how Redsync/ShedLock-style locks keep many leases. Each member
/// renews every held lease with its own EVALSHA compare-and-PEXPIRE every renew interval,
/// and tries `SET key owner PX ttl NX` for every job it does not hold once per TTL (a
/// standby that does not know when a lease ends retries at the lease period). Commands of
/// one kind are pipelined in batches of 1,000 (more favourable to the baseline than one
/// round trip per command); no fencing counter is kept (also favourable).
final class PerLeaseMember: Sendable {
    static let renewScript = RedisScript(
        """
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
        return 0
        """)
    static let pipelineBatch = 1000

    let name: String
    let jobs: [String]
    let ttl: Duration
    let renewEvery: Duration
    let redis: RedisConfiguration
    let namespace: String
    /// Leases held right now.
    let heldCount = Atomic<Int>(0)
    /// Network round trips (pipeline flushes) so far.
    let roundTrips = Atomic<Int>(0)
    private let task = Mutex<Task<Void, Never>?>(nil)

    init(
        name: String, jobs: [String], ttl: Duration, renewEvery: Duration, redis: RedisConfiguration, namespace: String
    ) {
        self.name = name
        self.jobs = jobs
        self.ttl = ttl
        self.renewEvery = renewEvery
        self.redis = redis
        self.namespace = namespace
    }

    func key(_ job: String) -> String { "{\(namespace)}:{\(job)}:lease" }

    func start(attemptPhase: Duration) {
        let t = Task { await self.loop(attemptPhase: attemptPhase) }
        task.withLock { $0 = t }
    }

    func stop() async {
        let t = task.withLock { $0 }
        t?.cancel()
        await t?.value
    }

    private func pipelined(_ connection: RedisConnection, _ commands: [[String]]) async -> [RedisReply] {
        var replies: [RedisReply] = []
        var start = 0
        while start < commands.count {
            let end = min(start + Self.pipelineBatch, commands.count)
            roundTrips.add(1, ordering: .relaxed)
            if let batch = try? await connection.pipeline(Array(commands[start..<end])) {
                replies += batch
            } else {
                replies += Array(repeating: RedisReply.null, count: end - start)
            }
            start = end
        }
        return replies
    }

    private func loop(attemptPhase: Duration) async {
        let connection = RedisConnection(configuration: redis)
        defer { Task { await connection.close() } }
        _ = try? await connection.send(["SCRIPT", "LOAD", Self.renewScript.source])
        let value = "\(name)@\(UInt64.random(in: 1 ... .max))"
        let ttlMs = String(ttl.wholeMilliseconds)
        var held = Set<String>()
        var nextRenew = benchClock.now + renewEvery
        var nextAttempt = benchClock.now + attemptPhase
        while !Task.isCancelled {
            let now = benchClock.now
            if now >= nextAttempt {
                let free = jobs.filter { !held.contains($0) }
                let replies = await pipelined(connection, free.map { ["SET", key($0), value, "PX", ttlMs, "NX"] })
                for (job, reply) in zip(free, replies) where reply.string == "OK" { held.insert(job) }
                nextAttempt += ttl
            }
            if now >= nextRenew {
                let mine = Array(held)
                let replies = await pipelined(
                    connection, mine.map { ["EVALSHA", Self.renewScript.sha1, "1", key($0), value, ttlMs] })
                for (job, reply) in zip(mine, replies) where reply.integer != 1 { held.remove(job) }
                nextRenew += renewEvery
            }
            heldCount.store(held.count, ordering: .relaxed)
            try? await Task.sleep(until: min(nextRenew, nextAttempt), clock: benchClock)
        }
    }
}
