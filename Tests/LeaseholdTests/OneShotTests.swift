import Synchronization
import Testing

@testable import Leasehold

/// The one-shot signal the job runner waits on: a leadership's stop, a run's end, the wait for
/// the next slot. Bounds are generous; what is checked is which way each wait ends.
@Suite(.timeLimit(.minutes(1)))
struct OneShotTests {
    @Test func boundedWaitTimesOutWhenNothingFires() async {
        let signal = OneShot<Int>()
        let started = ContinuousClock.now
        let outcome = await signal.wait(until: .now + .milliseconds(50))
        guard case .timedOut = outcome else {
            Issue.record("expected a timeout, got \(outcome)")
            return
        }
        #expect(ContinuousClock.now - started >= .milliseconds(50))
    }

    @Test func boundedWaitEndsWhenTheValueIsSet() async {
        let signal = OneShot<Int>()
        async let outcome = signal.wait(until: .now + .seconds(60))
        // Whether the waiter registered before or after the value was set, it gets the value.
        signal.fire(7)
        guard case .fired(let value) = await outcome else {
            Issue.record("expected the value")
            return
        }
        #expect(value == 7)
        guard case .fired(7) = await signal.wait(until: .now) else {
            Issue.record("a fired signal answers at once, even with a past deadline")
            return
        }
    }

    @Test func boundedWaitEndsWhenItsTaskIsCancelled() async {
        let signal = OneShot<Int>()
        let waiter = Task { await signal.wait(until: .now + .seconds(60)) }
        waiter.cancel()
        guard case .cancelled = await waiter.value else {
            Issue.record("expected cancellation")
            return
        }
        #expect(signal.value == nil)
    }

    @Test func observersRunOnceAndCanBeRemoved() {
        let signal = OneShot<String>()
        let seen = Mutex<[String]>([])
        let kept = signal.onFire { value in seen.withLock { $0.append("kept:\(value)") } }
        let removed = signal.onFire { value in seen.withLock { $0.append("removed:\(value)") } }
        #expect(kept != nil && removed != nil)
        signal.removeObserver(removed)
        signal.fire("a")
        signal.fire("b")
        #expect(seen.withLock { $0 } == ["kept:a"])
        // After the value is set, an observer runs at once and needs no removal.
        let late = signal.onFire { value in seen.withLock { $0.append("late:\(value)") } }
        #expect(late == nil)
        #expect(seen.withLock { $0 } == ["kept:a", "late:a"])
    }
}
