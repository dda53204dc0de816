import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A loopback TCP proxy whose behaviour can be switched at run time, to put network faults
/// between clients and a server on a machine without `tc netem` (FIELD-NOTES.md).
///
/// Listens on 127.0.0.1:`port` and forwards every accepted connection to
/// 127.0.0.1:`targetPort`. Each connection has two pump threads (one per direction); each
/// pump holds a queue of chunks with a due time, so a delay does not accumulate over chunks
/// and a black hole can hold traffic and release it later, as TCP retransmission would after a
/// partition heals (the "timed-out call executed after the heal" case of FIELD-NOTES.md).
public final class FaultProxy: Sendable {
    public enum Mode: Sendable, Equatable, CustomStringConvertible {
        /// Forward everything at once.
        case pass
        /// Forward each chunk `milliseconds` after it was read (both directions).
        case delay(milliseconds: Int)
        /// Reset every open connection, and reset new ones as soon as they are accepted.
        case drop
        /// Accept and read, forward nothing: clients time out. Held bytes are delivered (in
        /// order, late) when the mode goes back to `pass`/`delay`, unless the peer is gone.
        case blackHole

        public var description: String {
            switch self {
            case .pass: "pass"
            case .delay(let ms): "delay(\(ms)ms)"
            case .drop: "drop"
            case .blackHole: "black-hole"
            }
        }
    }

    public let port: Int
    public let targetPort: Int
    private let shared: Shared

    /// Held bytes per direction beyond which a black-holed connection is reset (a stuck
    /// client must not grow the test's memory without bound).
    static let maxHeldBytes = 8 << 20

    private final class Shared: Sendable {
        let listener: Int32
        let targetPort: Int
        let state = Mutex<(mode: Mode, stopped: Bool, connections: [ObjectIdentifier: Connection], accepted: Int)>(
            (.pass, false, [:], 0))
        init(listener: Int32, targetPort: Int) {
            self.listener = listener
            self.targetPort = targetPort
        }
        var mode: Mode { state.withLock { $0.mode } }
        var stopped: Bool { state.withLock { $0.stopped } }
        deinit { close(listener) }
    }

    /// One proxied connection: the two descriptors are closed only when both pumps are done
    /// with them (deinit), so no pump can ever touch a reused descriptor.
    private final class Connection: Sendable {
        let client: Int32
        let server: Int32
        init(client: Int32, server: Int32) {
            self.client = client
            self.server = server
        }
        /// Abortive close of both sides (RST, like a dropped network path or a killed peer).
        func reset() {
            var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
            setsockopt(client, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
            setsockopt(server, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
            shutdown(client, Int32(SHUT_RDWR))
            shutdown(server, Int32(SHUT_RDWR))
        }
        deinit {
            close(client)
            close(server)
        }
    }

    /// Starts a proxy to 127.0.0.1:`targetPort` on a free loopback port.
    public init(targetPort: Int) throws {
        let (fd, port) = try openLoopbackListener()
        self.port = port
        self.targetPort = targetPort
        let shared = Shared(listener: fd, targetPort: targetPort)
        self.shared = shared
        Thread.detachNewThread { Self.acceptLoop(shared) }
    }

    deinit { stop() }

    /// `redis://[:password@]127.0.0.1:<proxy port>/<database>`.
    public func url(password: String? = nil, database: Int = 0) -> String {
        "redis://\(password.map { ":\($0)@" } ?? "")127.0.0.1:\(port)/\(database)"
    }

    /// The current mode.
    public var mode: Mode { shared.mode }

    /// Switches the mode; `.drop` also resets every open connection now.
    public func set(_ mode: Mode) {
        let toReset = shared.state.withLock { state -> [Connection] in
            state.mode = mode
            return mode == .drop ? Array(state.connections.values) : []
        }
        for connection in toReset { connection.reset() }
    }

    /// Connections accepted so far.
    public var acceptedConnections: Int { shared.state.withLock { $0.accepted } }
    /// Connections open now.
    public var openConnections: Int { shared.state.withLock { $0.connections.count } }

    /// Stops accepting and resets every open connection.
    public func stop() {
        let open = shared.state.withLock { state -> [Connection]? in
            if state.stopped { return nil }
            state.stopped = true
            return Array(state.connections.values)
        }
        guard let open else { return }
        shutdown(shared.listener, Int32(SHUT_RDWR))
        for connection in open { connection.reset() }
    }

    // MARK: Threads

    private static func acceptLoop(_ shared: Shared) {
        while true {
            let client = accept(shared.listener, nil, nil)
            if client < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                return  // listener shut down
            }
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            if shared.stopped || shared.mode == .drop {
                var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
                setsockopt(client, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
                close(client)
                if shared.stopped { return }
                continue
            }
            guard let server = connectToTarget(shared.targetPort) else {
                // Target down: the client sees its connection reset, as it would see a refusal.
                var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
                setsockopt(client, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
                close(client)
                continue
            }
            var one: Int32 = 1
            setsockopt(client, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(server, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            let connection = Connection(client: client, server: server)
            let id = ObjectIdentifier(connection)
            let registered = shared.state.withLock { state -> Bool in
                if state.stopped { return false }
                state.connections[id] = connection
                state.accepted += 1
                return true
            }
            if !registered {
                connection.reset()
                return
            }
            let done = Mutex(0)
            let finish: @Sendable () -> Void = {
                let both = done.withLock { count -> Bool in
                    count += 1
                    return count == 2
                }
                if both { shared.state.withLock { _ = $0.connections.removeValue(forKey: id) } }
            }
            Thread.detachNewThread {
                pump(from: connection.client, to: connection.server, connection, shared)
                finish()
            }
            Thread.detachNewThread {
                pump(from: connection.server, to: connection.client, connection, shared)
                finish()
            }
        }
    }

    private static func connectToTarget(_ port: Int) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        var address = sockaddr_in.loopback(port: port)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        if connected != 0 {
            close(fd)
            return nil
        }
        return fd
    }

    private struct Chunk {
        var due: ContinuousClock.Instant
        var bytes: [UInt8]?  // nil: end of stream from the source
    }

    /// Moves bytes `source` → `destination` according to the current mode until either side
    /// is closed or the connection is dropped.
    private static func pump(from source: Int32, to destination: Int32, _ connection: Connection, _ shared: Shared) {
        var queue: [Chunk] = []
        var held = 0
        var sourceOpen = true
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let mode = shared.mode
            if mode == .drop || shared.stopped {
                connection.reset()
                return
            }
            let now = ContinuousClock.now
            // Deliver what is due (nothing while black-holed).
            if mode != .blackHole {
                while let head = queue.first, head.due <= now {
                    queue.removeFirst()
                    guard let bytes = head.bytes else {
                        // Half-close; the other pump carries on until its own end or a reset.
                        shutdown(destination, Int32(SHUT_WR))
                        return
                    }
                    held -= bytes.count
                    if !writeAll(destination, bytes) {
                        connection.reset()
                        return
                    }
                }
            }
            if held > maxHeldBytes {
                connection.reset()
                return
            }
            // Wait for input, or until the head is due, at most 20 ms (mode changes are polled).
            var timeoutMs: Int32 = 20
            if mode != .blackHole, let head = queue.first {
                let left = head.due - now
                timeoutMs = max(0, min(timeoutMs, Int32(clamping: left.wholeMillisecondsRoundedUp)))
            }
            var pfd = pollfd(fd: sourceOpen ? source : -1, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pfd, 1, timeoutMs)
            if ready < 0 {
                if errno == EINTR { continue }
                connection.reset()
                return
            }
            guard sourceOpen, ready > 0, pfd.revents != 0 else { continue }
            let count = buffer.withUnsafeMutableBytes { recv(source, $0.baseAddress, $0.count, 0) }
            let due: ContinuousClock.Instant
            if case .delay(let ms) = shared.mode { due = .now + .milliseconds(ms) } else { due = .now }
            if count > 0 {
                queue.append(Chunk(due: due, bytes: Array(buffer[0..<count])))
                held += count
            } else if count == 0 || (errno != EINTR && errno != EAGAIN) {
                if count < 0, errno == ECONNRESET {
                    // The peer reset: reset the other side too.
                    connection.reset()
                    return
                }
                sourceOpen = false
                queue.append(Chunk(due: due, bytes: nil))
            }
        }
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { raw in
                send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
            }
            if written < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                return false
            }
            offset += written
        }
        return true
    }
}

extension Duration {
    var wholeMillisecondsRoundedUp: Int64 {
        let (seconds, attoseconds) = components
        if seconds < 0 || (seconds == 0 && attoseconds <= 0) { return 0 }
        return seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
    }
}
