import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

extension Process {
    /// Starts the process with no signals blocked.
    ///
    /// Children inherit the signal mask of the thread that spawns them, and the threads Swift
    /// concurrency runs on block SIGTERM and others: a redis-server or daemon started from a
    /// test would then ignore the SIGTERM of a graceful stop. Spawning from a plain thread
    /// with an empty mask gives the child the defaults a shell would.
    public func runWithDefaultSignalMask() throws {
        let spawned = Mutex<Result<Void, any Error>?>(nil)
        let thread = Thread { [self] in
            var none = sigset_t()
            sigemptyset(&none)
            pthread_sigmask(SIG_SETMASK, &none, nil)
            let result = Result { try self.run() }
            spawned.withLock { $0 = result }
        }
        thread.start()
        while spawned.withLock({ $0 }) == nil { usleep(500) }
        try spawned.withLock { $0! }.get()
    }
}
