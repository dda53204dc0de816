import Logging
import RedisClient
import Synchronization
import Testing

@testable import Leasehold
import LeaseholdTestSupport

/// Every test uses its own redis-server, so one namespace for all is fine.
let namespace = "lh"
let keys = LeaseKeys(namespace: namespace)

/// Quiet logger: the manager logs warnings on shutdown timeouts; tests read events instead.
let quietLogger: Logger = {
    var logger = Logger(label: "leasehold.integration-test")
    logger.logLevel = .error
    return logger
}()

/// An event with the local monotonic time it was read from the stream.
struct Stamped: Sendable {
    var at: ContinuousClock.Instant
    var event: LeaseManagerEvent
}

/// Collects a manager's events (the stream has a single consumer: this).
final class EventLog: Sendable {
    private let entries = Mutex<[Stamped]>([])

    func append(_ event: LeaseManagerEvent) {
        let stamped = Stamped(at: .now, event: event)
        entries.withLock { $0.append(stamped) }
    }

    var all: [Stamped] { entries.withLock { $0 } }

    /// Acquisitions, in order: (time, grant, takeover).
    var acquisitions: [(at: ContinuousClock.Instant, grant: LeaseGrant, takeover: TakeoverKind)] {
        all.compactMap {
            if case .acquired(let grant, let takeover, _) = $0.event { return ($0.at, grant, takeover) }
            return nil
        }
    }

    /// Losses, in order.
    var losses: [(at: ContinuousClock.Instant, job: String, token: UInt64, reason: LossReason)] {
        all.compactMap {
            if case .lost(let job, let token, let reason) = $0.event { return ($0.at, job, token, reason) }
            return nil
        }
    }

    /// Redis availability changes, in order.
    var availability: [(at: ContinuousClock.Instant, up: Bool, detail: String?)] {
        all.compactMap {
            if case .redisAvailability(let up, let detail) = $0.event { return ($0.at, up, detail) }
            return nil
        }
    }
}

/// One in-process member: a LeaseManager, its run task and its event log.
struct Member: Sendable {
    let name: String
    let manager: LeaseManager
    let log: EventLog
    let run: Task<Void, Never>
    let consumer: Task<Void, Never>

    init(
        _ name: String, redis: RedisConfiguration, jobs: [LeaseJob], seed: UInt64 = 1,
        shutdownTimeout: Duration = .seconds(5)
    ) {
        self.name = name
        let manager = LeaseManager(
            configuration: .init(
                redis: redis, keys: keys,
                member: LeaseEngine.Settings(owner: OwnerID(member: name), seed: seed),
                shutdownTimeout: shutdownTimeout),
            jobs: jobs, logger: quietLogger)
        let log = EventLog()
        self.manager = manager
        self.log = log
        self.consumer = Task { for await event in manager.events { log.append(event) } }
        self.run = Task { await manager.run() }
    }

    var owner: OwnerID { manager.owner }

    /// Graceful stop: cancelling `run()` releases every lease. Returns how long it took.
    @discardableResult
    func stop() async -> Duration {
        let start = ContinuousClock.now
        run.cancel()
        await run.value
        await consumer.value
        return ContinuousClock.now - start
    }

    /// A crash: the loop ends without releasing; leases stay until their TTL.
    func crash() async {
        manager.abandon()
        await run.value
        await consumer.value
    }
}

/// Polls `body` until it returns non-nil; fails the test (throws) after `limit`.
func eventually<T>(
    within limit: Duration = .seconds(15), _ what: @autoclosure () -> String, poll: Duration = .milliseconds(10),
    _ body: () async throws -> T?
) async throws -> T {
    let deadline = ContinuousClock.now + limit
    while true {
        if let value = try await body() { return value }
        if ContinuousClock.now >= deadline { throw TestSupportError("timed out after \(limit) waiting for \(what())") }
        try await Task.sleep(for: poll)
    }
}

/// Boolean form of ``eventually(within:_:poll:_:)``.
func waitUntil(
    within limit: Duration = .seconds(15), _ what: @autoclosure () -> String, poll: Duration = .milliseconds(10),
    _ condition: () async throws -> Bool
) async throws {
    _ = try await eventually(within: limit, what(), poll: poll) { try await condition() ? true : nil }
}

func jobs(_ names: [String], ttl: Duration, renewEvery: Duration? = nil) -> [LeaseJob] {
    names.map { LeaseJob(name: $0, timing: LeaseTiming(ttl: ttl, renewEvery: renewEvery)) }
}

extension RedisServerProcess {
    /// The lease value of `job` in Redis, parsed; nil if there is none.
    func lease(_ job: String) async throws -> LeaseValue? {
        guard let text = try await command("GET", keys.lease(job)).string else { return nil }
        return LeaseValue(parsing: text)
    }

    /// Remaining TTL of the lease key in ms (negative if missing / no TTL).
    func leasePTTL(_ job: String) async throws -> Int64 {
        try await command("PTTL", keys.lease(job)).integer ?? -2
    }

    /// `calls=` per command from one `INFO commandstats` snapshot (consistent across names).
    func commandStats() async throws -> [String: Int] {
        let info = try await command("INFO", "commandstats").string ?? ""
        var stats: [String: Int] = [:]
        for line in info.split(whereSeparator: \.isNewline) where line.hasPrefix("cmdstat_") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = String(line[line.index(line.startIndex, offsetBy: 8)..<colon])
            guard let range = line.range(of: "calls=") else { continue }
            stats[name] = Int(line[range.upperBound...].prefix(while: \.isNumber)) ?? 0
        }
        return stats
    }

    /// Fields of the newest entry of a job's events stream.
    func lastLeaseEvent(_ job: String) async throws -> [String: String] {
        guard let entry = try await command("XREVRANGE", keys.events(job), "+", "-", "COUNT", "1").array?.first,
              let fields = entry.array?.last?.array
        else { return [:] }
        var result: [String: String] = [:]
        var index = 0
        while index + 1 < fields.count {
            result[fields[index].string ?? ""] = fields[index + 1].string ?? ""
            index += 2
        }
        return result
    }
}

extension Duration {
    var ms: Double { Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15 }
}
