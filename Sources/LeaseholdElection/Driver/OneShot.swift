import Dispatch
import Synchronization

/// A value set once that any number of tasks can wait for; structured code waits on it instead of
/// keeping a task handle to cancel or await (the runtime's leaderships, the test members).
package final class OneShot<Value: Sendable>: Sendable {
    private struct State: ~Copyable {
        var value: Value?
        var waiters: [Int: CheckedContinuation<Value?, Never>] = [:]
        var boundedWaiters: [Int: CheckedContinuation<BoundedWait, Never>] = [:]
        var observers: [Int: @Sendable (Value) -> Void] = [:]
        var nextID = 0

        mutating func takeID() -> Int {
            defer { nextID += 1 }
            return nextID
        }
    }

    /// How `wait(until:)` ended.
    package enum BoundedWait: Sendable {
        /// The value was set (before or during the wait).
        case fired(Value)
        /// The deadline passed first.
        case timedOut
        /// The waiting task was cancelled first.
        case cancelled
    }

    private let state = Mutex(State())

    /// Creates an unset one-shot.
    package init() {}

    /// Sets the value and wakes every waiter; later calls change nothing.
    package func fire(_ value: Value) {
        let (waiters, bounded, observers) = state.withLock { state in
            guard state.value == nil else {
                return (
                    [CheckedContinuation<Value?, Never>](), [CheckedContinuation<BoundedWait, Never>](),
                    [@Sendable (Value) -> Void]()
                )
            }
            state.value = value
            defer {
                state.waiters = [:]
                state.boundedWaiters = [:]
                state.observers = [:]
            }
            return (Array(state.waiters.values), Array(state.boundedWaiters.values), Array(state.observers.values))
        }
        for waiter in waiters { waiter.resume(returning: value) }
        for waiter in bounded { waiter.resume(returning: .fired(value)) }
        for observer in observers { observer(value) }
    }

    /// Calls `action` when the value is set (at once if it is); returns the handle for
    /// `removeObserver(_:)`, or nil when it already ran.
    package func onFire(_ action: @escaping @Sendable (Value) -> Void) -> Int? {
        let registered: Result<Int, FiredAlready> = state.withLock { state in
            if let value = state.value { return .failure(FiredAlready(value: value)) }
            let id = state.takeID()
            state.observers[id] = action
            return .success(id)
        }
        switch registered {
        case .success(let id):
            return id
        case .failure(let fired):
            action(fired.value)
            return nil
        }
    }

    private struct FiredAlready: Error {
        let value: Value
    }

    /// Forgets an observer that has not run (a no-op for nil or one that has).
    package func removeObserver(_ id: Int?) {
        guard let id else { return }
        _ = state.withLock { $0.observers.removeValue(forKey: id) }
    }

    /// Waits for the value until `deadline` without a task of its own: a dispatch timer ends
    /// the wait, so a thousand waits cost a thousand small timers, not a thousand tasks.
    package func wait(until deadline: ContinuousClock.Instant) async -> BoundedWait {
        let id = state.withLock { $0.takeID() }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<BoundedWait, Never>) in
                let now: BoundedWait? = state.withLock { state in
                    if let value = state.value { return .fired(value) }
                    if Task.isCancelled { return .cancelled }
                    if deadline <= .now { return .timedOut }
                    state.boundedWaiters[id] = continuation
                    return nil
                }
                if let now {
                    continuation.resume(returning: now)
                    return
                }
                let (seconds, attoseconds) = (deadline - .now).components
                let nanoseconds = max(0, seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
                DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(Int(nanoseconds))) { [self] in
                    state.withLock { $0.boundedWaiters.removeValue(forKey: id) }?.resume(returning: .timedOut)
                }
            }
        } onCancel: {
            state.withLock { $0.boundedWaiters.removeValue(forKey: id) }?.resume(returning: .cancelled)
        }
    }

    /// The value, if fired.
    package var value: Value? { state.withLock { $0.value } }

    /// Waits for the value; nil when the waiting task is cancelled first.
    package func wait() async -> Value? {
        let id = state.withLock { $0.takeID() }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let now: Value?? = state.withLock { state in
                    if let value = state.value { return .some(value) }
                    if Task.isCancelled { return .some(nil) }
                    state.waiters[id] = continuation
                    return .none
                }
                if let now { continuation.resume(returning: now) }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume(returning: nil)
        }
    }
}
