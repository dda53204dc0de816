import Logging
import RedisClient
import Synchronization

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
    /// When the member loaded (or reloaded) its catalog, wall-clock ms: after a schedule edit
    /// the newest loaded catalog's schedule wins (`SchedulePlan`).
    package var catalogLoadedAtMs: Int64

    /// Creates the environment; `catalogLoadedAtMs` defaults to now (a catalog just loaded).
    package init(
        manager: LeaseManager, redis: RedisConnection, keys: LeaseKeys, logger: Logger,
        metrics: LeaseholdMetrics, requestExit: @escaping @Sendable (String, String) -> Void,
        catalogLoadedAtMs: Int64 = JobSchedule.milliseconds(Date())
    ) {
        self.manager = manager
        self.redis = redis
        self.keys = keys
        self.logger = logger
        self.metrics = metrics
        self.requestExit = requestExit
        self.catalogLoadedAtMs = catalogLoadedAtMs
    }
}

/// Runs one job's handler while this member leads it, on the job's schedule.
///
/// Leaderships of one job run strictly one after another inside `run()`: a new leadership
/// starts only after the previous one's handler has returned, so runs never overlap.
/// Scheduled jobs keep `next_run_at` in Redis, advanced by a fenced script in the same step
/// that starts the run, so a new leader continues the schedule: no slot runs twice, a missed
/// slot runs once. Beside it the state keeps which schedule computed it and from which
/// catalog load, so an edited schedule takes effect at once (`SchedulePlan`).
package actor JobRunner {
    /// The job.
    package nonisolated let spec: JobSpec
    private let handler: any JobHandler
    private let environment: JobRunnerEnvironment
    /// The latest leadership (it may still wait for the previous one to end).
    private var current: Leadership?
    /// Set by `finish()`: a leadership handed in later stops at once.
    private var finished = false
    private var token: UInt64?
    /// Why each recently lost leadership ended, by token: read synchronously by a running
    /// handler's context (a shell job's supervisor deadline depends on it).
    private nonisolated let lossReasons = LossReasons()
    private var handoffRequested = false
    private var runningHandler = false
    /// Retired by a catalog change at a safe point: a scheduled job ends its leadership
    /// after the run in progress.
    private var retireAfterRun = false
    /// The newer stored schedule this runner last said it follows, so it says so once.
    private var followedFingerprint: String?
    /// Fired and replaced by `control()`. A loop takes the current one *before* it reads the
    /// state, so a message that arrives during the read wakes its next wait at once.
    private var controlWake = OneShot<Void>()
    /// Whether the paused state was last exported as paused (to log changes once).
    private var lastSeenPaused: Bool?

    /// One leadership: its grant, why it must stop, and when its work has ended. The member
    /// leads it in a task of its own (`lead(_:)`) that exists only while it lasts, so a job
    /// this member does not lead costs no task at all.
    package final class Leadership: Sendable {
        let grant: LeaseGrant
        let stop = OneShot<StopReason>()
        let ended = OneShot<Void>()
        /// The previous leadership's end: a new one starts only once the old work has stopped.
        let after: OneShot<Void>?
        init(_ grant: LeaseGrant, after: OneShot<Void>?) {
            self.grant = grant
            self.after = after
        }
    }

    enum StopReason: Sendable {
        /// Leadership ended without our choice; a handler running past `validUntil` overruns.
        case lost(validUntil: ContinuousClock.Instant?)
        /// Placement or an operator moves the job.
        case handoff
        /// The member shuts down.
        case shutdown
    }

    /// Creates the runner; it does nothing until `acquired(_:)` hands out a leadership to `lead(_:)`.
    package init(spec: JobSpec, handler: any JobHandler, environment: JobRunnerEnvironment) {
        self.spec = spec
        self.handler = handler
        self.environment = environment
    }

    private var logger: Logger {
        var logger = environment.logger
        logger[metadataKey: "job"] = "\(spec.name)"
        return logger
    }

    /// The lease layer has stopped (every lease released or abandoned): stop what still runs.
    package func finish() {
        finished = true
        current?.stop.fire(.shutdown)
        token = nil
    }

    /// This member became leader: the caller leads the returned leadership with `lead(_:)`
    /// in a task of its own; it starts once any previous leadership has stopped.
    package func acquired(_ grant: LeaseGrant) -> Leadership {
        let leadership = Leadership(grant, after: current?.ended)
        current = leadership
        if finished {
            leadership.stop.fire(.shutdown)
            return leadership
        }
        token = grant.token
        handoffRequested = false
        return leadership
    }

    /// Leadership ended without our choice: stop the handler now.
    package func lost(token lostToken: UInt64, validUntil: ContinuousClock.Instant?, reason: LossReason = .expired) {
        guard token == lostToken, let current else { return }
        lossReasons.record(reason, token: lostToken)
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

    /// The catalog changed or dropped this job: stop the handler (now, or with
    /// `atSafePoint` after a scheduled run in progress) and wait until it has returned. Nothing
    /// is released: the lease stays with the member (a changed job's new runner takes it up;
    /// a removed job's lease is given back by the lease layer). A leadership handed in later
    /// stops at once; a loss meanwhile still stops the handler at once.
    package func retire(atSafePoint: Bool) async {
        finished = true
        guard let current else { return }
        if atSafePoint, runningHandler, spec.schedule != .continuous {
            retireAfterRun = true
        } else {
            current.stop.fire(.shutdown)
        }
        _ = await current.ended.wait()
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

    /// An operator paused, resumed or triggered the job (or a control message may have been
    /// lost): the leadership re-reads the job's state now instead of at its next poll or slot.
    package func control() {
        let fired = controlWake
        controlWake = OneShot()
        fired.fire(())
    }

    /// Whether a leadership task is active (for tests and status).
    package var isLeading: Bool { token != nil }

    // MARK: - Leading

    /// Leads one leadership (from `acquired(_:)`) once the previous one has ended, until its
    /// work ends by itself or its stop fires. Cancelling it stops a running handler at once and
    /// releases nothing (the lease layer abandons).
    package func lead(_ leadership: Leadership) async {
        defer { leadership.ended.fire(()) }
        if let after = leadership.after, await after.wait() == nil { return }
        guard leadership.stop.value == nil else { return }
        let grant = leadership.grant
        switch spec.schedule {
        case .continuous:
            _ = await runUntilStopped(leadership) { await self.leadContinuously(grant, leadership) }
        case .every, .cron:
            await leadOnSchedule(leadership)
        }
        if handoffRequested {
            environment.manager.release(job: spec.name, token: grant.token, reason: .handedOff)
        }
    }

    /// Runs `body` in a child task until it returns or the leadership's stop fires (then the
    /// child is cancelled); nil when the stop came first. A handler still running when a lost
    /// lease's validity ends is reported: it may act as a second leader (shell jobs are killed
    /// by their supervisor regardless).
    private func runUntilStopped<T: Sendable>(
        _ leadership: Leadership, _ body: @escaping @Sendable () async -> T
    ) async -> T? {
        let result = OneShot<T>()
        let wake = OneShot<Void>()
        let observer = leadership.stop.onFire { _ in wake.fire(()) }
        defer { leadership.stop.removeObserver(observer) }
        return await withTaskGroup(of: Void.self) { group in
            group.addTask {
                result.fire(await body())
                wake.fire(())
            }
            _ = await wake.wait()
            if let value = result.value { return value }
            group.cancelAll()
            let stoppedAt = ContinuousClock.now
            var validUntil: ContinuousClock.Instant?
            if case .lost(let until?)? = leadership.stop.value {
                validUntil = until
                if case .timedOut = await result.wait(until: until), !Task.isCancelled {
                    environment.metrics.handlerOverrun(job: spec.name).increment()
                    environment.logger.error(
                        "handler still running after its validity ended: it ignores cancellation",
                        metadata: [
                            "job": "\(spec.name)", "token": "\(leadership.grant.token)",
                        ])
                }
            }
            // A handler that still has not returned a lease TTL after it had to stop (or after
            // its validity ended) is stuck: the next leadership here would wait for it forever
            // while this member kept the lease, so the job could run nowhere. Withdraw from
            // the job until the handler returns, so another member leads it.
            let stuckAt = max(validUntil ?? stoppedAt, stoppedAt) + spec.lease
            if case .timedOut = await result.wait(until: stuckAt), !Task.isCancelled {
                await withdrawWhileStuck(leadership) { await group.waitForAll() }
            }
            return nil
        }
    }

    /// Marks the job's handler stuck, withdraws this member from the job, waits in `handlerEnds`
    /// for the handler to return at last, then competes again.
    private func withdrawWhileStuck(_ leadership: Leadership, until handlerEnds: () async -> Void) async {
        let metadata: Logger.Metadata = ["job": "\(spec.name)", "token": "\(leadership.grant.token)"]
        environment.metrics.handlerStuck(job: spec.name).record(1)
        environment.logger.error(
            "handler stuck: it has not returned a lease TTL after it was told to stop; releasing the job and not competing for it until it returns",
            metadata: metadata)
        environment.manager.withdraw(job: spec.name)
        if spec.onLostLeadership == .exit {
            environment.requestExit(
                spec.name, "the handler of '\(spec.name)' is stuck (on_lost_leadership: exit)")
        }
        await handlerEnds()
        environment.metrics.handlerStuck(job: spec.name).record(0)
        environment.logger.notice("stuck handler returned; competing for the job again", metadata: metadata)
        environment.manager.rejoin(job: spec.name)
    }

    /// Waits `duration` unless the leadership stops first: false when it stopped (or this task
    /// was cancelled). No task sleeps: a thousand jobs waiting for their next slot cost a
    /// thousand timers.
    private func pause(_ leadership: Leadership, for duration: Duration) async -> Bool {
        if case .timedOut = await leadership.stop.wait(until: .now + duration) { return true }
        return false
    }

    /// What ended a wait.
    private enum Wake { case stopped, control, timedOut }

    /// Waits until `deadline`, the leadership's stop, this task's cancellation, or `control`
    /// (taken from `controlWake` before the state was read) fires. Timers only, no task.
    private func wait(
        _ leadership: Leadership, until deadline: ContinuousClock.Instant, control: OneShot<Void>
    ) async -> Wake {
        if leadership.stop.value != nil || Task.isCancelled { return .stopped }
        if control.value != nil { return .control }
        let wake = OneShot<Void>()
        let onStop = leadership.stop.onFire { _ in wake.fire(()) }
        let onControl = control.onFire { _ in wake.fire(()) }
        defer {
            leadership.stop.removeObserver(onStop)
            control.removeObserver(onControl)
        }
        switch await wake.wait(until: deadline) {
        case .cancelled: return .stopped
        case .timedOut, .fired:
            if leadership.stop.value != nil || Task.isCancelled { return .stopped }
            return control.value != nil ? .control : .timedOut
        }
    }

    /// Exports what the leader read of the job's state and says once when the pause changes.
    private func noteState(_ stored: StoredSchedule) {
        let metrics = environment.metrics
        metrics.jobPaused(job: spec.name).record(stored.paused ? 1 : 0)
        if let success = stored.lastSuccessAtMs {
            metrics.lastSuccessTimestamp(job: spec.name).record(Double(success) / 1000)
        }
        if lastSeenPaused != stored.paused {
            if stored.paused {
                logger.notice("job is paused: no run starts until it is resumed (a forced trigger still runs)")
            } else if lastSeenPaused == true {
                logger.notice("job resumed")
            }
            lastSeenPaused = stored.paused
        }
    }

    /// Reads the state for a loop that must not give up on a transient error: nil only when
    /// stopped or cancelled (errors are counted, logged and retried after a second).
    private func readState(_ leadership: Leadership?) async -> StoredSchedule? {
        while true {
            switch await transient({ try await self.readSchedule() }) {
            case .success(let stored):
                noteState(stored)
                return stored
            case .failure(let error):
                if error is CancellationError || Task.isCancelled || leadership?.stop.value != nil { return nil }
                environment.metrics.redisErrors(operation: "schedule").increment()
                logger.warning("cannot read the job's state: \(error)")
                if let leadership {
                    guard case .timedOut = await wait(leadership, until: .now + .seconds(1), control: OneShot())
                    else { return nil }
                } else {
                    try? await Task.sleep(for: .seconds(1))
                }
            }
        }
    }

    private func leadContinuously(_ grant: LeaseGrant, _ leadership: Leadership) async {
        var backoff = Duration.seconds(1)
        while !Task.isCancelled {
            let control = controlWake
            guard let stored = await readState(leadership) else { return }
            if stored.paused, !stored.triggerRunnable {
                // Paused: keep the lease (resume is immediate) and look again every renew
                // interval, in case a resume's message was lost.
                if await wait(leadership, until: .now + spec.renewEvery, control: control) == .stopped { return }
                continue
            }
            let trigger: RunTrigger = stored.triggerRequestedMs != nil ? .manual : .schedule
            let startedMs: String
            switch await beginRun(grant, slot: nil, next: nil, schedule: nil, trigger: trigger, attempt: 1) {
            case .started(let at): startedMs = at
            case .notHolder: return
            case .slotTaken, .paused: continue
            case .failed:
                // A transient Redis error must not end this leadership's work while the lease
                // is still ours (renewals go on): try again. Losing the lease cancels us.
                try? await Task.sleep(for: Self.beginRetryDelay)
                continue
            }
            let started = ContinuousClock.now
            let forced = stored.paused
            let (result, pausedNow) = await runUntilPaused(
                grant, startedMs: startedMs, trigger: trigger, forced: forced, control: control)
            if Task.isCancelled { return }
            if pausedNow {
                logger.notice("paused: handler stopped; keeping the lease so a resume restarts it at once")
                continue
            }
            // A forced run while paused runs once: the loop sees the pause and waits.
            if forced { continue }
            // A handler that returns while still leader is restarted, with backoff when it
            // keeps failing fast.
            if ContinuousClock.now - started > .seconds(60) { backoff = .seconds(1) }
            logger.warning(
                "continuous handler returned while still leader; restarting",
                metadata: [
                    "token": "\(grant.token)", "result": "\(result.rawValue)",
                    "restart_in": "\(CatalogValue.text(backoff))",
                ])
            if await wait(leadership, until: .now + backoff, control: controlWake) == .stopped { return }
            backoff = min(backoff * 2, .seconds(30))
        }
    }

    /// Runs a continuous handler until it returns, or until a control message shows the job
    /// paused (then it is cancelled and awaited, as a handoff does, but the lease stays).
    /// `control` was taken before the state that allowed the start was read, so a pause
    /// published meanwhile is not missed. A forced run is not stopped by the pause it ran in.
    private func runUntilPaused(
        _ grant: LeaseGrant, startedMs: String, trigger: RunTrigger, forced: Bool, control: OneShot<Void>
    ) async -> (RunResult, paused: Bool) {
        enum Ended: Sendable {
            case ran(RunResult)
            case paused
        }
        return await withTaskGroup(of: Ended.self) { group in
            group.addTask {
                .ran(
                    await self.runHandler(
                        grant, scheduledAt: nil, startedMs: startedMs, attempt: 1, trigger: trigger, slotMs: nil,
                        nextSlotMs: nil))
            }
            if !forced {
                group.addTask {
                    var wake = control
                    while await wake.wait() != nil {
                        wake = await self.controlWake
                        guard let stored = await self.readState(nil) else { break }
                        if stored.paused { return .paused }
                    }
                    // Cancelled: the handler returned first.
                    return .ran(.cancelled)
                }
            }
            let first = await group.next()!
            group.cancelAll()
            var result: RunResult = .cancelled
            if case .ran(let ran) = first { result = ran }
            while let next = await group.next() {
                if case .ran(let ran) = next, case .paused = first { result = ran }
            }
            if case .paused = first { return (result, true) }
            return (result, false)
        }
    }

    /// Leads a scheduled job in the leadership's own task: read the schedule state, settle
    /// which schedule applies (adopting this member's when its catalog is the newest), wait
    /// for the slot, start and run it. Between slots nothing but that task and a timer exists;
    /// the Redis calls and the run happen in short-lived child tasks, because a task keeps its
    /// stack slabs until it ends and a thousand jobs waiting for their next hour would
    /// otherwise each hold the high-water mark of a run.
    private func leadOnSchedule(_ leadership: Leadership) async {
        let grant = leadership.grant
        // The fingerprint an adoption was refused from: refused again from the same one, the
        // state did not move, so it was the lease that did.
        var refusedFrom: String?
        while leadership.stop.value == nil, !Task.isCancelled {
            let control = controlWake
            guard let stored = await readState(leadership) else { return }
            let plan = SchedulePlan(
                own: spec.schedule, loadedAtMs: environment.catalogLoadedAtMs, stored: stored,
                nowMs: JobSchedule.milliseconds(Date()))
            if let adoption = plan.adoption {
                switch await transient({ await self.adoptSchedule(grant, plan: plan, adoption: adoption) }) {
                case .written?:
                    refusedFrom = nil
                case .refused?:
                    if refusedFrom == adoption.expectedFingerprint {
                        logger.warning("not adopting the schedule: the lease no longer carries token \(grant.token)")
                        return
                    }
                    refusedFrom = adoption.expectedFingerprint
                    continue
                case nil:
                    guard await pause(leadership, for: Self.beginRetryDelay) else { return }
                    continue
                }
            }
            noteFollowing(plan)
            let step: ScheduledStep
            if stored.triggerRunnable {
                // A manual run comes first, at this safe point; it does not move the schedule.
                step = await startAndRun(
                    leadership, trigger: .manual, slotMs: nil, next: nil, plan: plan, attempt: 1,
                    nextSlotMs: plan.slotMs)
            } else if stored.paused {
                // Waiting while paused: re-read every renew interval in case a message is lost.
                if await wait(leadership, until: .now + spec.renewEvery, control: control) == .stopped { return }
                continue
            } else if let slotMs = plan.slotMs {
                step = await leadSlot(leadership, slotMs: slotMs, plan: plan, stored: stored, control: control)
            } else {
                logger.warning("schedule has no future run; idling while leader")
                if await wait(leadership, until: .now + .seconds(3600), control: control) == .stopped { return }
                continue
            }
            switch step {
            case .stop: return
            case .again: continue
            case .retryLater:
                // As above; the loop re-reads next_run_at, so whether the failed call advanced
                // the slot (unknown outcome) is settled by Redis, and no slot runs twice.
                guard await pause(leadership, for: Self.beginRetryDelay) else { return }
            }
        }
    }

    /// What the scheduled loop does after one step.
    private enum ScheduledStep { case again, stop, retryLater }

    /// One step towards the stored slot: skip it (and later ones) past its starting deadline,
    /// run a pending retry that comes before it, or wait for its jittered start and run it.
    /// A control message during a wait ends the step, so the loop re-reads the state.
    private func leadSlot(
        _ leadership: Leadership, slotMs: Int64, plan: SchedulePlan, stored: StoredSchedule, control: OneShot<Void>
    ) async -> ScheduledStep {
        let nowMs = JobSchedule.milliseconds(Date())
        let decision = SlotPlan.decide(
            job: spec.name, schedule: plan.schedule, slotMs: slotMs, jitter: spec.jitter,
            deadline: spec.startingDeadline, nowMs: nowMs)
        let startMs: Int64
        switch decision {
        case .skip(let missed, let count, let next):
            guard let next else {
                logger.warning("schedule has no future run; idling while leader")
                return await wait(leadership, until: .now + .seconds(3600), control: control) == .stopped
                    ? .stop : .again
            }
            return await skip(leadership.grant, from: slotMs, to: next, missed: missed, count: count, plan: plan)
        case .run(_, let start):
            startMs = start
        }
        // A pending retry runs before the slot, never after its time (then the slot drops it).
        if let attempt = stored.retryAttempt, nowMs < slotMs {
            let retryAt = stored.retryAtMs ?? nowMs
            if retryAt < slotMs {
                environment.metrics.nextRunTimestamp(job: spec.name).record(Double(retryAt) / 1000)
                if let step = await waitUntil(retryAt, nowMs: nowMs, leadership, control: control) { return step }
                if JobSchedule.milliseconds(Date()) >= slotMs { return .again }
                return await startAndRun(
                    leadership, trigger: .retry, slotMs: stored.retrySlotMs, next: nil, plan: plan, attempt: attempt,
                    nextSlotMs: slotMs)
            }
        }
        environment.metrics.nextRunTimestamp(job: spec.name).record(Double(startMs) / 1000)
        if let step = await waitUntil(startMs, nowMs: nowMs, leadership, control: control) { return step }
        guard let following = plan.schedule.slotMs(after: slotMs, nowMs: JobSchedule.milliseconds(Date())) else {
            return .stop
        }
        return await startAndRun(
            leadership, trigger: .schedule, slotMs: slotMs, next: following, plan: plan, attempt: 1,
            nextSlotMs: following)
    }

    /// Waits until wall-clock `targetMs` (if it lies ahead of `nowMs`); nil when it came, else
    /// what the slot loop does instead: stop, or read the state again after a control message.
    private func waitUntil(
        _ targetMs: Int64, nowMs: Int64, _ leadership: Leadership, control: OneShot<Void>
    ) async -> ScheduledStep? {
        guard targetMs > nowMs else { return nil }
        switch await wait(leadership, until: .now + .milliseconds(targetMs - nowMs), control: control) {
        case .stopped: return .stop
        case .control: return .again
        case .timedOut: return nil
        }
    }

    /// Starts one run of a scheduled job (fenced, consuming a retry or trigger) and runs it.
    private func startAndRun(
        _ leadership: Leadership, trigger: RunTrigger, slotMs: Int64?, next: Int64?, plan: SchedulePlan,
        attempt: Int, nextSlotMs: Int64?
    ) async -> ScheduledStep {
        let grant = leadership.grant
        let outcome = await runUntilStopped(leadership) { () async -> BeginOutcome in
            let outcome = await self.beginRun(
                grant, slot: slotMs.map { String($0) }, next: next.map { String($0) }, schedule: plan.fingerprint,
                trigger: trigger, attempt: attempt)
            if case .started(let startedMs) = outcome {
                _ = await self.runHandler(
                    grant, scheduledAt: slotMs.map(JobSchedule.date), startedMs: startedMs, attempt: attempt,
                    trigger: trigger, slotMs: slotMs, nextSlotMs: nextSlotMs)
            }
            return outcome
        }
        switch outcome {
        case nil, .notHolder?:
            return .stop
        case .started?:
            return handoffRequested || retireAfterRun ? .stop : .again
        case .slotTaken?, .paused?:
            return .again
        case .failed?:
            return .retryLater
        }
    }

    /// Records slots past their starting deadline as missed and moves the schedule on.
    private func skip(
        _ grant: LeaseGrant, from slotMs: Int64, to next: Int64, missed: [Int64], count: Int, plan: SchedulePlan
    ) async -> ScheduledStep {
        let keys = environment.keys
        let expected = LeaseValue(owner: environment.manager.owner, token: grant.token).description
        let deadline = spec.startingDeadline?.wholeMilliseconds ?? 0
        let reply = await transient { [environment, spec] in
            try await environment.redis.evaluate(
                LeaseScripts.skipSlots, keys: [keys.lease(spec.name), keys.state(spec.name), keys.events(spec.name)],
                arguments: [
                    expected, plan.fingerprint, String(slotMs), String(next), environment.manager.owner.member,
                    String(grant.token), "1000", String(deadline),
                ] + missed.map { String($0) })
        }
        switch reply {
        case .success(let reply):
            switch reply.integer {
            case 1?:
                environment.metrics.missedSlots(job: spec.name).increment(by: Int64(count))
                logger.warning(
                    "skipped \(count) slot(s) that could not start within starting_deadline",
                    metadata: [
                        "first_missed": "\(Self.timestamp(slotMs))", "next_run": "\(Self.timestamp(next))",
                        "starting_deadline": "\(spec.startingDeadline.map(CatalogValue.text) ?? "-")",
                    ])
                return .again
            case 2?: return .again
            case 0?:
                logger.warning("not skipping slots: the lease no longer carries token \(grant.token)")
                return .stop
            default:
                logger.error("unexpected reply skipping slots: \(reply)")
                return .retryLater
            }
        case .failure(let error):
            if error is CancellationError || Task.isCancelled { return .stop }
            environment.metrics.redisErrors(operation: "schedule").increment()
            logger.warning("cannot skip missed slots: \(error)")
            return .retryLater
        }
    }

    /// Says once that this member follows a newer catalog's stored schedule instead of its own.
    private func noteFollowing(_ plan: SchedulePlan) {
        guard plan.source == .followed else {
            followedFingerprint = nil
            return
        }
        guard followedFingerprint != plan.fingerprint else { return }
        followedFingerprint = plan.fingerprint
        logger.notice(
            "following a newer catalog's schedule: next run at \(Self.timestamp(plan.slotMs))",
            metadata: [
                "schedule": "\(plan.fingerprint)", "own_schedule": "\(spec.schedule.fingerprint ?? "")",
                "catalog_loaded_at": "\(environment.catalogLoadedAtMs)",
            ])
    }

    /// Runs `body` in a child task that ends with it (cancelled with this one), so the deep
    /// frames of a Redis call or a run do not stay in the caller's task allocator.
    private func transient<T: Sendable>(_ body: @escaping @Sendable () async -> T) async -> T {
        await withTaskGroup(of: T.self) { group in
            group.addTask(operation: body)
            return await group.next()!
        }
    }

    /// The throwing form: the error (or the value) comes back as a `Result`.
    private func transient<T: Sendable>(
        _ body: @escaping @Sendable () async throws -> T
    ) async -> Result<T, any Error> {
        await transient { () async -> Result<T, any Error> in
            do { return .success(try await body()) } catch { return .failure(error) }
        }
    }

    private enum BeginOutcome: Sendable {
        /// Started at this Redis time (ms).
        case started(String)
        case slotTaken, notHolder, failed
        /// Refused: the job is paused.
        case paused
    }
    private enum AdoptOutcome: Sendable { case written, refused }
    /// Pause before retrying a `beginRun` that failed (Redis error or unknown outcome).
    static let beginRetryDelay: Duration = .seconds(1)

    /// Starts a run (`slot`, `next` and `schedule` are nil for continuous jobs; `slot` is the
    /// failed run's slot for a retry, nil for a manual run).
    private func beginRun(
        _ grant: LeaseGrant, slot: String?, next: String?, schedule: String?, trigger: RunTrigger, attempt: Int
    ) async -> BeginOutcome {
        let keys = environment.keys
        let expected = LeaseValue(owner: environment.manager.owner, token: grant.token).description
        do {
            let reply = try await environment.redis.evaluate(
                LeaseScripts.beginRun,
                keys: [keys.lease(spec.name), keys.state(spec.name), keys.runs(spec.name)],
                arguments: [
                    expected, slot ?? "", next ?? "", environment.manager.owner.member, String(grant.token), "1000",
                    schedule ?? "", trigger.rawValue, String(attempt),
                ])
            switch reply.array?.first?.integer {
            case 1?:
                let startedMs = reply.array?.dropFirst().first?.string ?? ""
                if trigger == .retry { environment.metrics.jobRetries(job: spec.name).increment() }
                if trigger != .schedule {
                    logger.notice(
                        trigger == .retry ? "retrying a failed run" : "starting a manual run",
                        metadata: ["attempt": "\(attempt)", "trigger": "\(trigger.rawValue)"])
                }
                return .started(startedMs)
            case 2?: return .slotTaken
            case 3?: return .paused
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

    /// Runs the handler once and records its end; a failed try of a scheduled job leaves a
    /// retry behind in the state (`retry:`) when one fits before `nextSlotMs`.
    private func runHandler(
        _ grant: LeaseGrant, scheduledAt: Date?, startedMs: String, attempt: Int, trigger: RunTrigger, slotMs: Int64?,
        nextSlotMs: Int64?
    ) async -> RunResult {
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
            validUntil: grant.validUntil, currentGrant: { manager.grant(for: job) },
            lossReason: { [lossReasons, token = grant.token] in lossReasons.reason(token: token) }, attempt: attempt,
            trigger: trigger)
        runLogger[metadataKey: "attempt"] = "\(attempt)"
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
        var retry: (attempt: Int, atMs: Int64)?
        if result == .failure || result == .timeout, spec.schedule != .continuous,
            let at = SlotPlan.retryAtMs(
                failedAttempt: attempt, finishedMs: JobSchedule.milliseconds(Date()), policy: spec.retry,
                nextSlotMs: nextSlotMs)
        {
            retry = (attempt + 1, at)
            runLogger.notice(
                "run failed: retrying", metadata: ["next_attempt": "\(attempt + 1)", "at": "\(Self.timestamp(at))"])
        } else if result == .success {
            environment.metrics.lastSuccessTimestamp(job: job).record(Date().timeIntervalSince1970)
        }
        await finishRun(
            grant, result: result, elapsed: elapsed,
            record: [slotMs.map { String($0) } ?? "", startedMs, String(attempt), trigger.rawValue],
            retry: retry.map { [String($0.attempt), String($0.atMs), slotMs.map { String($0) } ?? ""] } ?? ["", "", ""])
        return result
    }

    /// `record`: slot, started ms, attempt, trigger; `retry`: attempt, retry_at, retry_slot ('' for none).
    private func finishRun(
        _ grant: LeaseGrant, result: RunResult, elapsed: Duration, record: [String], retry: [String]
    ) async {
        let keys = environment.keys
        let expected = LeaseValue(owner: environment.manager.owner, token: grant.token).description
        do {
            _ = try await environment.redis.evaluate(
                LeaseScripts.finishRun,
                keys: [keys.lease(spec.name), keys.state(spec.name), keys.runs(spec.name)],
                arguments: [
                    expected, result.rawValue, String(elapsed.wholeMilliseconds), record[0], String(grant.token),
                    environment.manager.owner.member, record[1], record[2], record[3], "1000",
                ] + retry)
        } catch {
            environment.metrics.redisErrors(operation: "schedule").increment()
            logger.warning("cannot record the end of a run: \(error)")
        }
    }

    /// Writes the plan's schedule (fenced, and only over the state it was decided from); nil
    /// when the call failed (unknown outcome: the loop reads the state back).
    private func adoptSchedule(
        _ grant: LeaseGrant, plan: SchedulePlan, adoption: SchedulePlan.Adoption
    ) async -> AdoptOutcome? {
        let keys = environment.keys
        let expected = LeaseValue(owner: environment.manager.owner, token: grant.token).description
        do {
            let reply = try await environment.redis.evaluate(
                LeaseScripts.adoptSchedule, keys: [keys.lease(spec.name), keys.state(spec.name)],
                arguments: [
                    expected, adoption.expectedFingerprint, plan.fingerprint, String(adoption.sinceMs),
                    String(adoption.nextRunAtMs),
                ])
            switch reply.integer {
            case 1?: break
            case 0?: return .refused
            default:
                logger.error("unexpected reply adopting a schedule: \(reply)")
                return nil
            }
        } catch {
            environment.metrics.redisErrors(operation: "schedule").increment()
            logger.warning("cannot adopt the schedule: \(error)")
            return nil
        }
        if case .adopted(let previous) = plan.source {
            logger.notice(
                "schedule changed: next run at \(Self.timestamp(adoption.nextRunAtMs)) (was \(Self.timestamp(previous)))",
                metadata: [
                    "schedule": "\(plan.fingerprint)", "previous_schedule": "\(adoption.expectedFingerprint)",
                    "catalog_loaded_at": "\(adoption.sinceMs)",
                ])
        }
        return .written
    }

    /// The schedule fields of the state hash, in one HMGET.
    private func readSchedule() async throws -> StoredSchedule {
        let reply = try await environment.redis.send(
            ["HMGET", environment.keys.state(spec.name)] + StoredSchedule.fields)
        if case .error(let text) = reply { throw RedisError(kind: .server, message: text) }
        guard let values = reply.array else {
            throw RedisError(kind: .protocolError, message: "unexpected reply to HMGET: \(reply)")
        }
        return StoredSchedule(fields: values.map(\.string))
    }

    /// A slot for log lines: UTC, to the millisecond; "none" when there is none.
    private static func timestamp(_ ms: Int64?) -> String {
        guard let ms else { return "none" }
        return JobSchedule.date(ms).formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }
}

private struct RunTimedOut: Error {}

/// Why recently lost leaderships ended, by token (a box, so a handler's context can read it
/// synchronously from any thread).
private final class LossReasons: Sendable {
    private let reasons = Mutex<[UInt64: LossReason]>([:])

    /// Records why the leadership with `token` ended; older entries go (they ended long ago).
    func record(_ reason: LossReason, token: UInt64) {
        reasons.withLock { reasons in
            reasons = reasons.filter { $0.key >= token }
            reasons[token] = reason
        }
    }

    /// Why the leadership with `token` ended, if it did.
    func reason(token: UInt64) -> LossReason? { reasons.withLock { $0[token] } }
}
