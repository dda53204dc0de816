import LeaseholdElection

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// The arithmetic of starting a scheduled job's slots: the jitter delay, the starting
/// deadline and retry backoff. Pure functions of their inputs (times in ms since the epoch),
/// so every member computes the same answers and tests run on fake times.
package enum SlotPlan {
    /// The delay before `slotMs` starts, in [0, jitter): derived from the job name and the
    /// slot, never random, so every member (and a new leader after a failover) waits the same.
    package static func jitterOffsetMs(job: String, slotMs: Int64, jitter: Duration?) -> Int64 {
        guard let jitter, jitter.wholeMilliseconds > 0 else { return 0 }
        let hash = StableHash.hash64(Array(job.utf8) + [0] + Array(String(slotMs).utf8))
        return Int64(hash % UInt64(jitter.wholeMilliseconds))
    }

    /// When `slotMs` is planned to start: its time plus its jitter offset.
    package static func startMs(job: String, slotMs: Int64, jitter: Duration?) -> Int64 {
        slotMs + jitterOffsetMs(job: job, slotMs: slotMs, jitter: jitter)
    }

    /// What to do with the stored next slot at a moment.
    package enum Decision: Sendable, Hashable {
        /// Start `slotMs` at `startMs` (now or later; a slot within its deadline may start late).
        case run(slotMs: Int64, startMs: Int64)
        /// The slot and maybe later ones passed their deadline: record them as missed and
        /// continue with `nextSlotMs` (nil when the schedule has no further slot). `missed`
        /// lists at most `missedListLimit` of them; `missedCount` counts all (at least).
        case skip(missed: [Int64], missedCount: Int, nextSlotMs: Int64?)
    }

    /// At most this many missed slots are listed (written as events) per catch-up.
    package static let missedListLimit = 100

    /// Decides for `slotMs` (the stored `next_run_at`) at `nowMs`: a slot whose planned start
    /// (with jitter) is more than `deadline` ago is missed, and so is every later one that
    /// is; the first that is not comes next. Without a deadline a slot always runs, however late.
    package static func decide(
        job: String, schedule: JobSchedule, slotMs: Int64, jitter: Duration?, deadline: Duration?, nowMs: Int64
    ) -> Decision {
        let start = startMs(job: job, slotMs: slotMs, jitter: jitter)
        guard let deadline, nowMs > start + deadline.wholeMilliseconds else {
            return .run(slotMs: slotMs, startMs: start)
        }
        let deadlineMs = deadline.wholeMilliseconds
        let jitterMs = max(jitter?.wholeMilliseconds ?? 0, 0)
        var missed: [Int64] = []
        var count = 0
        var slot: Int64? = slotMs
        func note(_ missedSlot: Int64) {
            count += 1
            if missed.count < missedListLimit { missed.append(missedSlot) }
        }
        // Slots before this are missed whatever their jitter: `every` jumps over them at once.
        let surelyMissedBefore = nowMs - deadlineMs - jitterMs
        if case .every(let interval) = schedule {
            let step = max(interval.wholeMilliseconds, 1)
            let whole = (surelyMissedBefore - slotMs - 1) / step
            if whole > 0 {
                for index in 0..<min(whole, Int64(missedListLimit)) { missed.append(slotMs + index * step) }
                count = Int(whole)
                slot = slotMs + whole * step
            }
        }
        var steps = 0
        while let current = slot, nowMs > startMs(job: job, slotMs: current, jitter: jitter) + deadlineMs {
            note(current)
            steps += 1
            if steps >= 100_000 {
                // A cron outage this long: stop counting and go straight to the recent slots.
                slot = successor(of: max(current, surelyMissedBefore), in: schedule)
                steps = 0
                continue
            }
            slot = successor(of: current, in: schedule)
        }
        return .skip(missed: missed, missedCount: count, nextSlotMs: slot)
    }

    /// The slot right after `slotMs`, missed or not (nil when the schedule has none).
    package static func successor(of slotMs: Int64, in schedule: JobSchedule) -> Int64? {
        switch schedule {
        case .continuous: return nil
        case .every(let interval): return slotMs + max(interval.wholeMilliseconds, 1)
        case .cron(let cron): return cron.nextFire(after: JobSchedule.date(slotMs)).map(JobSchedule.milliseconds)
        }
    }

    /// The wait before try number `attempt` (>= 2): `backoff × 2^(attempt − 2)`, at most `maxBackoff`.
    package static func backoff(attempt: Int, policy: RetryPolicy) -> Duration {
        let doublings = max(0, min(attempt - 2, 40))
        let base = max(policy.backoff.wholeMilliseconds, 1)
        let cap = max(policy.maxBackoff.wholeMilliseconds, base)
        // Compare before multiplying: 2^40 × a long backoff would overflow.
        let factor = Int64(1) << doublings
        let waited = base > cap / factor ? cap : min(base * factor, cap)
        return .milliseconds(waited)
    }

    /// When try `failedAttempt + 1` runs after try `failedAttempt` failed at `finishedMs`; nil
    /// when the tries are used up, or the retry would start at or after `nextSlotMs` (then the
    /// next slot runs instead: a retry never delays the schedule).
    package static func retryAtMs(
        failedAttempt: Int, finishedMs: Int64, policy: RetryPolicy?, nextSlotMs: Int64?
    ) -> Int64? {
        guard let policy, failedAttempt < policy.attempts else { return nil }
        let at = finishedMs + backoff(attempt: failedAttempt + 1, policy: policy).wholeMilliseconds
        if let nextSlotMs, at >= nextSlotMs { return nil }
        return at
    }
}
