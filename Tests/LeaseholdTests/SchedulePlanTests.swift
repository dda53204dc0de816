import Foundation
import Testing

@testable import Leasehold

/// The newest-catalog-wins rule, without Redis: which schedule a leader uses and what it writes.
@Suite struct SchedulePlanTests {
    static let now: Int64 = 1_800_000_000_000
    static let hourly = JobSchedule.every(.seconds(3600))
    static let fast = JobSchedule.every(.seconds(5))

    @Test func theStoredScheduleOfTheSameFingerprintIsUsedAsToday() {
        let plan = SchedulePlan(
            own: Self.hourly, loadedAtMs: 1,
            stored: StoredSchedule(nextRunAtMs: Self.now + 60_000, fingerprint: "every:3600000", sinceMs: 500),
            nowMs: Self.now)
        #expect(plan.source == .current)
        #expect(plan.slotMs == Self.now + 60_000)
        #expect(plan.adoption == nil)
        #expect(plan.fingerprint == "every:3600000")
    }

    @Test func nothingStoredAdoptsTheOwnScheduleFromItsFirstSlot() throws {
        let plan = SchedulePlan(own: Self.fast, loadedAtMs: 42, stored: StoredSchedule(), nowMs: Self.now)
        #expect(plan.source == .fresh)
        #expect(plan.slotMs == Self.now)
        #expect(plan.adoption == .init(expectedFingerprint: "", sinceMs: 42, nextRunAtMs: Self.now))

        let cron = JobSchedule.cron(try CronSchedule(expression: "0 3 * * *"))
        let cronPlan = SchedulePlan(own: cron, loadedAtMs: 42, stored: StoredSchedule(), nowMs: Self.now)
        let expected = try #require(cron.firstSlotMs(nowMs: Self.now))
        #expect(expected > Self.now)
        #expect(cronPlan.slotMs == expected)
        #expect(cronPlan.adoption?.nextRunAtMs == expected)
    }

    @Test func aNextRunFromAnOlderVersionIsKeptWithTheOwnFingerprint() {
        let plan = SchedulePlan(
            own: Self.hourly, loadedAtMs: 42, stored: StoredSchedule(nextRunAtMs: Self.now + 1234, fingerprint: ""),
            nowMs: Self.now)
        #expect(plan.source == .legacy)
        #expect(plan.slotMs == Self.now + 1234)
        #expect(plan.adoption == .init(expectedFingerprint: "", sinceMs: 42, nextRunAtMs: Self.now + 1234))
    }

    @Test func aNewerCatalogAdoptsItsScheduleAtOnce() {
        // every 1h ran 10 min ago; the new catalog says every 5s: the missed slot runs now.
        let stored = StoredSchedule(
            nextRunAtMs: Self.now + 50 * 60_000, fingerprint: "every:3600000", sinceMs: 100,
            lastRunSlotMs: Self.now - 10 * 60_000)
        let plan = SchedulePlan(own: Self.fast, loadedAtMs: 200, stored: stored, nowMs: Self.now)
        #expect(plan.source == .adopted(previousNextRunAtMs: Self.now + 50 * 60_000))
        #expect(plan.slotMs == Self.now)
        #expect(plan.adoption == .init(expectedFingerprint: "every:3600000", sinceMs: 200, nextRunAtMs: Self.now))
        #expect(plan.fingerprint == "every:5000")

        // A last run 2 s ago: the next slot is one new interval after it.
        var recent = stored
        recent.lastRunSlotMs = Self.now - 2000
        #expect(
            SchedulePlan(own: Self.fast, loadedAtMs: 200, stored: recent, nowMs: Self.now).slotMs == Self.now + 3000)

        // No run yet: now.
        var never = stored
        never.lastRunSlotMs = nil
        #expect(SchedulePlan(own: Self.fast, loadedAtMs: 200, stored: never, nowMs: Self.now).slotMs == Self.now)
    }

    @Test func anUnreadableOrUndatedStoredScheduleIsReplaced() {
        for stored in [
            StoredSchedule(nextRunAtMs: Self.now + 5, fingerprint: "every:banana", sinceMs: 10_000),
            StoredSchedule(nextRunAtMs: Self.now + 5, fingerprint: "cron:0 3 * * *;tz=Mars/Olympus", sinceMs: 10_000),
            StoredSchedule(nextRunAtMs: Self.now + 5, fingerprint: "every:60000", sinceMs: nil),
        ] {
            let plan = SchedulePlan(own: Self.fast, loadedAtMs: 200, stored: stored, nowMs: Self.now)
            #expect(plan.source == .adopted(previousNextRunAtMs: Self.now + 5), "\(stored)")
            #expect(plan.adoption?.expectedFingerprint == stored.fingerprint)
        }
    }

    @Test func anOlderCatalogFollowsTheStoredSchedule() {
        let stored = StoredSchedule(
            nextRunAtMs: Self.now + 3000, fingerprint: "every:5000", sinceMs: 200, lastRunSlotMs: Self.now - 2000)
        for loadedAt in [Int64(100), 200] {
            let plan = SchedulePlan(own: Self.hourly, loadedAtMs: loadedAt, stored: stored, nowMs: Self.now)
            #expect(plan.source == .followed)
            #expect(plan.schedule == Self.fast)
            #expect(plan.fingerprint == "every:5000")
            #expect(plan.slotMs == Self.now + 3000)
            #expect(plan.adoption == nil)
            // The slot after it keeps the followed cadence, not the own hourly one.
            #expect(plan.schedule.slotMs(after: Self.now + 3000, nowMs: Self.now + 3000) == Self.now + 8000)
        }
    }

    @Test func anAdoptedSlotIsNeverAtOrBeforeTheLastRunSlot() throws {
        // The last slot lies in the future as seen from a member whose clock is behind.
        let ahead = Self.now + 10_000
        #expect(try #require(Self.fast.adoptedSlotMs(lastRunSlotMs: ahead, nowMs: Self.now)) > ahead)
        let cron = JobSchedule.cron(try CronSchedule(expression: "* * * * *"))
        #expect(try #require(cron.adoptedSlotMs(lastRunSlotMs: ahead + 120_000, nowMs: Self.now)) > ahead + 120_000)
        // A tiny interval whose next slot is not in the future yet: now, still after the last slot.
        let tiny = JobSchedule.every(.milliseconds(1))
        #expect(tiny.adoptedSlotMs(lastRunSlotMs: Self.now - 1, nowMs: Self.now) == Self.now)
    }

    @Test func theSlotAfterARunKeepsTheRhythmAndSkipsMissedSlotsOnce() {
        #expect(Self.fast.slotMs(after: Self.now, nowMs: Self.now + 10) == Self.now + 5000)
        // 12 s late: slots at +5 s and +10 s were missed (they ran once, as this slot).
        #expect(Self.fast.slotMs(after: Self.now, nowMs: Self.now + 12_000) == Self.now + 15_000)
        #expect(Self.fast.slotMs(after: Self.now, nowMs: Self.now + 10_000) == Self.now + 15_000)
    }

    @Test func anHMGETReplyReadsBackIntoTheState() {
        let state = StoredSchedule(fields: ["1800000000000", "every:5000", "17", ""])
        #expect(
            state
                == StoredSchedule(
                    nextRunAtMs: 1_800_000_000_000, fingerprint: "every:5000", sinceMs: 17, lastRunSlotMs: nil))
        #expect(StoredSchedule(fields: [nil, nil, nil, nil]) == StoredSchedule())
        #expect(StoredSchedule(fields: ["x", "", "y", "12"]) == StoredSchedule(lastRunSlotMs: 12))
    }
}
