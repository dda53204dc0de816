import Foundation
import Testing

@testable import Leasehold

/// Jitter, starting deadline and retry backoff on fake times, including DST days in a named zone.
@Suite struct SlotPlanTests {
    /// Milliseconds of a UTC instant written as ISO 8601 (the tests name wall times in comments).
    static func ms(_ iso: String) throws -> Int64 {
        JobSchedule.milliseconds(try #require(ISO8601DateFormatter().date(from: iso)))
    }

    static func berlin(_ expression: String) throws -> JobSchedule {
        .cron(try CronSchedule(expression: expression, timeZone: try #require(TimeZone(identifier: "Europe/Berlin"))))
    }

    @Test func jitterIsTheSameForEveryCallerAndStaysInRange() {
        let jitter = Duration.seconds(30)
        var offsets: Set<Int64> = []
        for slot in stride(from: Int64(1_800_000_000_000), to: 1_800_000_000_000 + 200 * 60_000, by: 60_000) {
            let offset = SlotPlan.jitterOffsetMs(job: "report", slotMs: slot, jitter: jitter)
            #expect((0..<30_000).contains(offset))
            // Derived from job and slot only: a second member (or call) computes the same.
            #expect(offset == SlotPlan.jitterOffsetMs(job: "report", slotMs: slot, jitter: jitter))
            offsets.insert(offset)
        }
        // Spread out, not one fixed delay.
        #expect(offsets.count > 150)
        // Another job gets other delays for the same slots.
        #expect(
            SlotPlan.jitterOffsetMs(job: "other", slotMs: 1_800_000_000_000, jitter: jitter)
                != SlotPlan.jitterOffsetMs(job: "report", slotMs: 1_800_000_000_000, jitter: jitter)
                || SlotPlan.jitterOffsetMs(job: "other", slotMs: 1_800_000_060_000, jitter: jitter)
                    != SlotPlan.jitterOffsetMs(job: "report", slotMs: 1_800_000_060_000, jitter: jitter)
        )
        #expect(SlotPlan.jitterOffsetMs(job: "report", slotMs: 5, jitter: nil) == 0)
        #expect(SlotPlan.jitterOffsetMs(job: "report", slotMs: 5, jitter: .zero) == 0)
        // The hash text is "job\0slot": pinned, so every version of every member agrees.
        #expect(SlotPlan.jitterOffsetMs(job: "report", slotMs: 1_800_000_000_000, jitter: jitter) == 22_803)
    }

    @Test func withoutADeadlineAMissedSlotRunsOnceHoweverLate() {
        let decision = SlotPlan.decide(
            job: "j", schedule: .every(.seconds(60)), slotMs: 1_000_000, jitter: nil, deadline: nil,
            nowMs: 1_000_000 + 86_400_000)
        #expect(decision == .run(slotMs: 1_000_000, startMs: 1_000_000))
    }

    @Test func aSlotWithinItsDeadlineRunsLateAndOnePastItIsSkipped() {
        let every = JobSchedule.every(.seconds(60))
        let slot: Int64 = 1_800_000_000_000
        // 30 s late with a 45 s deadline: still runs, at once.
        #expect(
            SlotPlan.decide(
                job: "j", schedule: every, slotMs: slot, jitter: nil, deadline: .seconds(45), nowMs: slot + 30_000)
                == .run(slotMs: slot, startMs: slot))
        // Exactly at the deadline: still runs (the deadline is inclusive).
        #expect(
            SlotPlan.decide(
                job: "j", schedule: every, slotMs: slot, jitter: nil, deadline: .seconds(45), nowMs: slot + 45_000)
                == .run(slotMs: slot, startMs: slot))
        // 50 s late: skipped; the next slot (60 s) lies ahead.
        #expect(
            SlotPlan.decide(
                job: "j", schedule: every, slotMs: slot, jitter: nil, deadline: .seconds(45), nowMs: slot + 50_000)
                == .skip(missed: [slot], missedCount: 1, nextSlotMs: slot + 60_000))
        // 10 min 20 s late: ten slots missed; the eleventh (10 min) is 20 s late, within its deadline.
        #expect(
            SlotPlan.decide(
                job: "j", schedule: every, slotMs: slot, jitter: nil, deadline: .seconds(45), nowMs: slot + 620_000)
                == .skip(
                    missed: (0..<10).map { slot + Int64($0) * 60_000 }, missedCount: 10, nextSlotMs: slot + 600_000))
    }

    @Test func aLongOutageCountsEveryMissedSlotButListsAFew() throws {
        let slot: Int64 = 1_800_000_000_000
        let now = slot + 86_400_000 + 500
        let decision = SlotPlan.decide(
            job: "j", schedule: .every(.seconds(1)), slotMs: slot, jitter: .milliseconds(300),
            deadline: .milliseconds(200), nowMs: now)
        guard case .skip(let missed, let count, let next?) = decision else {
            Issue.record("expected a skip, got \(decision)")
            return
        }
        #expect(missed.count == SlotPlan.missedListLimit)
        #expect(missed.first == slot)
        // 86,400 whole seconds have passed; the slot at +86,400 s may still be within its deadline.
        #expect((86_399...86_401).contains(count))
        #expect(next == slot + Int64(count) * 1000)
        #expect(now <= SlotPlan.startMs(job: "j", slotMs: next, jitter: .milliseconds(300)) + 200)
    }

    @Test func jitterDelaysTheDeadlineToo() {
        let slot: Int64 = 1_800_000_000_000
        let jitter = Duration.seconds(30)
        let start = SlotPlan.startMs(job: "j", slotMs: slot, jitter: jitter)
        #expect(start > slot)
        let every = JobSchedule.every(.seconds(60))
        #expect(
            SlotPlan.decide(job: "j", schedule: every, slotMs: slot, jitter: jitter, deadline: .seconds(5), nowMs: slot)
                == .run(slotMs: slot, startMs: start))
        #expect(
            SlotPlan.decide(
                job: "j", schedule: every, slotMs: slot, jitter: jitter, deadline: .seconds(5), nowMs: start + 5000)
                == .run(slotMs: slot, startMs: start))
        #expect(
            SlotPlan.decide(
                job: "j", schedule: every, slotMs: slot, jitter: jitter, deadline: .seconds(5), nowMs: start + 5001)
                == .skip(missed: [slot], missedCount: 1, nextSlotMs: slot + 60_000))
    }

    @Test func springForwardInBerlinWithJitterAndDeadline() throws {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST. "30 2 * * *" fires at 03:00 CEST (01:00Z).
        let daily = try Self.berlin("30 2 * * *")
        let slot = try Self.ms("2026-03-29T01:00:00Z")
        #expect(daily.firstSlotMs(nowMs: try Self.ms("2026-03-28T12:00:00Z")) == slot)
        let jitter = Duration.seconds(300)
        let start = SlotPlan.startMs(job: "nightly", slotMs: slot, jitter: jitter)
        #expect(start >= slot && start < slot + 300_000)
        // Within 10 min of its planned start: runs then.
        #expect(
            SlotPlan.decide(
                job: "nightly", schedule: daily, slotMs: slot, jitter: jitter, deadline: .seconds(600),
                nowMs: slot + 60_000) == .run(slotMs: slot, startMs: start))
        // At 03:20 CEST: missed; the next run is 02:30 CEST on the 30th (00:30Z), a normal day.
        #expect(
            SlotPlan.decide(
                job: "nightly", schedule: daily, slotMs: slot, jitter: jitter, deadline: .seconds(600),
                nowMs: try Self.ms("2026-03-29T01:20:00Z"))
                == .skip(missed: [slot], missedCount: 1, nextSlotMs: try Self.ms("2026-03-30T00:30:00Z")))
        // Every 15 minutes across the gap: 01:45 CET (00:45Z) then 03:00 CEST (01:00Z): only 15 real
        // minutes apart, so a stored 01:45 slot seen at 03:02 CEST with a 10 min deadline skips
        // only that slot: 03:00 CEST is still within its deadline.
        let quarter = try Self.berlin("*/15 * * * *")
        let decision = SlotPlan.decide(
            job: "q", schedule: quarter, slotMs: try Self.ms("2026-03-29T00:45:00Z"), jitter: .seconds(60),
            deadline: .seconds(600), nowMs: try Self.ms("2026-03-29T01:02:00Z"))
        #expect(
            decision
                == .skip(
                    missed: [try Self.ms("2026-03-29T00:45:00Z")], missedCount: 1,
                    nextSlotMs: try Self.ms("2026-03-29T01:00:00Z")))
    }

    @Test func fallBackInBerlinWithJitterAndDeadline() throws {
        // 2026-10-25: 03:00 CEST falls back to 02:00 CET. "*/30 * * * *" runs 02:00 CEST (00:00Z),
        // 02:30 CEST (00:30Z), then 03:00 CET (02:00Z): the repeated hour is not run again.
        let halfHourly = try Self.berlin("*/30 * * * *")
        let first = try Self.ms("2026-10-25T00:00:00Z")
        #expect(SlotPlan.successor(of: first, in: halfHourly) == (try Self.ms("2026-10-25T00:30:00Z")))
        #expect(
            SlotPlan.successor(of: try Self.ms("2026-10-25T00:30:00Z"), in: halfHourly)
                == (try Self.ms("2026-10-25T02:00:00Z")))
        // Down from 02:00 CEST until 02:10 CET (01:10Z), 5 min deadline: both CEST slots missed,
        // and the next one is 03:00 CET, 50 minutes ahead, not one in the repeated hour.
        #expect(
            SlotPlan.decide(
                job: "half", schedule: halfHourly, slotMs: first, jitter: .seconds(120), deadline: .seconds(300),
                nowMs: try Self.ms("2026-10-25T01:10:00Z"))
                == .skip(
                    missed: [first, try Self.ms("2026-10-25T00:30:00Z")], missedCount: 2,
                    nextSlotMs: try Self.ms("2026-10-25T02:00:00Z")))
        // "30 2 * * *" fires once, at 02:30 CEST (00:30Z); the day after at 02:30 CET (01:30Z).
        let daily = try Self.berlin("30 2 * * *")
        let slot = try Self.ms("2026-10-25T00:30:00Z")
        #expect(SlotPlan.successor(of: slot, in: daily) == (try Self.ms("2026-10-26T01:30:00Z")))
        let start = SlotPlan.startMs(job: "nightly", slotMs: slot, jitter: .seconds(900))
        // Seen at 02:30 CET, an hour after its planned start: skipped, not run in the repeated hour.
        #expect(
            SlotPlan.decide(
                job: "nightly", schedule: daily, slotMs: slot, jitter: .seconds(900), deadline: .seconds(1800),
                nowMs: try Self.ms("2026-10-25T01:30:00Z"))
                == .skip(missed: [slot], missedCount: 1, nextSlotMs: try Self.ms("2026-10-26T01:30:00Z")))
        #expect(
            SlotPlan.decide(
                job: "nightly", schedule: daily, slotMs: slot, jitter: .seconds(900), deadline: .seconds(1800),
                nowMs: start + 1_800_000) == .run(slotMs: slot, startMs: start))
    }

    @Test func retryBackoffDoublesUpToItsCap() {
        let policy = RetryPolicy(attempts: 10, backoff: .seconds(1), maxBackoff: .seconds(10))
        #expect(
            (2...7).map { SlotPlan.backoff(attempt: $0, policy: policy) } == [1, 2, 4, 8, 10, 10].map { .seconds($0) })
        let huge = RetryPolicy(attempts: 100, backoff: .seconds(3600), maxBackoff: .seconds(86_400 * 365))
        #expect(SlotPlan.backoff(attempt: 100, policy: huge) == .seconds(86_400 * 365))
    }

    @Test func aRetryNeverStartsAtOrAfterTheNextSlot() {
        let policy = RetryPolicy(attempts: 3, backoff: .seconds(10), maxBackoff: .seconds(60))
        // Try 1 failed at 1000: try 2 at 11,000, try 3 (after try 2 failed at 20,000) at 40,000.
        #expect(SlotPlan.retryAtMs(failedAttempt: 1, finishedMs: 1000, policy: policy, nextSlotMs: 60_000) == 11_000)
        #expect(SlotPlan.retryAtMs(failedAttempt: 2, finishedMs: 20_000, policy: policy, nextSlotMs: 60_000) == 40_000)
        // Tries used up.
        #expect(SlotPlan.retryAtMs(failedAttempt: 3, finishedMs: 50_000, policy: policy, nextSlotMs: nil) == nil)
        // At (or after) the next slot: dropped, the slot runs.
        #expect(SlotPlan.retryAtMs(failedAttempt: 1, finishedMs: 50_000, policy: policy, nextSlotMs: 60_000) == nil)
        #expect(SlotPlan.retryAtMs(failedAttempt: 1, finishedMs: 49_999, policy: policy, nextSlotMs: 60_000) == 59_999)
        #expect(SlotPlan.retryAtMs(failedAttempt: 1, finishedMs: 0, policy: nil, nextSlotMs: nil) == nil)
    }
}
