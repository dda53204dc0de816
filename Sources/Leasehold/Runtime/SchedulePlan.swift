#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// A job's schedule and control state in its Redis state hash, as one HMGET reads it.
package struct StoredSchedule: Sendable, Hashable {
    /// `next_run_at`: the next slot, ms since the epoch.
    package var nextRunAtMs: Int64?
    /// `schedule`: the fingerprint of the schedule that computed `next_run_at` (nil when absent or empty).
    package var fingerprint: String?
    /// `schedule_since`: the catalog load time (wall ms) of the member that wrote `schedule`.
    package var sinceMs: Int64?
    /// `last_run_slot`: the slot of the last run started (nil for none, or for a continuous run).
    package var lastRunSlotMs: Int64?
    /// `paused` = "1": an operator paused the job.
    package var paused = false
    /// `trigger_requested`: when an operator asked for a manual run still pending (Redis ms).
    package var triggerRequestedMs: Int64?
    /// `trigger_forced` = "1": the pending trigger runs even while paused.
    package var triggerForced = false
    /// `retry_attempt`: the try number (>= 2) of a pending retry.
    package var retryAttempt: Int?
    /// `retry_at`: when the pending retry starts (ms since the epoch).
    package var retryAtMs: Int64?
    /// `retry_slot`: the slot the pending retry tries again (nil for a manual run's retry).
    package var retrySlotMs: Int64?
    /// `last_success_at`: when a run last succeeded (Redis ms).
    package var lastSuccessAtMs: Int64?

    /// Creates the state (all absent by default: a job that never ran).
    package init(
        nextRunAtMs: Int64? = nil, fingerprint: String? = nil, sinceMs: Int64? = nil, lastRunSlotMs: Int64? = nil
    ) {
        self.nextRunAtMs = nextRunAtMs
        self.fingerprint = fingerprint.flatMap { $0.isEmpty ? nil : $0 }
        self.sinceMs = sinceMs
        self.lastRunSlotMs = lastRunSlotMs
    }

    /// The fields to HMGET, in the order `init(fields:)` reads them.
    package static let fields = [
        "next_run_at", "schedule", "schedule_since", "last_run_slot", "paused", "trigger_requested", "trigger_forced",
        "retry_attempt", "retry_at", "retry_slot", "last_success_at",
    ]

    /// Reads an HMGET reply of `fields` (nil entries for absent fields; unreadable numbers count as absent).
    package init(fields values: [String?]) {
        func text(_ index: Int) -> String? { values.count > index ? values[index] : nil }
        func number(_ index: Int) -> Int64? { text(index).flatMap { Int64($0) } }
        self.init(nextRunAtMs: number(0), fingerprint: text(1), sinceMs: number(2), lastRunSlotMs: number(3))
        paused = text(4) == "1"
        // Presence is what counts: a pending trigger with an unreadable time still runs.
        triggerRequestedMs = number(5) ?? text(5).map { _ in 0 }
        triggerForced = text(6) == "1"
        retryAttempt = number(7).flatMap { $0 >= 2 ? Int($0) : nil }
        retryAtMs = number(8)
        retrySlotMs = number(9)
        lastSuccessAtMs = number(10)
    }

    /// Whether a manual run may start now: one is pending, and the job is not paused or it was forced.
    package var triggerRunnable: Bool { triggerRequestedMs != nil && (!paused || triggerForced) }
}

/// What a scheduled job's leader does with the stored schedule state: which schedule computes
/// the slots, which slot comes next, and whether the state must be rewritten first.
///
/// The rule is "the newest loaded catalog wins": a member whose catalog was loaded after the
/// stored schedule was written adopts its own schedule at once; an older one follows the
/// stored schedule, so members that alternate leadership during a rolling deploy agree on
/// one cadence and no slot runs twice.
package struct SchedulePlan: Sendable, Hashable {
    /// Where the plan's schedule came from.
    package enum Source: Sendable, Hashable {
        /// The stored fingerprint is this member's own.
        case current
        /// Nothing was stored: this member's schedule starts (first slot as always).
        case fresh
        /// A `next_run_at` from a version that stored no fingerprint: kept, with this member's fingerprint.
        case legacy
        /// A different, older (or unreadable) schedule was stored: this member's replaces it.
        case adopted(previousNextRunAtMs: Int64?)
        /// A different schedule from a newer catalog was stored: this member follows it.
        case followed
    }

    /// The state write the plan needs before any run (`LeaseScripts.adoptSchedule`).
    package struct Adoption: Sendable, Hashable {
        /// The fingerprint the state must still carry ('' for none).
        package var expectedFingerprint: String
        /// The new `schedule_since`: this member's catalog load time.
        package var sinceMs: Int64
        /// The new `next_run_at`.
        package var nextRunAtMs: Int64
    }

    /// Where the schedule came from.
    package var source: Source
    /// The schedule that computes the slots (this member's, or the stored one it follows).
    package var schedule: JobSchedule
    /// Its fingerprint: `beginRun` refuses a slot when the stored one differs.
    package var fingerprint: String
    /// The slot to wait for (ms since the epoch); nil when the schedule has no future run.
    package var slotMs: Int64?
    /// The write to make first, if any.
    package var adoption: Adoption?

    /// Decides for `own` (this member's schedule, from a catalog loaded at `loadedAtMs`) given
    /// the `stored` state at `nowMs`. `own` must not be `continuous`.
    package init(own: JobSchedule, loadedAtMs: Int64, stored: StoredSchedule, nowMs: Int64) {
        let ownFingerprint = own.fingerprint ?? ""
        func adopt(_ source: Source, expected: String, next: Int64?) -> SchedulePlan {
            SchedulePlan(
                source: source, schedule: own, fingerprint: ownFingerprint, slotMs: next,
                adoption: next.map { Adoption(expectedFingerprint: expected, sinceMs: loadedAtMs, nextRunAtMs: $0) })
        }
        guard let storedFingerprint = stored.fingerprint else {
            if let next = stored.nextRunAtMs {
                self = adopt(.legacy, expected: "", next: next)
            } else {
                self = adopt(.fresh, expected: "", next: own.firstSlotMs(nowMs: nowMs))
            }
            return
        }
        if storedFingerprint == ownFingerprint {
            self.init(
                source: .current, schedule: own, fingerprint: ownFingerprint,
                slotMs: stored.nextRunAtMs ?? own.firstSlotMs(nowMs: nowMs), adoption: nil)
            return
        }
        // Equal load times follow: the stored schedule stays put rather than flapping.
        if let followed = JobSchedule(fingerprint: storedFingerprint), followed.fingerprint != nil,
            loadedAtMs <= stored.sinceMs ?? .min
        {
            self.init(
                source: .followed, schedule: followed, fingerprint: storedFingerprint,
                slotMs: stored.nextRunAtMs ?? followed.firstSlotMs(nowMs: nowMs), adoption: nil)
            return
        }
        self = adopt(
            .adopted(previousNextRunAtMs: stored.nextRunAtMs), expected: storedFingerprint,
            next: own.adoptedSlotMs(lastRunSlotMs: stored.lastRunSlotMs, nowMs: nowMs))
    }

    private init(source: Source, schedule: JobSchedule, fingerprint: String, slotMs: Int64?, adoption: Adoption?) {
        self.source = source
        self.schedule = schedule
        self.fingerprint = fingerprint
        self.slotMs = slotMs
        self.adoption = adoption
    }
}

extension JobSchedule {
    /// The first slot of a schedule that has none stored: now for `every`, the next cron time.
    package func firstSlotMs(nowMs: Int64) -> Int64? {
        switch self {
        case .continuous: return nil
        case .every: return nowMs
        case .cron(let cron): return cron.nextFire(after: Self.date(nowMs)).map(Self.milliseconds)
        }
    }

    /// The slot after `slotMs` (just started) at `nowMs`. `every` keeps its rhythm: a whole
    /// number of intervals after `slotMs`, skipping the ones already missed (they ran once, as `slotMs`).
    package func slotMs(after slotMs: Int64, nowMs: Int64) -> Int64? {
        switch self {
        case .continuous: return nil
        case .every(let interval):
            let step = max(interval.wholeMilliseconds, 1)
            let next = slotMs + step
            if next > nowMs { return next }
            return slotMs + ((nowMs - slotMs) / step + 1) * step
        case .cron(let cron): return cron.nextFire(after: Self.date(max(slotMs, nowMs))).map(Self.milliseconds)
        }
    }

    /// The next slot of a schedule replacing another one: `every` continues from the last run
    /// started (its missed slot runs once, now); cron takes its next time. Never a slot at or
    /// before `lastRunSlotMs`: a slot already started never runs again.
    package func adoptedSlotMs(lastRunSlotMs: Int64?, nowMs: Int64) -> Int64? {
        switch self {
        case .continuous: return nil
        case .every(let interval):
            guard let last = lastRunSlotMs else { return nowMs }
            let next = last + max(interval.wholeMilliseconds, 1)
            return next > nowMs ? next : max(nowMs, last + 1)
        case .cron(let cron):
            return cron.nextFire(after: Self.date(max(nowMs, lastRunSlotMs ?? nowMs))).map(Self.milliseconds)
        }
    }

    /// A Redis ms timestamp as a date.
    package static func date(_ ms: Int64) -> Date { Date(timeIntervalSince1970: Double(ms) / 1000) }

    /// A date as Redis ms (rounded to the nearest millisecond).
    package static func milliseconds(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1000).rounded()) }
}
