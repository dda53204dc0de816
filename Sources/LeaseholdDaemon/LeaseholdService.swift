import Dispatch
import Leasehold
import Logging
import RedisClient
import ServiceLifecycle
import Synchronization

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif
#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// One member of the fleet as a swift-service-lifecycle `Service`: it competes for every job
/// of the catalog, runs the handlers of the jobs it leads, and on graceful shutdown stops
/// them, then releases their leases so standbys take over at once.
public final class LeaseholdService: Service, Sendable {
    /// What the member is made of.
    public struct Configuration: Sendable {
        /// The loaded catalog.
        public var catalog: Catalog
        /// The Redis server (URL already resolved: flag > env > catalog).
        public var redis: RedisEndpoint
        /// This member's name (placement identity).
        public var memberName: String
        /// Placement weight.
        public var weight: Double
        /// How long a graceful shutdown waits for handlers and releases.
        public var shutdownTimeout: Duration
        /// When the catalog was loaded (wall-clock ms): after a schedule edit, the schedule of
        /// the newest loaded catalog in the fleet wins.
        public var catalogLoadedAtMs: Int64

        /// Creates a configuration; `catalogLoadedAtMs` defaults to now.
        public init(
            catalog: Catalog, redis: RedisEndpoint, memberName: String, weight: Double = 1,
            shutdownTimeout: Duration = .seconds(10),
            catalogLoadedAtMs: Int64 = Int64((Date().timeIntervalSince1970 * 1000).rounded())
        ) {
            self.catalog = catalog
            self.redis = redis
            self.memberName = memberName
            self.weight = weight
            self.shutdownTimeout = shutdownTimeout
            self.catalogLoadedAtMs = catalogLoadedAtMs
        }
    }

    /// The lease driver (exposed for status endpoints and tests).
    public let manager: LeaseManager
    /// The catalog this member runs.
    public let catalog: Catalog
    private let runners: [String: JobRunner]
    private let jobTimings: [String: LeaseTiming]
    private let logger: Logger
    private let metrics: LeaseholdMetrics
    private let exitRequest: ExitRequest
    private let redisUp = Mutex<Bool>(false)

    /// Builds the member: handlers are created here, so config errors surface before any
    /// Redis traffic.
    public init(
        configuration: Configuration, registry: HandlerRegistry, logger: Logger,
        metrics: LeaseholdMetrics = LeaseholdMetrics()
    ) throws {
        let catalog = configuration.catalog
        self.catalog = catalog
        self.logger = logger
        self.metrics = metrics
        let jobs = catalog.jobs.map(\.leaseJob)
        let callTimeout = LeaseTiming.callTimeout(for: jobs)
        let redis = RedisConfiguration(
            endpoint: configuration.redis, connectTimeout: callTimeout, commandTimeout: callTimeout)
        let owner = OwnerID(member: configuration.memberName)
        let metadata = [
            "host": ProcessInfo.processInfo.hostName,
            "pid": String(ProcessInfo.processInfo.processIdentifier),
            "version": LeaseholdVersion.current,
            "started_at": String(Int64(Date().timeIntervalSince1970 * 1000)),
            "jobs": String(catalog.jobs.count),
        ]
        self.manager = LeaseManager(
            configuration: .init(
                redis: redis, keys: LeaseKeys(namespace: catalog.namespace),
                member: .init(
                    owner: owner, weight: configuration.weight, metadata: metadata,
                    seed: UInt64.random(in: .min ... .max)),
                shutdownTimeout: configuration.shutdownTimeout, metrics: metrics),
            jobs: jobs, logger: logger)
        self.jobTimings = Dictionary(uniqueKeysWithValues: jobs.map { ($0.name, $0.timing) })
        self.exitRequest = ExitRequest(deadline: configuration.shutdownTimeout + .seconds(10))
        let exitRequest = self.exitRequest
        let environment = JobRunnerEnvironment(
            manager: manager, redis: RedisConnection(configuration: redis),
            keys: LeaseKeys(namespace: catalog.namespace),
            logger: logger, metrics: metrics,
            requestExit: { _, reason in exitRequest.set(reason) },
            catalogLoadedAtMs: configuration.catalogLoadedAtMs)
        var runners: [String: JobRunner] = [:]
        for spec in catalog.jobs {
            runners[spec.name] = JobRunner(
                spec: spec, handler: try registry.makeHandler(for: spec), environment: environment)
        }
        self.runners = runners
    }

    /// Set when `on_lost_leadership: exit` fired: the reason the daemon must exit non-zero.
    public var exitReason: String? { exitRequest.reason }

    /// Whether the last Redis call succeeded (for readiness).
    public var isRedisUp: Bool { redisUp.withLock { $0 } }

    /// Runs until graceful shutdown: then stops handlers, releases leases and returns. The
    /// lease driver, every leadership's work and the shutdown itself run as children of this call.
    /// Cancelling it abandons everything: handlers are cancelled, no lease is released.
    public func run() async throws {
        logger.info(
            "member starting",
            metadata: [
                "member": "\(manager.owner.member)", "instance": "\(manager.owner)", "jobs": "\(catalog.jobs.count)",
                "namespace": "\(catalog.namespace)",
            ])
        let (stopRequests, requestStop) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await self.manager.run() }
            group.addTask {
                for await _ in stopRequests {
                    await self.stop()
                    return
                }
            }
            await withGracefulShutdownHandler {
                for await event in manager.events {
                    // Each leadership is led in a child task that lives only as long as it
                    // does: a job costs a task only while this member leads it.
                    if let (runner, leadership) = await handle(event) {
                        group.addTask { await runner.lead(leadership) }
                    }
                    if exitReason != nil { requestStop.yield() }
                }
            } onGracefulShutdown: {
                requestStop.yield()
            }
            // The driver has returned (its event stream ended): every lease is released or
            // abandoned, so the runners have nothing left to lead.
            requestStop.finish()
            for runner in runners.values { await runner.finish() }
        }
        logger.info("member stopped", metadata: ["member": "\(manager.owner.member)"])
    }

    private let stopping = Mutex(false)

    /// Stops acquiring, stops every handler, then releases what it held.
    public func stop() async {
        let first = stopping.withLock { was in
            defer { was = true }
            return !was
        }
        guard first else { return }
        logger.info("graceful shutdown: stopping handlers, then releasing leases")
        manager.shutdown()
        await withTaskGroup(of: Void.self) { group in
            for runner in runners.values {
                group.addTask { await runner.stopAndRelease() }
            }
        }
    }

    /// Reacts to one event; returns the leadership to lead when the event is an acquisition.
    private func handle(_ event: LeaseManagerEvent) async -> (JobRunner, JobRunner.Leadership)? {
        switch event {
        case .acquired(let grant, let takeover, let gap):
            var meta: Logger.Metadata = [
                "job": "\(grant.job)", "member": "\(manager.owner.member)", "token": "\(grant.token)",
                "reason": "\(takeover.rawValue)",
            ]
            if let gap {
                meta["leaderless_ms"] = "\(gap)"
                metrics.leaderlessSeconds(job: grant.job).record(Double(gap) / 1000)
            }
            logger.info("acquired leadership", metadata: meta)
            metrics.leader(job: grant.job).record(1)
            metrics.leaseAcquired(job: grant.job).increment()
            if stopping.withLock({ $0 }) {
                // An acquire that raced the shutdown: nothing may start now, give it back.
                manager.release(job: grant.job, token: grant.token, reason: .released)
            } else if let runner = runners[grant.job] {
                return (runner, await runner.acquired(grant))
            }
        case .lost(let job, let token, let reason):
            logger.warning(
                "lost leadership",
                metadata: [
                    "job": "\(job)", "member": "\(manager.owner.member)", "token": "\(token)",
                    "reason": "\(reason.rawValue)",
                ])
            metrics.leader(job: job).record(0)
            metrics.leaseLost(job: job, reason: reason.rawValue).increment()
            // A step-down comes `grace` before validity ends; a renewal that found the lease
            // gone gives the handler the same `grace` to stop before it counts as an overrun.
            let grace = jobTimings[job]?.grace ?? .seconds(1)
            await runners[job]?.lost(token: token, validUntil: .now + grace, reason: reason)
        case .released(let job, let token, let reason, let confirmed):
            logger.info(
                reason == .handedOff ? "handed off leadership" : "released leadership",
                metadata: [
                    "job": "\(job)", "member": "\(manager.owner.member)", "token": "\(token)",
                    "reason": "\(reason.rawValue)",
                    "confirmed": "\(confirmed)",
                ])
            metrics.leader(job: job).record(0)
            metrics.leaseLost(job: job, reason: reason.rawValue).increment()
        case .handoffSuggested(let job, let to):
            logger.info(
                "handing off at the next safe point",
                metadata: ["job": "\(job)", "to": "\(to ?? "any member (operator request)")"])
            await runners[job]?.handoff()
        case .duplicateMember(let incarnation):
            logger.error(
                "another live process uses this member name: give every member a unique --name",
                metadata: [
                    "member": "\(manager.owner.member)", "other_instance": "\(manager.owner.member)@\(incarnation)",
                ])
        case .redisAvailability(let up, let detail):
            redisUp.withLock { $0 = up }
            metrics.redisUp.record(up ? 1 : 0)
            if up {
                logger.info("redis reachable")
            } else {
                logger.error(
                    "redis unreachable: leaders step down at validity − grace, everyone retries with backoff",
                    metadata: [
                        "error": "\(detail ?? "unknown")"
                    ])
            }
        case .membersChanged(let members):
            metrics.members.record(members.count)
            logger.info("members changed", metadata: ["members": "\(members.map(\.name).joined(separator: ","))"])
        }
        return nil
    }
}

/// The version members publish in their heartbeat.
public enum LeaseholdVersion {
    /// The current release.
    public static let current = "0.1.0"
}

/// The first reason a handler demanded that the daemon exit (`on_lost_leadership: exit`).
private final class ExitRequest: Sendable {
    private let storage = Mutex<String?>(nil)
    /// How long the graceful shutdown that follows may take before the process exits anyway.
    private let deadline: Duration

    init(deadline: Duration) { self.deadline = deadline }

    /// Records `reason` unless one was recorded already. The first one also arms a watchdog:
    /// a handler that ignores cancellation (the reason may be exactly that) would keep the
    /// graceful shutdown waiting forever, and the operator asked for an exit.
    func set(_ reason: String) {
        let first = storage.withLock { stored in
            defer { stored = stored ?? reason }
            return stored == nil
        }
        guard first else { return }
        let (seconds, attoseconds) = deadline.components
        let nanoseconds = Int(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
        DispatchQueue.global().asyncAfter(deadline: DispatchTime.now() + .nanoseconds(nanoseconds)) {
            StandardError.write(
                "leaseholdd: graceful shutdown did not finish within \(CatalogValue.text(self.deadline)) (a handler ignores cancellation); exiting: \(reason)\n"
            )
            exit(LeaseholdDaemon.lostLeadershipExitCode)
        }
    }

    /// The recorded reason.
    var reason: String? { storage.withLock { $0 } }
}
