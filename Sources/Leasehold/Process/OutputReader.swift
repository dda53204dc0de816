import CProcessSupervisor

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Splits a byte stream into lines; a line longer than `maxLineBytes` is cut into chunks so
/// a job printing without newlines cannot grow the daemon's memory without bound.
struct LineSplitter {
    /// Longest line kept whole.
    static let maxLineBytes = 64 * 1024
    private var pending: [UInt8] = []

    /// Appends bytes and returns the complete lines they finish (without the `\n`).
    mutating func append(_ bytes: UnsafeRawBufferPointer) -> [String] {
        var lines: [String] = []
        for byte in bytes {
            if byte == UInt8(ascii: "\n") {
                lines.append(String(decoding: pending, as: UTF8.self))
                pending.removeAll(keepingCapacity: true)
            } else {
                pending.append(byte)
                if pending.count >= Self.maxLineBytes {
                    lines.append(String(decoding: pending, as: UTF8.self))
                    pending.removeAll(keepingCapacity: true)
                }
            }
        }
        return lines
    }

    /// The unterminated last line at end of stream, if any.
    mutating func finish() -> String? {
        defer { pending = [] }
        return pending.isEmpty ? nil : String(decoding: pending, as: UTF8.self)
    }
}

/// Runs on its own thread (blocking poll/read/waitpid must stay off the cooperative pool):
/// forwards the job's output lines, reads the supervisor's end report, reaps the supervisor.
final class OutputReader: Sendable {
    /// How long to keep draining output after the end report: only a process that escaped
    /// the group (setsid) can still hold the pipes then, and it must not hold up the outcome.
    static let drainAfterEnd: Duration = .seconds(2)

    private let stdoutFD: Int32
    private let stderrFD: Int32
    private let statusFD: Int32
    private let supervisorPID: Int32
    private let processGroupID: Int32
    private let feed: FeedChannelCloser
    private let completion: @Sendable (ProcessOutcome) -> Void
    private let onOutputLine: @Sendable (ProcessOutputStream, String) -> Void

    init(
        stdoutFD: Int32, stderrFD: Int32, statusFD: Int32, supervisorPID: Int32, processGroupID: Int32,
        feed: FeedChannelCloser, completion: @escaping @Sendable (ProcessOutcome) -> Void,
        onOutputLine: @escaping @Sendable (ProcessOutputStream, String) -> Void
    ) {
        self.stdoutFD = stdoutFD
        self.stderrFD = stderrFD
        self.statusFD = statusFD
        self.supervisorPID = supervisorPID
        self.processGroupID = processGroupID
        self.feed = feed
        self.completion = completion
        self.onOutputLine = onOutputLine
    }

    func run() {
        var fds = [
            pollfd(fd: stdoutFD, events: Int16(POLLIN), revents: 0),
            pollfd(fd: stderrFD, events: Int16(POLLIN), revents: 0),
            pollfd(fd: statusFD, events: Int16(POLLIN), revents: 0),
        ]
        var splitters = [LineSplitter(), LineSplitter()]
        let streams: [ProcessOutputStream] = [.stdout, .stderr]
        var outcome: ProcessOutcome?
        var drainUntil: ContinuousClock.Instant?
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 8)
        defer { buffer.deallocate() }

        while fds.contains(where: { $0.fd >= 0 }) {
            var timeout: Int32 = -1
            if let drainUntil {
                let left = drainUntil - .now
                if left <= .zero { break }
                timeout = Int32(
                    clamping: left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1)
            }
            let ready = fds.withUnsafeMutableBufferPointer { poll($0.baseAddress, nfds_t($0.count), timeout) }
            if ready < 0 { continue }  // EINTR
            for index in fds.indices where fds[index].fd >= 0 && fds[index].revents != 0 {
                let fd = fds[index].fd
                if index < 2 {
                    let count = read(fd, buffer.baseAddress, buffer.count)
                    if count < 0 && (errno == EINTR || errno == EAGAIN) { continue }
                    if count <= 0 {
                        if let last = splitters[index].finish() { onOutputLine(streams[index], last) }
                        _ = close(fd)
                        fds[index].fd = -1
                        continue
                    }
                    for line in splitters[index].append(UnsafeRawBufferPointer(rebasing: buffer[0..<count])) {
                        onOutputLine(streams[index], line)
                    }
                } else {
                    var message = lh_status_msg_t()
                    let size = MemoryLayout<lh_status_msg_t>.size
                    let count = withUnsafeMutableBytes(of: &message) { read(fd, $0.baseAddress, size) }
                    if count < 0 && errno == EINTR { continue }
                    if count == size {
                        if message.kind == Int32(LH_STATUS_ENDED) { outcome = Self.decode(message) }
                        continue
                    }
                    _ = close(fd)
                    fds[index].fd = -1
                    if outcome == nil {
                        // The supervisor died without a report (killed by someone): the job is
                        // unsupervised now, so stop its group from here as a last resort.
                        _ = killpg(processGroupID, SIGKILL)
                        outcome = ProcessOutcome(status: .unknown, cause: .supervisorLost, escalatedToKill: true)
                    }
                    drainUntil = .now + Self.drainAfterEnd
                }
            }
        }
        for index in 0..<2 where fds[index].fd >= 0 {
            if let last = splitters[index].finish() { onOutputLine(streams[index], last) }
        }
        for entry in fds where entry.fd >= 0 { _ = close(entry.fd) }
        feed.close()
        _ = lh_supervised_reap(supervisorPID)
        completion(outcome ?? ProcessOutcome(status: .unknown, cause: .supervisorLost, escalatedToKill: false))
    }

    private static func decode(_ message: lh_status_msg_t) -> ProcessOutcome {
        var value: Int32 = 0
        let status: ProcessEndReason
        switch lh_decode_wait_status(message.b, &value) {
        case 1: status = .exited(value)
        case 2: status = .signalled(value)
        default: status = .unknown
        }
        let cause: ProcessEndCause
        switch UInt32(bitPattern: message.a) {
        case LH_END_DEADLINE.rawValue: cause = .deadlinePassed
        case LH_END_ORPHANED.rawValue: cause = .orphaned
        case LH_END_TERMINATED.rawValue: cause = .terminated
        default: cause = .ownExit
        }
        return ProcessOutcome(status: status, cause: cause, escalatedToKill: message.c != 0)
    }
}

/// What the reader needs of the feed: closing it once the run is over.
protocol FeedChannelCloser: Sendable {
    /// Closes the daemon's end of the feed (idempotent).
    func close()
}
