import CProcessSupervisor
import Dispatch
import Synchronization

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// One job run under its own supervisor process, which stops the job's whole process group
/// when the deadline fed to it passes, when asked to, or when this daemon dies.
///
/// The deadline is the instant by which the group must be *dead*: SIGTERM goes out
/// `killGrace` before it and SIGKILL at the latest at it, so a run never outlives the lease
/// validity it was last granted, even if this process is killed or frozen. Dropping the last
/// reference closes the feed, which the supervisor treats like a daemon death (`.orphaned`).
package final class SupervisedProcess: Sendable {
    /// The job's process group (also its leader's pid); meaningful until `waitForExit` returns.
    package let processGroupID: Int32
    /// The supervisor's pid (a child of this process, reaped by the reader thread).
    package let supervisorPID: Int32

    private let feed: FeedChannel
    private let completion: Completion

    private init(processGroupID: Int32, supervisorPID: Int32, feed: FeedChannel, completion: Completion) {
        self.processGroupID = processGroupID
        self.supervisorPID = supervisorPID
        self.feed = feed
        self.completion = completion
    }

    deinit { feed.close() }

    /// Starts `spec` under a supervisor that will stop it by `deadline` unless extended.
    /// `onOutputLine` is called on a dedicated reader thread, lines of one stream in order.
    /// Blocks only for fork + exec of the job; throws a one-line `ProcessSpawnError`.
    package static func spawn(
        _ spec: ProcessSpec,
        deadline: ContinuousClock.Instant,
        onOutputLine: @escaping @Sendable (ProcessOutputStream, String) -> Void
    ) throws -> SupervisedProcess {
        guard let name = spec.command.first, !name.isEmpty else {
            throw ProcessSpawnError(kind: .invalidSpec, message: "empty command")
        }
        var environment = ProcessInfo.processInfo.environment.filter { !spec.withheldEnvironment.contains($0.key) }
        for (key, value) in spec.environment {
            guard !key.isEmpty, !key.contains("="), !key.contains("\0"), !value.contains("\0") else {
                throw ProcessSpawnError(
                    kind: .invalidSpec, message: "invalid environment variable name or value: \(key)")
            }
            environment[key] = value
        }
        if spec.command.contains(where: { $0.contains("\0") }) {
            throw ProcessSpawnError(kind: .invalidSpec, message: "command argument contains a NUL byte: \(name)")
        }
        if let cwd = spec.workingDirectory {
            guard isDirectory(cwd) else {
                throw ProcessSpawnError(
                    kind: .workingDirectoryMissing, message: "working directory does not exist: \(cwd)")
            }
        }
        let path = try resolveExecutable(name, searchPath: environment["PATH"], cwd: spec.workingDirectory)

        // C strings are allocated here, before fork: the supervisor child may not malloc.
        let argv = spec.command.map { strdup($0) } + [nil]
        let envp = environment.sorted { $0.key < $1.key }.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var handles = lh_supervised_t()
        ProcessWatch.record(.spawning)
        let now = ContinuousClock.now
        let result: Int32 = path.withCString { cPath in
            argv.withUnsafeBufferPointer { argvBuffer in
                envp.withUnsafeBufferPointer { envpBuffer in
                    func call(_ cCwd: UnsafePointer<CChar>?) -> Int32 {
                        lh_spawn_supervised(
                            cPath, argvBuffer.baseAddress, envpBuffer.baseAddress, cCwd,
                            milliseconds(deadline - now), milliseconds(spec.killGrace), &handles)
                    }
                    if let cwd = spec.workingDirectory { return cwd.withCString { call($0) } }
                    return call(nil)
                }
            }
        }
        guard result == 0 else {
            ProcessWatch.record(.spawnFailed)
            throw spawnError(errno: result, stage: handles.failure_stage, path: path, cwd: spec.workingDirectory)
        }

        ProcessWatch.record(.started(supervisorPID: handles.supervisor_pid, jobPID: handles.job_pid))
        let feed = FeedChannel(fd: handles.feed_fd)
        let completion = Completion()
        let process = SupervisedProcess(
            processGroupID: handles.job_pid, supervisorPID: handles.supervisor_pid,
            feed: feed, completion: completion)
        // The spawn call used a relative deadline; pin it to the shared clock conservatively now.
        process.extendDeadline(to: deadline)

        let reader = OutputReader(
            stdoutFD: handles.stdout_fd, stderrFD: handles.stderr_fd, statusFD: handles.status_fd,
            supervisorPID: handles.supervisor_pid, processGroupID: handles.job_pid,
            feed: feed,
            completion: { [supervisorPID = handles.supervisor_pid] outcome in
                ProcessWatch.record(.ended(supervisorPID: supervisorPID))
                completion.finish(outcome)
            }, onOutputLine: onOutputLine)
        // A serial queue of its own: the reader blocks in poll(2), and such queues get a thread
        // of their own from Dispatch's overcommit pool instead of starving the shared ones.
        DispatchQueue(label: "leasehold.process.\(handles.job_pid)").async { reader.run() }
        return process
    }

    /// Moves the instant by which the group must be dead (newest wins, so it may also shorten).
    /// Never blocks: if the supervisor is frozen the message is dropped, which only makes the
    /// effective deadline earlier.
    package func extendDeadline(to deadline: ContinuousClock.Instant) {
        // Read the supervisor's clock first: a stall before reading ours makes `remaining`
        // smaller, so the converted deadline can only come out earlier, never later.
        let base = lh_supervisor_clock_ns()
        let remaining = deadline - ContinuousClock.now
        let target = base.addingReportingOverflow(Self.nanoseconds(remaining))
        feed.send { lh_supervised_set_deadline_ns($0, target.overflow ? Int64.max : target.partialValue) }
    }

    /// Stops the run: SIGTERM to the group, SIGKILL after `killGrace` (or at the deadline).
    package func terminate() {
        feed.send { lh_supervised_terminate($0) }
    }

    /// Closes this daemon's end of the feed without a request, exactly as if the daemon had
    /// died: the supervisor stops the group (cause `.orphaned`). Used by tests, and by
    /// shutdown paths that must not wait.
    package func abandon() {
        feed.close()
    }

    /// Waits for the run to end and all its output to be delivered (bounded by a short drain
    /// if an escaped process keeps the pipes open). Suspends; never blocks a pool thread.
    package func waitForExit() async -> ProcessOutcome {
        await completion.wait()
    }

    /// The run's outcome if it has already ended.
    package var outcome: ProcessOutcome? { completion.current }

    private static func milliseconds(_ duration: Duration) -> Int64 {
        nanoseconds(duration) / 1_000_000
    }

    private static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? Int64.min / 2 : Int64.max / 2 }
        return whole + attoseconds / 1_000_000_000
    }

    private static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    private static func isRegularFile(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
    }

    /// PATH lookup done here, in ordinary code, so the forked children only call execve.
    private static func resolveExecutable(_ name: String, searchPath: String?, cwd: String?) throws -> String {
        if name.contains("/") {
            // A relative path is relative to the job's working directory (the job chdirs first).
            let probe = (name.hasPrefix("/") || cwd == nil) ? name : "\(cwd!)/\(name)"
            guard access(probe, F_OK) == 0 else {
                throw ProcessSpawnError(kind: .commandNotFound, message: "command not found: \(name)")
            }
            guard isRegularFile(probe), access(probe, X_OK) == 0 else {
                throw ProcessSpawnError(kind: .notExecutable, message: "command is not executable: \(name)")
            }
            return name
        }
        var sawNonExecutable: String?
        let directories = (searchPath ?? "/usr/local/bin:/usr/bin:/bin").split(
            separator: ":", omittingEmptySubsequences: false)
        for directory in directories {
            let candidate = directory.isEmpty ? "./\(name)" : "\(directory)/\(name)"
            guard isRegularFile(candidate) else { continue }
            if access(candidate, X_OK) == 0 { return candidate }
            sawNonExecutable = sawNonExecutable ?? candidate
        }
        if let path = sawNonExecutable {
            throw ProcessSpawnError(kind: .notExecutable, message: "command is not executable: \(path)")
        }
        throw ProcessSpawnError(kind: .commandNotFound, message: "command not found in PATH: \(name)")
    }

    private static func spawnError(errno code: Int32, stage: Int32, path: String, cwd: String?) -> ProcessSpawnError {
        let reason = String(cString: strerror(code))
        switch Int(stage) {
        case Int(LH_STAGE_CHDIR.rawValue):
            return ProcessSpawnError(
                kind: .workingDirectoryMissing, message: "cannot enter working directory \(cwd ?? "?"): \(reason)")
        case Int(LH_STAGE_EXEC.rawValue) where code == ENOENT:
            return ProcessSpawnError(kind: .commandNotFound, message: "command not found: \(path)")
        case Int(LH_STAGE_EXEC.rawValue) where code == EACCES || code == ENOEXEC || code == EPERM:
            return ProcessSpawnError(kind: .notExecutable, message: "command is not executable: \(path): \(reason)")
        case Int(LH_STAGE_EXEC.rawValue):
            return ProcessSpawnError(kind: .systemError, message: "cannot execute \(path): \(reason)")
        default:
            return ProcessSpawnError(
                kind: .systemError, message: "cannot start supervised process for \(path): \(reason)")
        }
    }
}

/// The daemon's end of the feed socket, shared by the handle and the reader thread; the lock
/// keeps a send from racing a close onto a reused descriptor number.
final class FeedChannel: FeedChannelCloser {
    private let fd: Mutex<Int32>

    init(fd: Int32) { self.fd = Mutex(fd) }

    func send(_ body: (Int32) -> Int32) {
        fd.withLock { fd in
            guard fd >= 0 else { return }
            _ = body(fd)  // EAGAIN (frozen supervisor) / EPIPE (supervisor gone): nothing better to do
        }
    }

    func close() {
        fd.withLock { fd in
            guard fd >= 0 else { return }
            _ = systemClose(fd)
            fd = -1
        }
    }
}

/// Delivers the outcome once to every waiter, past or future.
final class Completion: Sendable {
    private struct State {
        var outcome: ProcessOutcome?
        var waiters: [CheckedContinuation<ProcessOutcome, Never>] = []
    }

    private let state = Mutex(State())

    var current: ProcessOutcome? { state.withLock { $0.outcome } }

    func finish(_ outcome: ProcessOutcome) {
        let waiters = state.withLock { state in
            state.outcome = outcome
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: outcome) }
    }

    func wait() async -> ProcessOutcome {
        await withCheckedContinuation { continuation in
            let ready: ProcessOutcome? = state.withLock { state in
                if let outcome = state.outcome { return outcome }
                state.waiters.append(continuation)
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}

@inline(__always) private func systemClose(_ fd: Int32) -> Int32 {
    #if canImport(Darwin)
        return Darwin.close(fd)
    #elseif canImport(Musl)
        return Musl.close(fd)
    #else
        return Glibc.close(fd)
    #endif
}
