import Logging
import RedisClient
import Synchronization

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// Thrown by `LeaseContext.checkLeadership()` once this member may no longer act for the job.
public struct LeadershipLostError: Error, Sendable, CustomStringConvertible {
    /// The job.
    public var job: String
    /// The token that is no longer valid.
    public var token: UInt64
    /// One line for logs.
    public var description: String { "no longer the leader of '\(job)' (token \(token)): stop before acting" }
}

/// Why a run started.
public enum RunTrigger: String, Sendable, Hashable, CaseIterable {
    /// Its schedule's slot came (or, for a continuous job, leadership began or the handler restarted).
    case schedule
    /// A failed run is tried again (`retry:`).
    case retry
    /// An operator asked for it (`leasehold trigger`).
    case manual
}

/// What a handler knows about its leadership while it runs.
public struct LeaseContext: Sendable {
    /// The job name.
    public let job: String
    /// The fencing token of this leadership; hand it to downstream stores.
    public let token: UInt64
    /// This member's name.
    public let member: String
    /// This process's owner id (`member@incarnation`).
    public let instance: String
    /// The schedule slot this run fulfils (nil for continuous jobs).
    public let scheduledAt: Date?
    /// Which try of the slot this is: 1 for a first try, 2 and up for retries.
    public let attempt: Int
    /// Why this run started.
    public let trigger: RunTrigger
    /// A logger carrying job, member and token metadata.
    public let logger: Logger
    /// Redis writes that apply only while this token still holds the lease.
    public let redis: FencedRedis
    private let currentGrant: @Sendable () -> LeaseGrant?
    private let initialValidUntil: ContinuousClock.Instant
    private let lossReason: @Sendable () -> LossReason?
    private let lastValidity: ValidityMark

    /// Creates a context; `currentGrant` reads the live lease (validity grows with renewals).
    public init(
        job: String, token: UInt64, member: String, instance: String, scheduledAt: Date? = nil,
        logger: Logger, redis: FencedRedis, validUntil: ContinuousClock.Instant,
        currentGrant: @escaping @Sendable () -> LeaseGrant?,
        lossReason: @escaping @Sendable () -> LossReason? = { nil }, attempt: Int = 1,
        trigger: RunTrigger = .schedule
    ) {
        self.attempt = attempt
        self.trigger = trigger
        self.job = job
        self.token = token
        self.member = member
        self.instance = instance
        self.scheduledAt = scheduledAt
        self.logger = logger
        self.redis = redis
        self.initialValidUntil = validUntil
        self.currentGrant = currentGrant
        self.lossReason = lossReason
        self.lastValidity = ValidityMark(validUntil)
    }

    /// The end of this member's validity on the monotonic clock; it moves forward with every
    /// renewal and stops moving once leadership is lost.
    public var validUntil: ContinuousClock.Instant {
        guard let grant = currentGrant(), grant.token == token else { return min(initialValidUntil, .now) }
        return grant.validUntil
    }

    /// Until when a process started for this leadership may still run: the validity while the
    /// lease is held; after a step-down on the validity timer, the validity that was left
    /// (never shortened: the job gets SIGTERM and its kill grace within it); after the lease was
    /// seen deleted or taken, now (someone else may already lead: stop at once).
    package var processDeadline: ContinuousClock.Instant {
        if let grant = currentGrant(), grant.token == token {
            lastValidity.raise(to: grant.validUntil)
            return grant.validUntil
        }
        if lossReason() == .expired { return .now }
        return lastValidity.value
    }

    /// Whether this member may still act for the job right now.
    public var isLeader: Bool {
        ContinuousClock.now < validUntil && !Task.isCancelled
    }

    /// Throws once validity has passed (or the handler was told to stop): call it before
    /// every externally visible action.
    public func checkLeadership() throws(LeadershipLostError) {
        guard isLeader else { throw LeadershipLostError(job: job, token: token) }
    }
}

/// Writes to Redis that the server applies only while the job's lease still carries this
/// member's owner id and token, checked atomically in the same script.
public struct FencedRedis: Sendable {
    private let connection: RedisConnection
    private let leaseKey: String
    private let expected: String

    /// Creates the helper for one leadership.
    public init(connection: RedisConnection, keys: LeaseKeys, job: String, owner: OwnerID, token: UInt64) {
        self.connection = connection
        self.leaseKey = keys.lease(job)
        self.expected = LeaseValue(owner: owner, token: token).description
    }

    /// Sets `key` to `value` if still leader; returns false when the write was refused.
    public func set(_ key: String, to value: String) async throws -> Bool {
        try await run(LeaseScripts.fencedSet, keys: [leaseKey, key], arguments: [expected, value])
    }

    /// Sets hash fields if still leader; returns false when the write was refused.
    public func hashSet(_ key: String, fields: [String: String]) async throws -> Bool {
        let flat = fields.sorted { $0.key < $1.key }.flatMap { [$0.key, $0.value] }
        guard !flat.isEmpty else { return true }
        return try await run(LeaseScripts.fencedHashSet, keys: [leaseKey, key], arguments: [expected] + flat)
    }

    private func run(_ script: RedisScript, keys: [String], arguments: [String]) async throws -> Bool {
        let reply = try await connection.evaluate(script, keys: keys, arguments: arguments)
        if case .error(let text) = reply { throw RedisError(kind: .server, message: "fenced write failed: \(text)") }
        return reply.integer == 1
    }
}

/// The latest validity end a context has seen, so a step-down can keep what was left of it.
private final class ValidityMark: Sendable {
    private let instant: Mutex<ContinuousClock.Instant>

    init(_ instant: ContinuousClock.Instant) { self.instant = Mutex(instant) }

    var value: ContinuousClock.Instant { instant.withLock { $0 } }

    func raise(to later: ContinuousClock.Instant) { instant.withLock { $0 = max($0, later) } }
}
