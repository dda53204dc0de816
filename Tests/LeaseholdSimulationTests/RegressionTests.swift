import Testing

@testable import Leasehold

/// Engine bugs found by the simulator, pinned as plain unit tests.
@Suite("Simulation regressions")
struct SimulationRegressionTests {
    static let job = LeaseJob(name: "report", timing: LeaseTiming(ttl: .seconds(3)))

    private func engineLeading() -> (LeaseEngine, renewID: Int) {
        var engine = LeaseEngine(settings: .init(owner: OwnerID(member: "a", incarnation: "i1"), seed: 1), jobs: [Self.job], now: .zero)
        var renewID = 0
        for command in engine.poll(now: .zero).commands {
            switch command {
            case .acquire(let id, let requests):
                engine.complete(.acquire(id: id, .success(AcquireReply(
                    redisNowMs: 1_000, outcomes: requests.map { _ in .acquired(token: 7, takeover: .acquired, gapMs: nil) }))),
                    now: .milliseconds(1))
            case .renew(let id, _):
                renewID = id
            default:
                break
            }
        }
        return (engine, renewID)
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
        #expect(step.wakeAt.map { $0 > now } ?? true, "wakeAt \(String(describing: step.wakeAt)) must not be in the past")
        // Once the renew completes, the next tick is scheduled as before.
        engine.complete(.renew(id: renewID, .failure(LeaseCallFailure(outcomeUnknown: true, message: "timeout"))), now: now)
        let after = engine.poll(now: now)
        #expect(after.wakeAt.map { $0 > now && $0 <= now + .seconds(1) } ?? false)
    }
}
