import Logging
import RedisClient
import ServiceLifecycle
import Synchronization

/// A lease this member holds right now, as handlers see it.
public struct LeaseGrant: Sendable, Hashable {
    /// The job name.
    public var job: String
    /// The fencing token: grows with every change of leader.
    public var token: UInt64
    /// The end of this member's validity on the monotonic clock: act only before it.
    public var validUntil: ContinuousClock.Instant
    /// When the handler is told to stop (validity minus grace).
    public var stepDownAt: ContinuousClock.Instant
}

/// A leadership change, in real time, as the driver reports it.
public enum LeaseManagerEvent: Sendable, Hashable {
    /// This member now leads the job.
    case acquired(LeaseGrant, takeover: TakeoverKind, gapMs: Int64?)
    /// This member no longer leads the job; its handler must stop now.
    case lost(job: String, token: UInt64, reason: LossReason)
    /// A release asked for through `release(job:token:reason:)` or `releaseAll()` finished.
    case released(job: String, token: UInt64, reason: ReleaseReason, confirmed: Bool)
    /// Placement or an operator asks this leader to hand the job over at a safe point.
    case handoffSuggested(job: String, to: String?)
    /// Another live process uses this member's name.
    case duplicateMember(incarnation: String)
    /// Redis became reachable or unreachable.
    case redisAvailability(up: Bool, detail: String?)
    /// The set of live members changed.
    case membersChanged([MemberInfo])
    /// An operator changed the job's control state (pause, resume, trigger): its leader
    /// re-reads it now. `job` is "" after a re-subscription (messages may have been lost
    /// meanwhile): every job.
    case control(job: String)
}

/// Runs the lease engine of one member against Redis: one renew call per tick for all held
/// leases, batched acquires, releases by value, and the released channel for instant
/// takeover.
///
/// Use it directly for leader election in your own code, or through the daemon, which
/// starts and stops handlers on its events. It is a swift-service-lifecycle `Service`: run
/// it in a `ServiceGroup` beside your own service, read `events`, and after stopping the work
/// of a job call `release(job:token:reason:)`. Graceful shutdown (or `shutdown()`) stops
/// acquiring; the run ends once every lease is released. Cancelling `run()` abandons every
/// lease, as a crash would.
public final class LeaseManager: Service, Sendable {
    /// Driver settings.
    public struct Configuration: Sendable {
        /// The Redis server and its timeouts.
        public var redis: RedisConfiguration
        /// The key namespace.
        public var keys: LeaseKeys
        /// Member settings (owner id, weight, metadata, jitter seed).
        public var member: LeaseMemberSettings
        /// How long a graceful shutdown waits for releases before giving up.
        public var shutdownTimeout: Duration
        /// Where metrics go.
        public var metrics: LeaseholdMetrics
        /// With N ≥ 1, every acquire, renew and release is pipelined with `WAIT N` and counts
        /// only once N replicas acknowledged it (`redis.min_replicas`); 0 sends no WAIT.
        public var minReplicas: Int
        /// How long that WAIT may block: half the Redis command timeout (which bounds the
        /// whole round trip), at least 1 ms.
        public var replicaWaitTimeout: Duration {
            max(redis.commandTimeout / 2, .milliseconds(1))
        }

        /// Creates driver settings.
        public init(
            redis: RedisConfiguration, keys: LeaseKeys = LeaseKeys(),
            member: LeaseMemberSettings, shutdownTimeout: Duration = .seconds(5),
            metrics: LeaseholdMetrics = LeaseholdMetrics(), minReplicas: Int = 0
        ) {
            self.metrics = metrics
            self.minReplicas = max(0, minReplicas)
            self.redis = redis
            self.keys = keys
            self.member = member
            self.shutdownTimeout = shutdownTimeout
        }
    }

    private enum Input: Sendable {
        case completion(LeaseCompletion)
        case releasedMessage(String)
        case release(job: String, token: UInt64?, reason: ReleaseReason)
        case withdraw(job: String, reason: ReleaseReason)
        case rejoin(job: String)
        case updateJobs([LeaseJob], catalogDigest: String?)
        case shutdown
        case releaseAll
        case recheck
        case wake
    }

    /// The jobs this manager competes for (the latest `updateJobs(_:catalogDigest:)`).
    public var jobs: [LeaseJob] { currentJobs.withLock { $0 } }
    private let currentJobs: Mutex<[LeaseJob]>
    /// Its settings.
    public let configuration: Configuration
    /// Leadership changes, in order. Single consumer.
    public let events: AsyncStream<LeaseManagerEvent>

    private let eventSink: AsyncStream<LeaseManagerEvent>.Continuation
    private let inputs: AsyncStream<Input>
    private let inputSink: AsyncStream<Input>.Continuation
    private let origin: ContinuousClock.Instant
    private let grants = Mutex<[String: LeaseGrant]>([:])
    private let grantObserver = Mutex<(@Sendable ([LeaseGrant]) -> Void)?>(nil)
    private let members = Mutex<[MemberInfo]>([])
    private let codec: LeaseScriptCodec
    private let logger: Logger
    /// The namespace epoch as the last script reply reported it (nil before the first).
    private let epoch = Mutex<NamespaceEpoch?>(nil)
    /// Set by a shutdown, so the wait for an older layout's members ends too.
    private let stopping = Mutex(false)

    /// Creates a manager; nothing happens until `run()`.
    public init(configuration: Configuration, jobs: [LeaseJob], logger: Logger = Logger(label: "leasehold.lease")) {
        self.configuration = configuration
        self.currentJobs = Mutex(jobs)
        self.logger = logger
        self.origin = ContinuousClock.now
        self.codec = LeaseScriptCodec(keys: configuration.keys, owner: configuration.member.owner)
        (events, eventSink) = AsyncStream.makeStream(bufferingPolicy: .unbounded)
        (inputs, inputSink) = AsyncStream.makeStream(bufferingPolicy: .unbounded)
    }

    /// The owner id of this process.
    public var owner: OwnerID { configuration.member.owner }

    /// The lease this member holds for `job` right now, if it leads it.
    public func grant(for job: String) -> LeaseGrant? {
        guard let grant = grants.withLock({ $0[job] }), ContinuousClock.now < grant.validUntil else { return nil }
        return grant
    }

    /// Every lease held right now.
    public var currentGrants: [LeaseGrant] {
        let now = ContinuousClock.now
        return grants.withLock { Array($0.values) }.filter { now < $0.validUntil }.sorted { $0.job < $1.job }
    }

    /// Calls `observer` with every lease held whenever that set or a validity changes
    /// (acquire, renewal, loss, release), on the manager's loop: it must not block. A
    /// companion process learns what to release from it.
    package func observeGrants(_ observer: (@Sendable ([LeaseGrant]) -> Void)?) {
        grantObserver.withLock { $0 = observer }
    }

    /// The live members as of the last heartbeat.
    public var liveMembers: [MemberInfo] { members.withLock { $0 } }

    /// Gives a lease up; call it only once the job's work has stopped. With `token`, only
    /// that leadership is released (a later one, acquired meanwhile, is kept).
    public func release(job: String, token: UInt64? = nil, reason: ReleaseReason = .released) {
        inputSink.yield(.release(job: job, token: token, reason: reason))
    }

    /// Stops competing for `job` until `rejoin(job:)`, giving back a lease held for it: for
    /// work that cannot run on this member now, so another member can lead the job.
    public func withdraw(job: String, reason: ReleaseReason = .released) {
        inputSink.yield(.withdraw(job: job, reason: reason))
    }

    /// Competes for `job` again after `withdraw(job:reason:)`.
    public func rejoin(job: String) {
        inputSink.yield(.rejoin(job: job))
    }

    /// Competes for `jobs` from now on (a catalog change), advertising them under
    /// `catalogDigest` (nil derives one from the names). Jobs no longer listed give their
    /// lease back: stop their work first. New jobs compete at once. Jobs that stay keep their
    /// lease and token; changed timing applies from the next renewal. The Redis call timeout
    /// is not changed (it was derived from the jobs at start).
    public func updateJobs(_ jobs: [LeaseJob], catalogDigest: String? = nil) {
        currentJobs.withLock { $0 = jobs }
        inputSink.yield(.updateJobs(jobs, catalogDigest: catalogDigest))
    }

    /// Stops acquiring; `run()` returns once the layer above has released every lease (or
    /// the shutdown timeout passed).
    public func shutdown() {
        stopping.withLock { $0 = true }
        inputSink.yield(.shutdown)
    }

    /// Stops acquiring and gives every lease back at once; call it only when no work of any
    /// job runs any more (for example at the end of your own service's graceful shutdown).
    /// An acquire still in flight is given back as soon as its reply arrives.
    public func releaseAll() {
        stopping.withLock { $0 = true }
        inputSink.yield(.shutdown)
        inputSink.yield(.releaseAll)
    }

    /// Runs until shut down or cancelled; every task it starts ends before it returns.
    ///
    /// Graceful shutdown (swift-service-lifecycle's, or `shutdown()`) stops acquiring, waits
    /// up to `shutdownTimeout` for the caller to release each lease after stopping its work,
    /// then marks this member gone. Cancellation abandons everything at once, as a crash
    /// would: no release is sent, and the leases end at their TTL.
    public func run() async throws {
        let renewConnection = RedisConnection(configuration: configuration.redis)
        let commandConnection = RedisConnection(configuration: configuration.redis)
        let controlChannel = configuration.keys.controlChannel
        let subscriber = RedisSubscriber(
            configuration: configuration.redis, channels: [configuration.keys.releasedChannel, controlChannel])
        let graceful = await withDiscardingTaskGroup { group in
            group.addTask { [inputSink, eventSink] in
                // Messages published while the subscriber was disconnected are lost; the PTTL
                // timers of standbys are the fallback, so nothing waits longer than the TTL.
                var subscriptions = 0
                for await message in subscriber.messages {
                    switch message {
                    case .message(let channel, _):
                        guard let payload = message.payloadString else { break }
                        // Control messages concern the job runners, not the lease engine.
                        if channel == controlChannel {
                            eventSink.yield(.control(job: payload))
                        } else {
                            inputSink.yield(.releasedMessage(payload))
                        }
                    case .subscribed:
                        subscriptions += 1
                        if subscriptions > 1 {
                            inputSink.yield(.recheck)
                            eventSink.yield(.control(job: ""))
                        }
                    case .disconnected:
                        break
                    }
                }
            }
            let graceful = await withGracefulShutdownHandler {
                guard await waitForOlderLayout(on: commandConnection) else { return !Task.isCancelled }
                return await loop(renew: renewConnection, other: commandConnection, group: &group)
            } onGracefulShutdown: {
                self.stopping.withLock { $0 = true }
                self.inputSink.yield(.shutdown)
            }
            // The listener, timers and calls still in flight are not needed any more.
            group.cancelAll()
            return graceful
        }
        if graceful { await leave(on: renewConnection) }
        await subscriber.stop()
        await renewConnection.close()
        await commandConnection.close()
        eventSink.finish()
    }

    private func engineTime() -> Duration { ContinuousClock.now - origin }

    /// Returns true when it ended by a graceful shutdown (everything released or timed out),
    /// false when cancelled. Redis calls and timers run as children of `group`, so none
    /// outlives `run()`.
    private func loop(renew: RedisConnection, other: RedisConnection, group: inout DiscardingTaskGroup) async -> Bool {
        var engine = LeaseEngine(settings: configuration.member, jobs: jobs, now: engineTime())
        // Cancellation ends the input stream's iteration: that is how an abandon returns.
        var iterator = inputs.makeAsyncIterator()
        var scheduledWake: Duration?
        var shutdownDeadline: Duration?
        var revision = -1

        while true {
            let now = engineTime()
            let step = engine.poll(now: now)
            publish(step.events, engine: engine, revision: &revision)
            for command in step.commands {
                // Renewals get their own connection so a slow acquire never delays them.
                let connection: RedisConnection
                if case .renew = command { connection = renew } else { connection = other }
                let leaving = shutdownDeadline != nil
                group.addTask { [inputSink] in
                    inputSink.yield(.completion(await self.execute(command, on: connection, leaving: leaving)))
                }
            }
            if engine.isShutDown { return true }
            if let deadline = shutdownDeadline, now >= deadline {
                logger.warning(
                    "shutdown timeout: leases not confirmed released will expire on their own",
                    metadata: ["held": "\(engine.ledJobs)"])
                return true
            }
            var wake = step.wakeAt
            if let deadline = shutdownDeadline { wake = min(wake ?? deadline, deadline) }
            if let wake, scheduledWake.map({ wake < $0 }) ?? true {
                // A timer that a sooner wake replaced still fires later; its extra poll finds
                // nothing due, which is cheaper than a cancellable timer task of its own.
                scheduledWake = wake
                let instant = origin + wake
                group.addTask { [inputSink] in
                    try? await Task.sleep(until: instant, clock: .continuous)
                    if !Task.isCancelled { inputSink.yield(.wake) }
                }
            }
            guard let input = await iterator.next() else { return false }
            let at = engineTime()
            if let wake = scheduledWake, at >= wake { scheduledWake = nil }
            switch input {
            case .completion(let completion):
                engine.complete(completion, now: at)
            case .releasedMessage(let payload):
                let (job, leaving) = LeaseScriptCodec.parseReleasedMessage(payload)
                engine.releasedMessage(job: job, leavingMember: leaving, now: at)
            case .release(let job, let token, let reason):
                engine.release(job: job, token: token, reason: reason, now: at)
            case .withdraw(let job, let reason):
                engine.withdraw(job: job, reason: reason, now: at)
            case .rejoin(let job):
                engine.rejoin(job: job, now: at)
            case .updateJobs(let jobs, let digest):
                engine.updateJobs(jobs, catalogDigest: digest, now: at)
            case .shutdown:
                if shutdownDeadline == nil {
                    engine.beginShutdown(now: at)
                    shutdownDeadline = at + configuration.shutdownTimeout
                }
            case .releaseAll:
                for job in engine.ledJobs { engine.release(job: job, token: nil, reason: .released, now: at) }
            case .recheck:
                engine.recheckAll(now: at)
            case .wake:
                break
            }
        }
    }

    /// Waits while members or leases of the key layout before the namespace hash tag are live
    /// (an older Leasehold in the same namespace, during a rolling upgrade): the two layouts
    /// would elect two leaders. Checked once a second until none are, then never again; a
    /// Redis that cannot be asked does not hold the start up (the old layout had no Cluster
    /// support, and an unreachable Redis grants nothing anyway). Returns false when a shutdown
    /// or cancellation came first.
    private func waitForOlderLayout(on connection: RedisConnection) async -> Bool {
        let keys = configuration.keys
        var warned = false
        while !Task.isCancelled && !stopping.withLock({ $0 }) {
            let legacy = [keys.legacyMembers] + jobs.map { keys.legacyLease($0.name) }
            guard
                let reply = try? await connection.evaluate(LeaseScripts.legacyLayout, keys: legacy, arguments: []),
                let counts = reply.array, counts.count == 2, let members = counts[0].integer,
                let leases = counts[1].integer, members > 0 || leases > 0
            else {
                if warned { logger.notice("no member of the older key layout is live any more: competing for leases") }
                return true
            }
            if !warned {
                warned = true
                logger.error(
                    "members of an older Leasehold (key layout \(keys.namespace):{job}:…) are live in this namespace: not competing for any lease until they stop, since the two layouts would elect leaders independently",
                    metadata: ["live_members": "\(members)", "leases": "\(leases)"])
            }
            try? await Task.sleep(for: .seconds(1))
        }
        return false
    }

    /// Marks this member as gone at once, so the CLI and placement stop counting it live
    /// instead of waiting for its heartbeat to lapse. Best effort: Redis may be down.
    private func leave(on connection: RedisConnection) async {
        let keys = configuration.keys
        _ = try? await connection.evaluate(
            LeaseScripts.leave, keys: [keys.members, keys.member(owner.member)],
            arguments: [owner.member, owner.incarnation])
    }

    private func execute(_ command: LeaseCommand, on connection: RedisConnection, leaving: Bool) async
        -> LeaseCompletion
    {
        switch command {
        case .acquire(let id, let requests):
            let call = codec.acquireCall(requests, epoch: epochArguments())
            return .acquire(
                id: id,
                await perform(call, on: connection) { reply throws(LeaseCallFailure) in
                    let decoded = try codec.decodeAcquire(reply, count: requests.count)
                    observe(decoded.epoch, redisNowMs: decoded.redisNowMs)
                    return decoded
                })
        case .renew(let id, let batch):
            var metadata = configuration.member.metadata
            metadata["weight"] = String(configuration.member.weight)
            let call = codec.renewCall(batch, metadata: metadata, epoch: epochArguments())
            let started = ContinuousClock.now
            let result = await perform(call, on: connection) { reply throws(LeaseCallFailure) in
                let decoded = try codec.decodeRenew(reply, count: batch.leases.count)
                observe(decoded.epoch, redisNowMs: decoded.redisNowMs)
                return decoded
            }
            configuration.metrics.renewDuration.recordNanoseconds(
                Int64((ContinuousClock.now - started).secondsValue * 1e9))
            return .renew(id: id, result)
        case .release(let id, let items, let reason):
            let call = codec.releaseCall(items, reason: reason, leaving: leaving)
            return .release(
                id: id,
                await perform(call, on: connection) { reply throws(LeaseCallFailure) in
                    try codec.decodeRelease(reply, count: items.count)
                })
        case .fetchCatalog(let id, let digest):
            do {
                let reply = try await connection.send(codec.fetchCatalogCommand(digest))
                return .fetchCatalog(id: id, Result { () throws(LeaseCallFailure) in try codec.decodeCatalog(reply) })
            } catch {
                configuration.metrics.redisErrors(operation: "catalog").increment()
                return .fetchCatalog(
                    id: id, .failure(LeaseCallFailure(outcomeUnknown: false, message: error.description)))
            }
        }
    }

    /// The epoch this member saw last and the quarantine it asks for on a loss: its longest
    /// lease TTL, the longest any of its leases (and so any leader's view of one) can outlive
    /// the data.
    private func epochArguments() -> EpochArguments {
        let longest = jobs.map { $0.timing.ttl }.max() ?? .zero
        return EpochArguments(
            seen: epoch.withLock { $0?.id } ?? "", quarantineMs: max(1, Int64(longest.secondsValue * 1000)))
    }

    /// Logs and counts a data loss once per new epoch, and tracks the quarantine gauge.
    private func observe(_ reported: NamespaceEpoch?, redisNowMs: Int64) {
        guard let reported else { return }
        let previous = epoch.withLock { current -> NamespaceEpoch? in
            defer { current = reported }
            return current
        }
        let quarantineLeft = reported.quarantineUntilMs - redisNowMs
        configuration.metrics.quarantined.record(quarantineLeft > 0 ? 1 : 0)
        guard let previous, previous.id != reported.id else { return }
        configuration.metrics.redisDataLosses.increment()
        if quarantineLeft > 0 {
            logger.error(
                "Redis lost the namespace's data (its epoch changed; a restart without persistence or a flush): no lease is granted until one lease TTL has passed, so no leader of the lost data can still act",
                metadata: [
                    "namespace": "\(configuration.keys.namespace)", "quarantine_ms": "\(quarantineLeft)",
                    "epoch": "\(reported.id)", "previous_epoch": "\(previous.id)",
                ])
        } else {
            logger.error(
                "Redis lost the namespace's data (its epoch changed) more than one lease TTL ago",
                metadata: ["namespace": "\(configuration.keys.namespace)", "epoch": "\(reported.id)"])
        }
    }

    private func perform<T>(
        _ call: LeaseScriptCodec.Call, on connection: RedisConnection,
        decode: (RedisReply) throws(LeaseCallFailure) -> T
    ) async -> Result<T, LeaseCallFailure> {
        let reply: RedisReply
        do {
            let replicas = configuration.minReplicas
            if replicas > 0 {
                let timeout = configuration.replicaWaitTimeout
                let (answer, acknowledged) = try await connection.evaluate(
                    call.script, keys: call.keys, arguments: call.arguments, waitingFor: replicas, timeout: timeout)
                if acknowledged < replicas && !answer.isError {
                    // The script ran on the primary, but a failover to a replica that lacks
                    // its writes could undo them: as unknown as a timeout, never a success.
                    configuration.metrics.replicaAckShortfall(operation: call.operation).increment()
                    configuration.metrics.redisErrors(operation: call.operation).increment()
                    return .failure(
                        LeaseCallFailure(
                            outcomeUnknown: true,
                            message:
                                "\(call.operation): only \(acknowledged) of \(replicas) replicas acknowledged within \(Int64(timeout / .milliseconds(1))) ms (redis.min_replicas): not counted"
                        ))
                }
                reply = answer
            } else {
                reply = try await connection.evaluate(call.script, keys: call.keys, arguments: call.arguments)
            }
        } catch {
            configuration.metrics.redisErrors(operation: call.operation).increment()
            return .failure(
                LeaseCallFailure(
                    outcomeUnknown: error.mayHaveExecuted, message: error.description,
                    attempted: error.kind != .unavailable))
        }
        do {
            return .success(try decode(reply))
        } catch {
            configuration.metrics.redisErrors(operation: call.operation).increment()
            return .failure(error)
        }
    }

    /// Refreshes the grant snapshot handlers read, then forwards the events. The snapshot is
    /// rebuilt only when the engine's leases changed (acquire, renewal, loss, release).
    private func publish(_ events: [LeadershipEvent], engine: LeaseEngine, revision: inout Int) {
        if engine.leaseRevision != revision {
            revision = engine.leaseRevision
            var snapshot: [String: LeaseGrant] = [:]
            for lease in engine.heldLeases {
                snapshot[lease.job] = LeaseGrant(
                    job: lease.job, token: lease.token, validUntil: origin + lease.validUntil,
                    stepDownAt: origin + lease.stepDownAt)
            }
            grants.withLock { $0 = snapshot }
            if let observer = grantObserver.withLock({ $0 }) { observer(Array(snapshot.values)) }
        }
        guard !events.isEmpty else { return }
        for event in events {
            switch event {
            case .acquired(let job, let token, _, let takeover, let gap):
                guard let grant = grants.withLock({ $0[job] }), grant.token == token else { continue }
                eventSink.yield(.acquired(grant, takeover: takeover, gapMs: gap))
            case .lost(let job, let token, let reason):
                eventSink.yield(.lost(job: job, token: token, reason: reason))
            case .released(let job, let token, let reason, let confirmed):
                eventSink.yield(.released(job: job, token: token, reason: reason, confirmed: confirmed))
            case .handoffSuggested(let job, let to):
                eventSink.yield(.handoffSuggested(job: job, to: to))
            case .duplicateMember(let incarnation):
                eventSink.yield(.duplicateMember(incarnation: incarnation))
            case .redisAvailability(let up, let detail):
                eventSink.yield(.redisAvailability(up: up, detail: detail))
            case .membersChanged(let list):
                members.withLock { $0 = list }
                eventSink.yield(.membersChanged(list))
            case .jobFailure(let job, let message?):
                logger.error(
                    "cannot acquire the job: Redis refused its step (fix or delete the key)",
                    metadata: ["job": "\(job)", "error": "\(message)"])
            case .jobFailure(let job, nil):
                logger.notice("the job can be acquired again", metadata: ["job": "\(job)"])
            }
        }
    }
}
