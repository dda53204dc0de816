import LeaseholdElection
import Logging
import Synchronization

/// An event with the local monotonic time it was read from the stream.
public struct StampedEvent: Sendable {
    /// When the member's consumer read it.
    public var at: ContinuousClock.Instant
    /// The event.
    public var event: LeaseManagerEvent
}

/// Every event a member's manager reported, in order, with accessors for the usual kinds.
public final class EventLog: Sendable {
    private let entries = Mutex<[StampedEvent]>([])

    /// Creates an empty log.
    public init() {}

    /// Appends `event`, stamped now.
    public func append(_ event: LeaseManagerEvent) {
        let stamped = StampedEvent(at: .now, event: event)
        entries.withLock { $0.append(stamped) }
    }

    /// Everything so far.
    public var all: [StampedEvent] { entries.withLock { $0 } }

    /// The events alone.
    public var events: [LeaseManagerEvent] { all.map(\.event) }

    /// Acquisitions, in order.
    public var acquisitions: [(at: ContinuousClock.Instant, grant: LeaseGrant, takeover: TakeoverKind)] {
        all.compactMap {
            if case .acquired(let grant, let takeover, _) = $0.event { return ($0.at, grant, takeover) }
            return nil
        }
    }

    /// Losses, in order.
    public var losses: [(at: ContinuousClock.Instant, job: String, token: UInt64, reason: LossReason)] {
        all.compactMap {
            if case .lost(let job, let token, let reason) = $0.event { return ($0.at, job, token, reason) }
            return nil
        }
    }

    /// Redis availability changes, in order.
    public var availability: [(at: ContinuousClock.Instant, up: Bool, detail: String?)] {
        all.compactMap {
            if case .redisAvailability(let up, let detail) = $0.event { return ($0.at, up, detail) }
            return nil
        }
    }
}

/// One in-process member for tests and the bench: a `LeaseManager`, the consumer of its
/// events (recorded in `log`; a handoff suggestion is honoured at once, as the daemon does
/// once a job's work has stopped) and, optionally, the member's own work. Everything runs
/// inside `run()`; ``withMember(_:redis:jobs:options:_:)`` scopes it to a closure.
public final class TestMember: Sendable {
    /// What varies between members.
    public struct Options: Sendable {
        /// The key namespace.
        public var keys: LeaseKeys
        /// Placement weight.
        public var weight: Double
        /// A fixed incarnation (for duplicate-member tests); random when nil.
        public var incarnation: String?
        /// Heartbeat metadata.
        public var metadata: [String: String]
        /// The engine's jitter seed.
        public var seed: UInt64
        /// How long a graceful stop waits for releases.
        public var shutdownTimeout: Duration
        /// The manager's logger (errors only by default: tests read events instead).
        public var logger: Logger
        /// Called for every event before the member's own handling (handoff release).
        public var onEvent: (@Sendable (TestMember, LeaseManagerEvent) -> Void)?
        /// The member's work, run while the member runs; cancelled first on a stop or crash.
        public var work: (@Sendable (TestMember) async -> Void)?

        /// Creates options; every field has a default.
        public init(
            keys: LeaseKeys = LeaseKeys(), weight: Double = 1, incarnation: String? = nil,
            metadata: [String: String] = [:],
            seed: UInt64 = 1, shutdownTimeout: Duration = .seconds(5),
            logger: Logger = quietLogger("leasehold.test-member"),
            onEvent: (@Sendable (TestMember, LeaseManagerEvent) -> Void)? = nil,
            work: (@Sendable (TestMember) async -> Void)? = nil
        ) {
            self.keys = keys
            self.weight = weight
            self.incarnation = incarnation
            self.metadata = metadata
            self.seed = seed
            self.shutdownTimeout = shutdownTimeout
            self.logger = logger
            self.onEvent = onEvent
            self.work = work
        }
    }

    /// The member name.
    public let name: String
    /// Its lease driver.
    public let manager: LeaseManager
    /// Every event so far.
    public let log = EventLog()
    private let options: Options
    private let stopWork = OneShot<Void>()
    private let workEnded = OneShot<Void>()
    private let crashed = OneShot<Void>()
    private let ended = OneShot<Void>()

    /// Creates the member; nothing happens until `run()`.
    public init(_ name: String, redis: RedisConfiguration, jobs: [LeaseJob], options: Options = Options()) {
        self.name = name
        self.options = options
        manager = LeaseManager(
            configuration: .init(
                redis: redis, keys: options.keys,
                member: .init(
                    owner: OwnerID(member: name, incarnation: options.incarnation), weight: options.weight,
                    metadata: options.metadata,
                    seed: options.seed),
                shutdownTimeout: options.shutdownTimeout),
            jobs: jobs, logger: options.logger)
    }

    /// This member's owner id.
    public var owner: OwnerID { manager.owner }

    /// Runs the manager, the event consumer and the work until `stop()` or `crash()`.
    public func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.consumeEvents() }
            if let work = options.work {
                group.addTask {
                    await Self.until(self.stopWork) { await work(self) }
                    self.workEnded.fire(())
                }
            }
            // A crash is the cancellation of `run()`: nothing is released.
            await Self.until(crashed) { try? await self.manager.run() }
            stopWork.fire(())
        }
        workEnded.fire(())
        ended.fire(())
    }

    /// Graceful stop, as the daemon does it: end the work, stop acquiring, give every lease
    /// back, and wait for the manager to return. Returns how long that took.
    @discardableResult
    public func stop() async -> Duration {
        let start = ContinuousClock.now
        stopWork.fire(())
        if options.work != nil { _ = await workEnded.wait() }
        manager.releaseAll()
        _ = await ended.wait()
        return ContinuousClock.now - start
    }

    /// A crash as Redis sees it: the manager is cancelled; leases and the heartbeat stay
    /// until their TTLs end.
    public func crash() async {
        crashed.fire(())
        _ = await ended.wait()
    }

    private func consumeEvents() async {
        for await event in manager.events {
            log.append(event)
            options.onEvent?(self, event)
            switch event {
            case .handoffSuggested(let job, _):
                if let grant = manager.grant(for: job) {
                    manager.release(job: job, token: grant.token, reason: .handedOff)
                }
            default:
                break
            }
        }
    }

    /// Runs `body` until it returns or `flag` fires (then cancels it and waits for it).
    private static func until(_ flag: OneShot<Void>, _ body: @escaping @Sendable () async -> Void) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await body() }
            group.addTask { _ = await flag.wait() }
            await group.next()
            group.cancelAll()
        }
    }
}

/// Runs `body` with a running in-process member; whatever `body` leaves running is stopped
/// gracefully when it returns or throws.
public func withMember<T>(
    _ name: String, redis: RedisConfiguration, jobs: [LeaseJob], options: TestMember.Options = .init(),
    isolation: isolated (any Actor)? = #isolation, _ body: (TestMember) async throws -> T
) async throws -> T {
    try await withMembers([name], redis: redis, jobs: jobs, options: { _ in options }) { try await body($0[0]) }
}

/// Runs `body` with several running members (`options` per name); each is stopped gracefully
/// when `body` ends, unless `body` stopped or crashed it already.
public func withMembers<T>(
    _ names: [String], redis: RedisConfiguration, jobs: [LeaseJob],
    options: (String) -> TestMember.Options = { _ in .init() },
    isolation: isolated (any Actor)? = #isolation, _ body: ([TestMember]) async throws -> T
) async throws -> T {
    let members = names.map { TestMember($0, redis: redis, jobs: jobs, options: options($0)) }
    return try await withThrowingDiscardingTaskGroup { group in
        for member in members { group.addTask { await member.run() } }
        let result: Result<T, any Error>
        do { result = .success(try await body(members)) } catch { result = .failure(error) }
        await withDiscardingTaskGroup { stops in
            for member in members { stops.addTask { await member.stop() } }
        }
        return try result.get()
    }
}

/// A logger that only shows errors (tests and the bench read events, not logs).
public func quietLogger(_ label: String) -> Logger {
    var logger = Logger(label: label)
    logger.logLevel = .error
    return logger
}
