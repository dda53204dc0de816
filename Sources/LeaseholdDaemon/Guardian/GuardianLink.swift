import CProcessSupervisor
import Dispatch
import Leasehold
import Logging
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
#endif

/// The daemon's side of its guardian: starts it from the daemon's own executable, keeps it
/// told of held leases and job supervisors, restarts it when it dies, and stands it down at
/// the end of a graceful stop.
///
/// Messages go out on change only: one write per lease-set change (acquire, renewal, loss,
/// release: one per tick while leading) and one per job process start and exit. Writes never
/// block: a guardian too slow to take a message could miss one, so it is replaced instead (a
/// guardian with an incomplete picture must never release anything).
final class GuardianLink: Sendable {
    private struct State {
        var fd: Int32 = -1
        var pid: Int32 = 0
        /// Bumped per guardian started, so a reaper of an old one cannot touch the new one.
        var generation = 0
        var stopped = false
        var sent: [String: (token: UInt64, validUntilNs: Int64)] = [:]
        var processes: Set<Int32> = []
        var spawning = 0
        var restarts = 0
    }

    private let settings: GuardianSettings
    private let executable: String
    private let logFormat: LogFormat
    private let logger: Logger
    private let state = Mutex(State())

    /// A link for `settings`; nothing runs until ``start()``.
    init(settings: GuardianSettings, executable: String = "/proc/self/exe", logFormat: LogFormat, logger: Logger) {
        self.settings = settings
        self.executable = executable
        self.logFormat = logFormat
        self.logger = logger
    }

    /// The running guardian's pid (0 when none), for tests and logs.
    var guardianPID: Int32 { state.withLock { $0.pid } }

    /// Whether this kernel offers pidfds (Linux 5.3+), without which a guardian cannot know
    /// for certain that the daemon died.
    static var isSupported: Bool {
        let fd = lh_pidfd_open(getpid())
        if fd >= 0 { close(fd) }
        return fd >= 0
    }

    /// Starts the guardian and begins forwarding process changes to it.
    func start() {
        let live = ProcessWatch.observe { [weak self] change in self?.processChanged(change) }
        state.withLock { state in
            // A union: a start reported between `observe` and here must not be dropped (an
            // end reported meanwhile leaves a pid the guardian finds gone, which is harmless).
            state.processes.formUnion(live.keys)
            spawn(&state)
        }
    }

    /// The leases held now (from the lease manager's grant observer).
    func grantsChanged(_ grants: [LeaseGrant]) {
        let base = lh_supervisor_clock_ns()
        let now = ContinuousClock.now
        var current: [String: (token: UInt64, validUntilNs: Int64)] = [:]
        for grant in grants {
            let remaining = grant.validUntil - now
            // Read the supervisor clock before ours: a stall can only make this earlier.
            current[grant.job] = (grant.token, base + Self.nanoseconds(remaining))
        }
        state.withLock { state in
            var text = ""
            for (job, lease) in current where state.sent[job].map({ $0 != lease }) ?? true {
                text += GuardianMessage.lease(job: job, token: lease.token, validUntilNs: lease.validUntilNs).line
            }
            for job in state.sent.keys where current[job] == nil {
                text += GuardianMessage.unlease(job: job).line
            }
            state.sent = current
            if !text.isEmpty { send(text, &state) }
        }
    }

    /// Graceful stop: the daemon has released (or given up on) its leases; the guardian exits.
    func standDown() {
        _ = ProcessWatch.observe(nil)
        state.withLock { state in
            state.stopped = true
            send(GuardianMessage.standDown.line, &state)
            if state.fd >= 0 { close(state.fd) }
            state.fd = -1
        }
    }

    private func processChanged(_ change: ProcessWatch.Change) {
        state.withLock { state in
            let message: GuardianMessage
            switch change {
            case .spawning:
                state.spawning += 1
                message = .spawning
            case .spawnFailed:
                state.spawning = max(0, state.spawning - 1)
                message = .spawnFailed
            case .started(let pid, _):
                state.spawning = max(0, state.spawning - 1)
                state.processes.insert(pid)
                message = .started(pid: pid)
            case .ended(let pid):
                state.processes.remove(pid)
                message = .ended(pid: pid)
            }
            send(message.line, &state)
        }
    }

    /// Writes `text` without blocking; a guardian that cannot take it all is replaced.
    private func send(_ text: String, _ state: inout State) {
        guard state.fd >= 0 else { return }
        var bytes = Array(text.utf8)
        let written = bytes.withUnsafeMutableBytes {
            Glibc.send(state.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
        }
        if written == bytes.count { return }
        // A short or failed write: the guardian is frozen, dead or gone. It must not act on
        // a partial picture, so it goes and a new one gets the whole state.
        logger.warning(
            "guardian does not keep up or is gone; replacing it",
            metadata: [
                "guardian_pid": "\(state.pid)",
                "error": "\(written < 0 ? String(cString: strerror(errno)) : "short write")",
            ])
        if state.pid > 0 { kill(state.pid, SIGKILL) }
        close(state.fd)
        state.fd = -1
        spawn(&state)
    }

    /// Starts a guardian and sends it the whole state (under the state lock, so no change
    /// can slip between the snapshot and the first update).
    private func spawn(_ state: inout State) {
        guard !state.stopped else { return }
        var pair: [Int32] = [-1, -1]
        if lh_companion_socketpair(&pair) != 0 {
            logger.error("cannot start the guardian: no socket pair; leases expire by TTL if this daemon crashes")
            return
        }
        // A large buffer: a few messages per tick must never fill it while the guardian runs.
        var size: Int32 = 1 << 20
        _ = setsockopt(pair[0], SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        let arguments = [executable, Guardian.marker, String(getpid()), logFormat.rawValue]
        let argv = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: Int32 = 0
        let rc = argv.withUnsafeBufferPointer { argvBuffer in
            lh_spawn_companion(executable, argvBuffer.baseAddress, environ, pair[1], &pid)
        }
        close(pair[1])
        guard rc == 0 else {
            close(pair[0])
            logger.error(
                "cannot start the guardian; leases expire by TTL if this daemon crashes",
                metadata: ["error": "\(String(cString: strerror(rc)))"])
            return
        }
        state.fd = pair[0]
        state.pid = pid
        state.generation += 1
        var text = GuardianMessage.configure(settings).line
        for (job, lease) in state.sent {
            text += GuardianMessage.lease(job: job, token: lease.token, validUntilNs: lease.validUntilNs).line
        }
        for process in state.processes {
            text += GuardianMessage.spawning.line + GuardianMessage.started(pid: process).line
        }
        for _ in 0..<state.spawning { text += GuardianMessage.spawning.line }
        logger.info("guardian started", metadata: ["guardian_pid": "\(pid)", "restarts": "\(state.restarts)"])
        let generation = state.generation
        send(text, &state)
        // The reaper: a guardian that exits while the daemon runs is replaced.
        // A serial queue of its own: waitpid blocks, and such queues get their own thread.
        DispatchQueue(label: "leasehold.guardian.reaper.\(pid)").async { [weak self, pid] in
            let status = lh_companion_reap(pid)
            self?.reaped(pid: pid, generation: generation, status: status)
        }
    }

    private func reaped(pid: Int32, generation: Int, status: Int32) {
        // A guardian that keeps dying must not become a fork loop: back off up to 30 s.
        let restarts = state.withLock { $0.restarts }
        if restarts > 0 { usleep(UInt32(min(30, restarts)) * 1_000_000) }
        state.withLock { state in
            guard state.generation == generation, !state.stopped else { return }
            var value: Int32 = 0
            let kind = lh_decode_wait_status(status, &value)
            logger.error(
                "guardian exited; starting a new one",
                metadata: [
                    "guardian_pid": "\(pid)", kind == 2 ? "signal" : "status": "\(value)",
                ])
            if state.fd >= 0 { close(state.fd) }
            state.fd = -1
            state.restarts += 1
            spawn(&state)
        }
    }

    private static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        let (product, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? (seconds < 0 ? .min / 2 : .max / 2) : product + attoseconds / 1_000_000_000
    }
}
