import Dispatch
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A loopback TCP server that is *not* Redis, for testing how clients cope with whatever
/// answers on a port: garbage, an HTTP server, or silence.
public final class FakeTCPServer: Sendable {
    public enum Behavior: Sendable {
        /// Writes these bytes as soon as a client connects, then keeps the connection open.
        case greet([UInt8])
        /// Waits for the client's first bytes, answers with these bytes, then closes (like HTTP).
        case answer([UInt8])
        /// Accepts and never says anything (a black hole after the handshake).
        case silent
        /// Accepts and closes at once.
        case close

        public static let http = Behavior.answer(
            Array("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8))
        public static let garbage = Behavior.greet([0x00, 0xff, 0x13, 0x37] + Array("garbage, not RESP\r\n".utf8))
    }

    public let port: Int
    private let shared: Shared

    /// Owned jointly by the server object and its accept thread; closes the listener last.
    private final class Shared: Sendable {
        let listener: Int32
        let accepted = Mutex<(open: [Int32], stopped: Bool)>(([], false))
        init(listener: Int32) { self.listener = listener }
        /// Closing only here (never while a worker may still use a descriptor) rules out fd reuse races.
        deinit {
            for fd in accepted.withLock({ $0.open }) { close(fd) }
            close(listener)
        }
    }

    public init(behavior: Behavior) throws {
        let (fd, port) = try openLoopbackListener(backlog: 16)
        self.port = port
        let shared = Shared(listener: fd)
        self.shared = shared
        DispatchQueue(label: "leasehold.fake-tcp-server").async { Self.acceptLoop(shared, behavior) }
    }

    public var url: String { "redis://127.0.0.1:\(port)/0" }

    private static func acceptLoop(_ shared: Shared, _ behavior: Behavior) {
        while true {
            let client = accept(shared.listener, nil, nil)
            if client < 0 {
                if errno == EINTR { continue }
                return  // listener shut down
            }
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            let keep = shared.accepted.withLock { state -> Bool in
                if state.stopped { return false }
                state.open.append(client)
                return true
            }
            if !keep {
                close(client)
                return
            }
            switch behavior {
            case .greet(let bytes):
                _ = bytes.withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            case .answer(let bytes):
                DispatchQueue.global().async {
                    withExtendedLifetime(shared) {  // keeps `client` open until this worker is done
                        var buffer = [UInt8](repeating: 0, count: 4096)
                        let n = recv(client, &buffer, buffer.count, 0)
                        if n > 0 {
                            _ = bytes.withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                        }
                        shutdown(client, Int32(SHUT_RDWR))
                    }
                }
            case .silent:
                break
            case .close:
                shutdown(client, Int32(SHUT_RDWR))
            }
        }
    }

    /// Closes the listener and every accepted connection.
    public func stop() {
        let open = shared.accepted.withLock { state -> [Int32]? in
            if state.stopped { return nil }
            state.stopped = true
            return state.open
        }
        guard let open else { return }
        shutdown(shared.listener, Int32(SHUT_RDWR))
        for fd in open { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    deinit { stop() }
}

public struct TestSupportError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
