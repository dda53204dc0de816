import Synchronization

/// Tells one observer when a job supervisor process starts and when it has been reaped, so
/// a companion process (the daemon's guardian) can wait for every job of a dead daemon to
/// be gone. The observer runs on the spawning or reaping thread: it must not block.
package enum ProcessWatch {
    /// A supervisor's life as the observer hears of it.
    package enum Change: Sendable {
        /// A spawn is under way: until `started` or `spawnFailed` follows, a job may exist
        /// that no one has been told of.
        case spawning
        /// The spawn failed: no process was left behind.
        case spawnFailed
        /// A supervisor (and through it a job) was started.
        case started(supervisorPID: Int32, jobPID: Int32)
        /// The supervisor has exited and was reaped: its job's process group is gone.
        case ended(supervisorPID: Int32)
    }

    private struct State {
        var observer: (@Sendable (Change) -> Void)?
        var live: [Int32: Int32] = [:]
    }

    private static let state = Mutex(State())

    /// Installs `observer` (replacing any) and returns the supervisors alive now (supervisor
    /// pid to job pid), so a new observer starts from the full picture.
    package static func observe(_ observer: (@Sendable (Change) -> Void)?) -> [Int32: Int32] {
        state.withLock {
            $0.observer = observer
            return $0.live
        }
    }

    /// The supervisors alive now.
    package static var live: [Int32: Int32] { state.withLock { $0.live } }

    static func record(_ change: Change) {
        // Under the lock, so an observer installed concurrently never misses or reorders one.
        state.withLock {
            switch change {
            case .started(let supervisor, let job): $0.live[supervisor] = job
            case .ended(let supervisor): $0.live[supervisor] = nil
            case .spawning, .spawnFailed: break
            }
            $0.observer?(change)
        }
    }
}
