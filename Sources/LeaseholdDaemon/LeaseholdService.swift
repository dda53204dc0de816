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
    /// The catalog this member runs (the latest one a reload applied).
    public var catalog: Catalog { state.withLock { $0.catalog } }
    /// The catalog, its runners by job name, and when it was loaded: replaced together by a
    /// reload, read by every event.
    private let state: Mutex<Current>
    private let registry: HandlerRegistry
    private let environment: JobRunnerEnvironment
    private let logger: Logger
    private let metrics: LeaseholdMetrics
    private let exitRequest: ExitRequest
    private let redisUp = Mutex<Bool>(false)
    /// Leaderships a reload hands to the member's task group (which alone may start tasks).
    private let leads: AsyncStream<Relead>.Continuation
    private let leadRequests: AsyncStream<Relead>
    /// One reload at a time.
    private let reloading = Mutex(false)

    /// What a reload replaces as one.
    private struct Current: Sendable {
        var catalog: Catalog
        var runners: [String: JobRunner]
        /// Each job's grace (for the stop deadline after a loss).
        var grace: [String: Duration]

        init(_ catalog: Catalog, _ runners: [String: JobRunner]) {
            self.catalog = catalog
            self.runners = runners
            self.grace = Dictionary(
                catalog.jobs.map { ($0.name, $0.leaseJob.timing.grace) }, uniquingKeysWith: { a, _ in a })
        }
    }

    /// What the member's loop acts on.
    private enum MemberInput: Sendable {
        case event(LeaseManagerEvent)
        case relead(Relead)
    }

    /// A changed job's new runner, to take up the lease the old runner led.
    private struct Relead: Sendable {
        var job: String
        var runner: JobRunner
    }

    /// Builds the member: handlers are created here, so config errors surface before any
    /// Redis traffic.
    public init(
        configuration: Configuration, registry: HandlerRegistry, logger: Logger,
        metrics: LeaseholdMetrics = LeaseholdMetrics()
    ) throws {
        let catalog = configuration.catalog
        self.registry = registry
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
        ]
        self.manager = LeaseManager(
            configuration: .init(
                redis: redis, keys: LeaseKeys(namespace: catalog.namespace),
                member: .init(
                    owner: owner, weight: configuration.weight, metadata: metadata,
                    seed: UInt64.random(in: .min ... .max), catalogDigest: catalog.digest),
                shutdownTimeout: configuration.shutdownTimeout, metrics: metrics,
                minReplicas: catalog.redisMinReplicas),
            jobs: jobs, logger: logger)
        self.exitRequest = ExitRequest(deadline: configuration.shutdownTimeout + .seconds(10))
        let exitRequest = self.exitRequest
        let environment = JobRunnerEnvironment(
            manager: manager, redis: RedisConnection(configuration: redis),
            keys: LeaseKeys(namespace: catalog.namespace),
            logger: logger, metrics: metrics,
            requestExit: { _, reason in exitRequest.set(reason) },
            catalogLoadedAtMs: configuration.catalogLoadedAtMs)
        self.environment = environment
        var runners: [String: JobRunner] = [:]
        for spec in catalog.jobs {
            runners[spec.name] = JobRunner(
                spec: spec, handler: try registry.makeHandler(for: spec), environment: environment)
        }
        self.state = Mutex(Current(catalog, runners))
        (leadRequests, leads) = AsyncStream.makeStream(bufferingPolicy: .unbounded)
        metrics.catalogInfo(digest: catalog.digest).record(1)
    }

    private var runners: [String: JobRunner] { state.withLock { $0.runners } }

    private func runner(_ job: String) -> JobRunner? { state.withLock { $0.runners[job] } }

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
        let (inputs, inputSink) = AsyncStream<MemberInput>.makeStream(bufferingPolicy: .unbounded)
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await self.manager.run() }
            group.addTask {
                for await _ in stopRequests {
                    await self.stop()
                    return
                }
            }
            // Lease events and a reload's re-leads reach the one loop below, in order: only
            // it starts leadership tasks, and a job's events never overtake its re-lead.
            group.addTask { [manager] in
                for await event in manager.events { inputSink.yield(.event(event)) }
                inputSink.finish()
            }
            group.addTask { [leadRequests] in
                for await relead in leadRequests { inputSink.yield(.relead(relead)) }
            }
            await withGracefulShutdownHandler {
                for await input in inputs {
                    // Each leadership is led in a child task that lives only as long as it
                    // does: a job costs a task only while this member leads it.
                    switch input {
                    case .event(let event):
                        if let (runner, leadership) = await handle(event) {
                            group.addTask { await runner.lead(leadership) }
                        }
                    case .relead(let relead):
                        if let leadership = await takeUp(relead) {
                            group.addTask { await relead.runner.lead(leadership) }
                        }
                    }
                    if exitReason != nil { requestStop.yield() }
                }
            } onGracefulShutdown: {
                requestStop.yield()
            }
            leads.finish()
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

    /// Hands a changed job's lease to its new runner, if this member still leads the job: the
    /// old runner has stopped, and the lease (and token) carry on.
    private func takeUp(_ relead: Relead) async -> JobRunner.Leadership? {
        // An acquisition that reached the new runner first already leads the lease.
        guard !stopping.withLock({ $0 }), let grant = manager.grant(for: relead.job), await !relead.runner.isLeading
        else { return nil }
        return await relead.runner.acquired(grant)
    }

    /// Applies a new catalog without a restart: unchanged jobs keep their lease, token and
    /// running handler; removed jobs stop their handler, then release their lease; added jobs
    /// compete at once; changed jobs stop at a safe point (a continuous handler at once, a
    /// scheduled job after a run in progress) and go on with the new settings under the same
    /// lease (a new TTL applies from the next renewal). The Redis URL, namespace and password
    /// file are not reloadable: the old values stay, and the result says so.
    ///
    /// Handlers for new and changed jobs are made first: if one cannot be made, nothing is
    /// applied. One reload runs at a time.
    public func reload(_ new: Catalog) async throws(CatalogReloadError) -> CatalogReload {
        let first = reloading.withLock { busy in
            defer { busy = true }
            return !busy
        }
        guard first else { throw CatalogReloadError(messages: ["a reload is already in progress"]) }
        defer { reloading.withLock { $0 = false } }
        guard !stopping.withLock({ $0 }) else {
            throw CatalogReloadError(messages: ["the member is shutting down"])
        }
        let old = catalog
        let diff = CatalogDiff(old: old, new: new)
        // The connection settings stay those the member started with.
        var applied = new
        applied.redisURL = old.redisURL
        applied.namespace = old.namespace
        applied.redisPasswordFile = old.redisPasswordFile
        let specs = Dictionary(new.jobs.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var fresh: [String: JobRunner] = [:]
        var problems: [String] = []
        // The new runners carry this load time: for a changed schedule, the newest catalog wins.
        var environment = self.environment
        environment.catalogLoadedAtMs = JobSchedule.milliseconds(Date())
        for name in diff.added + diff.changed {
            guard let spec = specs[name] else { continue }
            do {
                fresh[name] = JobRunner(
                    spec: spec, handler: try registry.makeHandler(for: spec), environment: environment)
            } catch {
                problems.append("\(spec.location): job '\(name)': \(error)")
            }
        }
        guard problems.isEmpty else { throw CatalogReloadError(messages: problems) }

        let before = runners
        // Added jobs get their runners before the lease layer can hand them a leadership.
        state.withLock { current in
            for name in diff.added { current.runners[name] = fresh[name] }
        }
        // New and changed jobs apply at once; removed ones stay in the lease layer until their
        // handlers have stopped (below), so their leases are released only after that.
        if diff.removed.isEmpty {
            manager.updateJobs(applied.jobs.map(\.leaseJob), catalogDigest: applied.digest)
        } else if !diff.added.isEmpty || !diff.changed.isEmpty {
            let removedNames = Set(diff.removed)
            let removedSpecs = old.jobs.filter { removedNames.contains($0.name) }
            manager.updateJobs((applied.jobs + removedSpecs).map(\.leaseJob))
        }
        await withTaskGroup(of: Void.self) { group in
            for name in diff.removed {
                guard let runner = before[name] else { continue }
                group.addTask { await runner.retire(atSafePoint: false) }
            }
            for name in diff.changed {
                guard let runner = before[name], let replacement = fresh[name] else { continue }
                group.addTask {
                    await runner.retire(atSafePoint: true)
                    // Events of the job go to the new runner from now on, then it takes up
                    // the lease (the loop handles both in order).
                    self.state.withLock { $0.runners[name] = replacement }
                    self.leads.yield(Relead(job: name, runner: replacement))
                }
            }
        }
        if !diff.removed.isEmpty {
            manager.updateJobs(applied.jobs.map(\.leaseJob), catalogDigest: applied.digest)
        }
        state.withLock { current in
            var runners = current.runners
            for name in diff.removed { runners[name] = nil }
            for name in diff.changed { runners[name] = fresh[name] }
            current = Current(applied, runners)
        }
        if old.digest != applied.digest {
            metrics.catalogInfo(digest: old.digest).record(0)
            metrics.catalogInfo(digest: applied.digest).record(1)
        }
        for name in diff.removed { metrics.leader(job: name).record(0) }
        return CatalogReload(diff: diff, digest: applied.digest)
    }

    /// Reacts to one event; returns the leadership to lead when the event is an acquisition.
    private func handle(_ event: LeaseManagerEvent) async -> (JobRunner, JobRunner.Leadership)? {
        switch event {
        case .acquired(let grant, let takeover, let gap):
            let runner = runner(grant.job)
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
            if takeover == .crashRelease { metrics.crashReleases(job: grant.job).increment() }
            if stopping.withLock({ $0 }) {
                // An acquire that raced the shutdown: nothing may start now, give it back.
                manager.release(job: grant.job, token: grant.token, reason: .released)
            } else if let runner {
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
            let grace = state.withLock { $0.grace[job] } ?? .seconds(1)
            await runner(job)?.lost(token: token, validUntil: .now + grace, reason: reason)
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
            await runner(job)?.handoff()
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
        case .control(let job):
            // "" after a re-subscription: a message may have been lost, so every runner looks.
            if job.isEmpty {
                for runner in runners.values { await runner.control() }
            } else {
                await runner(job)?.control()
            }
        case .membersChanged(let members):
            metrics.members.record(members.count)
            logger.info("members changed", metadata: ["members": "\(members.map(\.name).joined(separator: ","))"])
        }
        return nil
    }
}

/// What a successful reload applied.
public struct CatalogReload: Sendable {
    /// Jobs added.
    public var added: [String]
    /// Jobs removed.
    public var removed: [String]
    /// Jobs whose settings changed.
    public var changed: [String]
    /// Jobs left exactly as they were.
    public var unchanged: [String]
    /// Settings that need a restart, kept at their old values (one line each).
    public var notReloadable: [String]
    /// The digest of the catalog the member runs now.
    public var digest: String

    init(diff: CatalogDiff, digest: String) {
        added = diff.added
        removed = diff.removed
        changed = diff.changed
        unchanged = diff.unchanged
        notReloadable = diff.unreloadable
        self.digest = digest
    }
}

/// Why a reload applied nothing.
public struct CatalogReloadError: Error, Sendable, CustomStringConvertible {
    /// One line per problem (`file:line:col: message` where there is a place).
    public var messages: [String]

    /// The problems, one per line.
    public var description: String { messages.joined(separator: "\n") }
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
