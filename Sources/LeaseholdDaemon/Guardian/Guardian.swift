import CProcessSupervisor
import Dispatch
import Leasehold
import LeaseholdElection
import Logging
import RedisClient

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The guardian: a companion process of one daemon, started from the daemon's own executable
/// with ``marker`` as its first argument. It holds no lease and never acquires one. It waits
/// for the daemon to exit (a pidfd, never a quiet socket: a stopped daemon is alive), then
/// for the daemon's job supervisors to be gone, then releases the leases it was told of by
/// exact value, so standbys take over at once instead of after the TTL, and exits.
enum Guardian {
    /// The first argument that makes the daemon's executable run as a guardian.
    static let marker = "--leasehold-guardian"

    /// What the guardian knows of its daemon, from the socket.
    struct State {
        var settings: GuardianSettings?
        var leases: [String: (token: UInt64, validUntilNs: Int64)] = [:]
        /// Supervisor pid to its pidfd (opened as soon as it is announced, so a reused pid
        /// can never stand in for it).
        var processes: [Int32: Int32] = [:]
        var spawning = 0
        var stoodDown = false
        /// A line that could not be parsed or a pidfd that could not be opened: the state is
        /// not complete, so nothing may be released.
        var broken: String?

        mutating func apply(_ message: GuardianMessage) {
            switch message {
            case .configure(let settings): self.settings = settings
            case .lease(let job, let token, let valid): leases[job] = (token, valid)
            case .unlease(let job): leases[job] = nil
            case .spawning: spawning += 1
            case .spawnFailed: spawning = max(0, spawning - 1)
            case .started(let pid):
                spawning = max(0, spawning - 1)
                let fd = lh_pidfd_open(pid)
                if fd >= 0 {
                    processes[pid] = fd
                } else if errno != ESRCH {
                    // ESRCH: it is gone already (and reaped), which is what we would wait for.
                    broken = "cannot watch job supervisor \(pid): \(String(cString: strerror(errno)))"
                }
            case .ended(let pid):
                if let fd = processes.removeValue(forKey: pid) { close(fd) }
            case .standDown: stoodDown = true
            }
        }
    }

    /// Runs the guardian when `arguments` start with ``marker``; otherwise returns at once.
    /// Arguments after the marker: the daemon's pid and the log format.
    static func runIfRequested(_ arguments: [String]) async {
        guard arguments.count >= 2, arguments[1] == marker else { return }
        let pid = arguments.count > 2 ? Int32(arguments[2]) ?? 0 : 0
        let format = arguments.count > 3 ? LogFormat(rawValue: arguments[3]) ?? .text : .text
        // Terminal and stop signals aimed at the daemon's unit must not end a guardian that is
        // releasing: it exits by itself as soon as its work is done or moot.
        for sig in [SIGINT, SIGHUP, SIGQUIT, SIGTERM, SIGPIPE] { signal(sig, SIG_IGN) }
        LoggingSystem.bootstrap { label in DaemonLogHandler(label: label, format: format, level: .info) }
        let logger = Logger(label: "leasehold.guardian")
        exit(await run(daemonPID: pid, socket: LH_COMPANION_FD, logger: logger))
    }

    /// Watches `daemonPID`, reading the socket; acts after its death. Returns the exit code.
    static func run(daemonPID: Int32, socket: Int32, logger: Logger) async -> Int32 {
        let pidfd = lh_pidfd_open(daemonPID)
        guard pidfd >= 0, getppid() == daemonPID else {
            // Not ours (already gone and the pid reused, or started by hand): nothing to guard.
            logger.error("guardian: the daemon is not its parent any more, or pidfds are unavailable; exiting")
            return 1
        }
        let (state, diedAt) = await withCheckedContinuation { continuation in
            // Blocking poll(2): on a thread of its own, not the cooperative pool.
            DispatchQueue(label: "leasehold.guardian.watch").async {
                continuation.resume(returning: watch(pidfd: pidfd, socket: socket))
            }
        }
        if state.stoodDown { return 0 }
        guard let settings = state.settings else { return 0 }
        if state.leases.isEmpty { return 0 }
        let member = settings.owner.member
        if let broken = state.broken {
            logger.error(
                "guardian: daemon died; no crash release (\(broken)): its leases expire by TTL",
                metadata: ["member": "\(member)"])
            return 1
        }
        if state.spawning > 0 {
            logger.warning(
                "guardian: daemon died while starting a job; no crash release: its leases expire by TTL",
                metadata: ["member": "\(member)"])
            return 0
        }
        logger.notice(
            "guardian: daemon died; waiting for its jobs to stop",
            metadata: [
                "member": "\(member)", "leases": "\(state.leases.count)", "processes": "\(state.processes.count)",
            ])
        let stillValid = await withCheckedContinuation { continuation in
            DispatchQueue(label: "leasehold.guardian.jobs").async {
                continuation.resume(returning: waitForJobs(state))
            }
        }
        guard !stillValid.isEmpty else {
            logger.warning(
                "guardian: the daemon's jobs outlived its leases; nothing to release",
                metadata: ["member": "\(member)"])
            return 0
        }
        return await release(stillValid, settings: settings, diedAt: diedAt, logger: logger)
    }

    /// Reads messages until the daemon's pidfd is readable; returns the state and the death
    /// instant (supervisor clock, ns).
    static func watch(pidfd: Int32, socket: Int32) -> (State, Int64) {
        var state = State()
        var reader = LineReader(fd: socket)
        var socketOpen = true
        while true {
            var fds = [pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)]
            if socketOpen { fds.append(pollfd(fd: socket, events: Int16(POLLIN), revents: 0)) }
            let n = poll(&fds, nfds_t(fds.count), -1)
            if n < 0 { continue }  // EINTR
            // The socket first: a stand-down sent just before a graceful exit must win.
            if socketOpen, fds.count > 1, fds[1].revents != 0 {
                socketOpen = reader.read { state.apply($0) } != .closed
                if reader.garbled { state.broken = "unreadable message from the daemon" }
                if state.stoodDown { return (state, lh_supervisor_clock_ns()) }
            }
            if fds[0].revents != 0 {
                let diedAt = lh_supervisor_clock_ns()
                // Everything the daemon wrote before it died is in the socket buffer.
                while socketOpen, reader.read({ state.apply($0) }) == .data {}
                if reader.garbled { state.broken = "unreadable message from the daemon" }
                return (state, diedAt)
            }
        }
    }

    /// Waits until every job supervisor announced has exited, at most until the last lease's
    /// validity ends; returns the leases still valid then.
    static func waitForJobs(_ state: State) -> [String: (token: UInt64, validUntilNs: Int64)] {
        var pending = Array(state.processes.values)
        let latest = state.leases.values.map(\.validUntilNs).max() ?? 0
        while !pending.isEmpty {
            let now = lh_supervisor_clock_ns()
            guard now < latest else { return [:] }
            var fds = pending.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            let timeout = Int32(clamping: max(1, (latest - now) / 1_000_000))
            _ = poll(&fds, nfds_t(fds.count), min(timeout, 1000))
            pending = fds.filter { $0.revents == 0 }.map(\.fd)
        }
        let now = lh_supervisor_clock_ns()
        return state.leases.filter { $0.value.validUntilNs > now }
    }

    /// Releases `leases` by exact value with the normal release script; retries a failed
    /// call while any of them is still valid.
    static func release(
        _ leases: [String: (token: UInt64, validUntilNs: Int64)], settings: GuardianSettings, diedAt: Int64,
        logger: Logger
    ) async -> Int32 {
        let codec = LeaseScriptCodec(keys: LeaseKeys(namespace: settings.namespace), owner: settings.owner)
        let connection = RedisConnection(configuration: settings.redis)
        let jobs = leases.keys.sorted()
        let latest = leases.values.map(\.validUntilNs).max() ?? 0
        var attempt = 0
        while lh_supervisor_clock_ns() < latest {
            attempt += 1
            let downMs = (lh_supervisor_clock_ns() - diedAt) / 1_000_000
            let call = codec.releaseCall(
                jobs.map { ReleaseItem(job: $0, token: leases[$0]!.token) }, reason: .crashRelease, leaving: true,
                downMs: downMs)
            do {
                let reply = try await connection.evaluate(call.script, keys: call.keys, arguments: call.arguments)
                let released = try codec.decodeRelease(reply, count: jobs.count)
                for (job, done) in zip(jobs, released) {
                    logger.notice(
                        done
                            ? "guardian: released the lease of the dead daemon"
                            : "guardian: lease had moved on; left alone",
                        metadata: [
                            "job": "\(job)", "member": "\(settings.owner.member)", "token": "\(leases[job]!.token)",
                            "down_ms": "\(downMs)", "reason": "crash_release",
                        ])
                }
                await connection.close()
                return 0
            } catch {
                logger.warning(
                    "guardian: release failed; retrying while the leases are valid",
                    metadata: ["error": "\(error)", "attempt": "\(attempt)"])
                try? await Task.sleep(for: .milliseconds(min(50 * attempt, 500)))
            }
        }
        await connection.close()
        logger.warning("guardian: leases expired before Redis answered; they expire by TTL")
        return 1
    }
}

/// Reads newline-terminated messages from a blocking stream socket.
struct LineReader {
    let fd: Int32
    var buffer: [UInt8] = []
    /// Set when a line did not parse.
    var garbled = false

    init(fd: Int32) { self.fd = fd }

    /// What one read found.
    enum Outcome { case data, wouldBlock, closed }

    /// Reads what the kernel has (never blocks) and hands every complete message to `body`.
    mutating func read(_ body: (GuardianMessage) -> Void) -> Outcome {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        if n < 0 { return errno == EINTR ? .data : errno == EAGAIN || errno == EWOULDBLOCK ? .wouldBlock : .closed }
        if n == 0 { return .closed }
        buffer.append(contentsOf: chunk[0..<n])
        var start = 0
        while let newline = buffer[start...].firstIndex(of: UInt8(ascii: "\n")) {
            let line = String(decoding: buffer[start..<newline], as: UTF8.self)
            if let message = GuardianMessage(line: Substring(line)) { body(message) } else { garbled = true }
            start = newline + 1
        }
        buffer.removeFirst(start)
        return .data
    }
}
