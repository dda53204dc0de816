import Logging
import RedisClient

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// How one run of a handler ended.
package enum RunResult: String, Sendable, Hashable {
    /// The handler returned.
    case success
    /// The handler threw (for shell jobs: a non-zero exit).
    case failure
    /// `timeout:` passed and the run was cancelled.
    case timeout
    /// Leadership ended or the member shut down during the run.
    case cancelled
}

/// What a job runner needs from the member it runs in.
package struct JobRunnerEnvironment: Sendable {
    /// The lease driver (for live validity and releases).
    package var manager: LeaseManager
    /// A connection for schedule bookkeeping and fenced writes (not the lease connections).
    package var redis: RedisConnection
    /// The key schema.
    package var keys: LeaseKeys
    /// The base logger.
    package var logger: Logger
    /// Metrics.
    package var metrics: LeaseholdMetrics
    /// Called when `on_lost_leadership: exit` demands that the member exit.
    package var requestExit: @Sendable (_ job: String, _ reason: String) -> Void

    /// Creates the environment.
    package init(
        manager: LeaseManager, redis: RedisConnection, keys: LeaseKeys, logger: Logger,
        metrics: LeaseholdMetrics, requestExit: @escaping @Sendable (String, String) -> Void
    ) {
        self.manager = manager
        self.redis = redis
        self.keys = keys
        self.logger = logger
        self.metrics = metrics
        self.requestExit = requestExit
    }
}

/// Runs one job's handler while this member leads it, on the job's schedule.
///
/// Leaderships of one job run strictly one after another inside `run()`: a new leadership
/// starts only after the previous one's handler has returned, so runs never overlap.
/// Scheduled jobs keep `next_run_at` in Redis, advanced by a fenced script in the same step
/// that starts the run, so a new leader continues the schedule: no slot runs twice, a missed
/// slot runs once.
package actor JobRunner {
    /// The job.
    package nonisolated let spec: JobSpec
    private let handler: any JobHandler
    private let environment: JobRunnerEnvironment
    private let leaderships: AsyncStream<Leadership>
    private let leadershipSink: AsyncStream<Leadership>.Continuation
    /// The latest leadership handed to `run()` (it may still wait for the previous one).
    private var current: Leadership?
    private var token: UInt64?
    private var handoffRequested = false
    private var runningHandler = false

    /// One leadership: its grant, why it must stop, and when its work has ended.
    private final class Leadership: Sendable {
        let grant: LeaseGrant
        let stop = OneShot<StopReason>()
        let ended = OneShot<Void>()
        init(_ grant: LeaseGrant) { self.grant = grant }
    }

    private enum StopReason: Sendable {
        /// Leadership ended without our choice; a handler running past `validUntil` overruns.
        case lost(validUntil: ContinuousClock.Instant?)
        /// Placement or an operator moves the job.
        case handoff
        /// The member shuts down.
        case shutdown
    }

    /// Creates the runner; it does nothing until `run()` and `acquired`.
    package init(spec: JobSpec, handler: any JobHandler, environment: JobRunnerEnvironment) {
        self.spec = spec
        self.handler = handler
        self.environment = environment
        (leaderships, leadershipSink) = AsyncStream.makeStream(bufferingPolicy: .unbounded)
    }

    private var logger: Logger {
        var logger = environment.logger
        logger[metadataKey: "job"] = "\(spec.name)"
        return logger
    }

    /// Leads every leadership it is given, one after another, until `finish()`. Cancelling
    /// it stops a running handler at once and releases nothing (the lease layer abandons).
    package func run() async {
        for await leadership in leaderships {
            await lead(leadership)
            leadership.ended.fire(())
        }
        current?.ended.fire(())
    }

    /// The lease layer has stopped (every lease released or abandoned): stop what still runs
    /// and let `run()` return.
    package func finish() {
        current?.stop.fire(.shutdown)
        token = nil
        leadershipSink.finish()
    }

    /// This member became leader: start leading once any previous leadership has stopped.
    package func acquired(_ grant: LeaseGrant) {
        let leadership = Leadership(grant)
        current = leadership
        token = grant.token
        handoffRequested = false
        leadershipSink.yield(leadership)
    }

    /// Leadership ended without our choice: stop the handler now.
    package func lost(token lostToken: UInt64, validUntil: ContinuousClock.Instant?) {
        guard token == lostToken, let current else { return }
        token = nil
        let wasRunning = runningHandler
        current.stop.fire(.lost(validUntil: validUntil))
        if spec.onLostLeadership == .exit, wasRunning {
            environment.requestExit(
                spec.name, "lost leadership of '\(spec.name)' while its handler ran (on_lost_leadership: exit)")
        }
    }

    /// Placement or an operator wants the job moved: stop at the next safe point and release.
    package func handoff() {
        guard token != nil, let current else { return }
        handoffRequested = true
        // Continuous handlers are cancelled and awaited; scheduled jobs are interrupted only
        // while waiting for their next slot, never in the middle of a run.
        if case .continuous = spec.schedule {
            current.stop.fire(.handoff)
        } else if !runningHandler {
            current.stop.fire(.handoff)
        }
    }

    /// Shutdown: stop the handler, wait for it, then release the lease.
    package func stopAndRelease() async {
        let held = token
        if let current {
            current.stop.fire(.shutdown)
            // Cancelled while waiting: the handler may still act, so nothing is released.
            guard await current.ended.wait() != nil else { return }
        }
        if let held { environment.manager.release(job: spec.name, token: held, reason: .released) }
        token = nil
    }

    /// Whether a leadership task is active (for tests and status).
    package var isLeading: Bool { token != nil }

    // MARK: - Leading

    /// Runs one leadership's work until it ends by itself or its stop fires; a handler still
    /// running when a lost lease's validity ends is reported: it may act as a second leader
    /// (shell jobs are killed by their supervisor regardless).
    private func lead(_ leadership: Leadership) async {
        guard leadership.stop.value == nil else { return }
        let workDone = OneShot<Void>()
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await self.work(leadership.grant)
                workDone.fire(())
            }
            group.addTask { _ = await leadership.stop.wait() }
            await group.next()
            group.cancelAll()
            guard case .lost(let validUntil?)? = leadership.stop.value else { return }
            let stoppedInTime = await withTaskGroup(of: Bool.self) { race in
                race.addTask { await workDone.wait() != nil }
                race.addTask {
                    try? await Task.sleep(until: validUntil, clock: .continuous)
                    return false
                }
                let first = await race.next() ?? true
                race.cancelAll()
                return first
            }
            if !stoppedInTime, !Task.isCancelled {
                environment.metrics.handlerOverrun(job: spec.name).increment()
                environment.logger.error(
                    "handler still running after its validity ended: it ignores cancellation",
                    metadata: [
                        "job": "\(spec.name)", "token": "\(leadership.grant.token)",
                    ])
            }
        }
    }

    private func work(_ grant: LeaseGrant) async {
        switch spec.schedule {
        case .continuous:
            await leadContinuously(grant)
        case .every(let interval):
            await leadOnSchedule(grant) { slot, now in
                // Keep the rhythm: the next slot is a whole number of intervals after this one.
                var next = slot.addingTimeInterval(interval.secondsValue)
                if next <= now {
                    let missed = (now.timeIntervalSince(slot) / interval.secondsValue).rounded(.down)
                    next = slot.addingTimeInterval((missed + 1) * interval.secondsValue)
                }
                return next
            } first: { now in
                now
            }
        case .cron(let cron):
            await leadOnSchedule(grant) { slot, now in
                cron.nextFire(after: max(slot, now))
            } first: { now in
                cron.nextFire(after: now)
            }
        }
        if handoffRequested {
            environment.manager.release(job: spec.name, token: grant.token, reason: .handedOff)
        }
    }

    private func leadContinuously(_ grant: LeaseGrant) async {
        var backoff = Duration.seconds(1)
        while !Task.isCancelled {
            switch await beginRun(grant, slot: nil, next: nil) {
            case .started: break
            case .notHolder, .slotTaken: return
            case .failed:
                // A transient Redis error must not end this leadership's work while the lease
                // is still ours (renewals go on): try again. Losing the lease cancels us.
                try? await Task.sleep(for: Self.beginRetryDelay)
                continue
            }
            let started = ContinuousClock.now
            let result = await runHandler(grant, scheduledAt: nil)
            if Task.isCancelled { return }
            // A handler that returns while still leader is restarted, with backoff when it
            // keeps failing fast.
            if ContinuousClock.now - started > .seconds(60) { backoff = .seconds(1) }
            logger.warning(
                "continuous handler returned while still leader; restarting",
                metadata: [
                    "token": "\(grant.token)", "result": "\(result.rawValue)",
                    "restart_in": "\(CatalogValue.text(backoff))",
                ])
            try? await Task.sleep(for: backoff)
            backoff = min(backoff * 2, .seconds(30))
        }
    }

    private func leadOnSchedule(
        _ grant: LeaseGrant, next: @Sendable (Date, Date) -> Date?, first: @Sendable (Date) -> Date?
    ) async {
        while !Task.isCancelled {
            let slot: Date
            do {
                let stored = try await readNextRun()
                guard let planned = stored ?? first(Date()) else {
                    logger.warning("schedule has no future run; idling while leader")
                    try await Task.sleep(for: .seconds(3600))
                    continue
                }
                slot = planned
                let wait = slot.timeIntervalSinceNow
                if wait > 0 { try await Task.sleep(for: .milliseconds(Int64(wait * 1000))) }
            } catch is CancellationError {
                return
            } catch {
                environment.metrics.redisErrors(operation: "schedule").increment()
                logger.warning("cannot read schedule state: \(error)")
                try? await Task.sleep(for: .seconds(1))
                continue
            }
            if Task.isCancelled { return }
            guard let following = next(slot, Date()) else { return }
            switch await beginRun(grant, slot: slot, next: following) {
            case .started:
                _ = await runHandler(grant, scheduledAt: slot)
                if handoffRequested { return }
            case .slotTaken:
                continue
            case .notHolder:
                return
            case .failed:
                // As above; the loop re-reads next_run_at, so whether the failed call advanced
                // the slot (unknown outcome) is settled by Redis, and no slot runs twice.
                try? await Task.sleep(for: Self.beginRetryDelay)
                continue
            }
        }
    }

    private enum BeginOutcome { case started, slotTaken, notHolder, failed }
    /// Pause before retrying a `beginRun` that failed (Redis error or unknown outcome).
    static let beginRetryDelay: Duration = .seconds(1)

    private func beginRun(_ grant: LeaseGrant, slot: Date?, next: Date?) async -> BeginOutcome {
        let keys = environment.keys
        let expected = LeaseValue(owner: environment.manager.owner, token: grant.token).description
        do {
            let reply = try await environment.redis.evaluate(
                LeaseScripts.beginRun,
                keys: [keys.lease(spec.name), keys.state(spec.name), keys.runs(spec.name)],
                arguments: [
                    expected, slot.map(Self.milliseconds) ?? "", next.map(Self.milliseconds) ?? "",
                    environment.manager.owner.member, String(grant.token), "1000",
                ])
            switch reply.array?.first?.integer {
            case 1?: return .started
            case 2?: return .slotTaken
            case 0?:
                logger.warning("not starting a run: the lease no longer carries token \(grant.token)")
                return .notHolder
            default:
                logger.error("unexpected reply starting a run: \(reply)")
                return .failed
            }
        } catch {
            environment.metrics.redisErrors(operation: "schedule").increment()
            logger.warning("cannot start a run: \(error)")
            // Unknown whether the slot advanced: the next leadership reads it back.
            return .failed
        }
    }

    private func runHandler(_ grant: LeaseGrant, scheduledAt: Date?) async -> RunResult {
        var runLogger = logger
        runLogger[metadataKey: "token"] = "\(grant.token)"
        let manager = environment.manager
        let job = spec.name
        let context = LeaseContext(
            job: job, token: grant.token, member: manager.owner.member, instance: manager.owner.description,
            scheduledAt: scheduledAt, logger: runLogger,
            redis: FencedRedis(
                connection: environment.redis, keys: environment.keys, job: job, owner: manager.owner,
                token: grant.token),
            validUntil: grant.validUntil, currentGrant: { manager.grant(for: job) })
        runningHandler = true
        defer { runningHandler = false }
        let started = ContinuousClock.now
        let handler = self.handler
        let timeout = spec.timeout
        let result: RunResult
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await handler.run(context) }
                if let timeout {
                    group.addTask {
                        try await Task.sleep(for: timeout)
                        throw RunTimedOut()
                    }
                }
                try await group.next()
                group.cancelAll()
            }
            result = Task.isCancelled ? .cancelled : .success
        } catch is RunTimedOut {
            result = .timeout
        } catch {
            result = Task.isCancelled || error is CancellationError ? .cancelled : .failure
            if result == .failure { runLogger.error("run failed: \(error)") }
        }
        let elapsed = ContinuousClock.now - started
        environment.metrics.jobRuns(job: job, result: result.rawValue).increment()
        environment.metrics.jobRunDuration(job: job).recordNanoseconds(Int64(elapsed.secondsValue * 1e9))
        runLogger.info(
            "run ended", metadata: ["result": "\(result.rawValue)", "duration": "\(CatalogValue.text(elapsed))"])
        await finishRun(grant, result: result, elapsed: elapsed)
        return result
    }

    private func finishRun(_ grant: LeaseGrant, result: RunResult, elapsed: Duration) async {
        let keys = environment.keys
        let expected = LeaseValue(owner: environment.manager.owner, token: grant.token).description
        do {
            _ = try await environment.redis.evaluate(
                LeaseScripts.finishRun, keys: [keys.lease(spec.name), keys.state(spec.name)],
                arguments: [expected, result.rawValue, String(elapsed.wholeMilliseconds)])
        } catch {
            environment.metrics.redisErrors(operation: "schedule").increment()
            logger.warning("cannot record the end of a run: \(error)")
        }
    }

    private func readNextRun() async throws -> Date? {
        let reply = try await environment.redis.send(["HGET", environment.keys.state(spec.name), "next_run_at"])
        if case .error(let text) = reply { throw RedisError(kind: .server, message: text) }
        guard let ms = reply.integer else { return nil }
        return Date(timeIntervalSince1970: Double(ms) / 1000)
    }

    private static func milliseconds(_ date: Date) -> String {
        String(Int64((date.timeIntervalSince1970 * 1000).rounded()))
    }
}

private struct RunTimedOut: Error {}
