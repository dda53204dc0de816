import LeaseholdTesting
import Testing

@testable import Leasehold

/// Engine bugs found by the simulator, pinned as plain unit tests.
@Suite("Simulation regressions")
struct SimulationRegressionTests {
    static let job = LeaseJob(name: "report", timing: LeaseTiming(ttl: .seconds(3)))

    private func engineLeading() -> (LeaseEngine, renewID: Int) {
        var driver = EngineDriver(jobs: [Self.job])
        let commands = driver.poll().commands
        driver.now = .milliseconds(1)
        driver.answerAcquires(commands, redisNowMs: 1_000) { _, _ in
            .acquired(token: 7, takeover: .acquired, gapMs: nil)
        }
        return (driver.engine, EngineDriver.renews(commands).first?.id ?? 0)
    }

    /// Seed 174 (first run): 82,074 wake-ups in one 40 s schedule. With a renew in flight
    /// past its tick time, `wakeAt` was the tick time (already past), so a driver re-polled
    /// at once, again and again, until the renew's reply or timeout: a CPU spin on every
    /// slow Redis call.
    @Test("a renew in flight past its tick time does not ask to be woken in the past")
    func noSpinWhileRenewInFlight() {
        var (engine, renewID) = engineLeading()
        #expect(renewID != 0)
        let now = Duration.milliseconds(900)  // well past the renew retry backoff (≤ 1 s)
        let step = engine.poll(now: now)
        #expect(step.commands.isEmpty)
        #expect(
            step.wakeAt.map { $0 > now } ?? true, "wakeAt \(String(describing: step.wakeAt)) must not be in the past")
        // Once the renew completes, the next tick is scheduled as before.
        engine.complete(
            .renew(id: renewID, .failure(LeaseCallFailure(outcomeUnknown: true, message: "timeout"))), now: now)
        let after = engine.poll(now: now)
        #expect(after.wakeAt.map { $0 > now && $0 <= now + .seconds(1) } ?? false)
    }

    /// Seeds 226, 239, 512, 778, 797, ... of the first 1,000: a handoff release timed out
    /// (delayed request), the member took the lease up again through `alreadyHeld` with the
    /// *same* token, then the delayed release reached Redis, matched `owner:token` and
    /// deleted the lease: another member acquired it while the first still counted itself
    /// leader for ~0.3–2.5 s. A lease whose release outcome is unknown must not be re-led.
    @Test("a lease whose release timed out is released again, not led again with the same token")
    func noReLeadAfterUnsureRelease() {
        var (engine, _) = engineLeading()
        var now = Duration.milliseconds(100)
        #expect(engine.lease(of: "report")?.token == 7)
        engine.release(job: "report", token: 7, reason: .handedOff, now: now)
        let releaseID = engine.poll(now: now).commands.compactMap {
            if case .release(let id, _, _) = $0 { id } else { nil }
        }.first
        #expect(releaseID != nil)
        now += .seconds(1)
        engine.complete(
            .release(id: releaseID ?? 0, .failure(LeaseCallFailure(outcomeUnknown: true, message: "timeout"))), now: now
        )
        now += .milliseconds(5)
        let acquireID = engine.poll(now: now).commands.compactMap {
            if case .acquire(let id, _) = $0 { id } else { nil }
        }.first
        #expect(acquireID != nil)
        engine.complete(
            .acquire(id: acquireID ?? 0, .success(AcquireReply(redisNowMs: 2_000, outcomes: [.alreadyHeld(token: 7)]))),
            now: now)
        let step = engine.poll(now: now)
        #expect(engine.lease(of: "report") == nil, "must not lead on a token whose release may still land")
        #expect(!step.events.contains { if case .acquired = $0 { true } else { false } })
        let again = step.commands.compactMap {
            if case .release(let id, let items, _) = $0 { (id, items) } else { nil }
        }.first
        #expect(again?.1 == [ReleaseItem(job: "report", token: 7)])
        // Once Redis answers, the member acquires afresh (a new token) and leads normally.
        engine.complete(.release(id: again?.0 ?? 0, .success([true])), now: now)
        now += .milliseconds(5)
        let next = engine.poll(now: now)
        #expect(
            !next.events.contains { if case .released = $0 { true } else { false } },
            "the settling release is not reported")
        let fresh = next.commands.compactMap { if case .acquire(let id, _) = $0 { id } else { nil } }.first
        engine.complete(
            .acquire(id: fresh ?? 0, .success(AcquireReply(redisNowMs: 2_010, outcomes: [.alreadyHeld(token: 7)]))),
            now: now)
        _ = engine.poll(now: now)
        #expect(engine.lease(of: "report")?.token == 7, "after a known release outcome, alreadyHeld is trusted again")
    }
}
