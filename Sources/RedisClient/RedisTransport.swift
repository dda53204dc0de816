import CRedisTLS

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Why a transport call failed, before it is worded as a ``RedisError``.
enum TransportFailure: Error {
    /// A socket call failed: the `strerror` (or `gai_strerror`) text.
    case system(String)
    /// The peer closed the connection.
    case closed
    /// The deadline passed.
    case timedOut
    /// The TCP connect worked, but the TLS handshake did not finish before the deadline.
    case handshakeTimedOut
    /// OpenSSL failed: see `lh_tls_failure`.
    case tls(lh_tls_failure)
}

/// An OpenSSL client context made from ``RedisTLSConfiguration`` (CA, client certificate).
final class TLSContext {
    let pointer: OpaquePointer
    let configuration: RedisTLSConfiguration

    init(_ configuration: RedisTLSConfiguration) throws(RedisError) {
        self.configuration = configuration
        var failure = lh_tls_failure()
        let made = lh_tls_context_new(
            configuration.caFile, configuration.certFile, configuration.keyFile, configuration.verify ? 1 : 0,
            &failure)
        guard let made else {
            let reason = failure.message
            let message: String
            switch failure.kind {
            case LH_TLS_FILE_CA:
                message =
                    configuration.caFile.map { "cannot use the TLS CA file '\($0)' (ca_file): \(reason)" }
                    ?? "cannot load the system's default CA certificates: \(reason)"
            case LH_TLS_FILE_CERT:
                message =
                    "cannot use the TLS client certificate '\(configuration.certFile ?? "")' (cert_file): \(reason)"
            case LH_TLS_FILE_KEY:
                message = "cannot use the TLS client key '\(configuration.keyFile ?? "")' (key_file): \(reason)"
            case LH_TLS_FILE_MISMATCH:
                message =
                    "the TLS client key '\(configuration.keyFile ?? "")' (key_file) does not match the certificate '\(configuration.certFile ?? "")' (cert_file): \(reason)"
            case LH_TLS_FILE_CERT_WITHOUT_KEY:
                message = "TLS client certificate settings incomplete: \(reason) (set both cert_file and key_file)"
            default:
                message = "cannot set up TLS: \(reason)"
            }
            throw RedisError(kind: .invalidURL, message: message)
        }
        pointer = made
    }

    deinit { lh_tls_context_free(pointer) }
}

extension lh_tls_failure {
    /// OpenSSL's (or the system's) reason, one line.
    var message: String {
        withUnsafeBytes(of: text) { raw in String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self) }
    }
}

/// The socket under hiredis's encoder and reply reader: TCP or a unix socket, optionally TLS,
/// always non-blocking and driven by poll(2) with deadlines, so that connect, the TLS
/// handshake and every read and write are bounded (hiredis 0.14 has no TLS and its own
/// socket layer cannot take an SSL object).
final class Transport {
    let fd: Int32
    private let tls: OpaquePointer?
    /// Set once bytes arrived, to tell "closed at once" from "closed mid-conversation".
    private(set) var receivedAny = false
    /// The first byte the server ever sent (a plain client sees 0x15/0x16 from a TLS port).
    private(set) var firstByte: UInt8?

    private init(fd: Int32, tls: OpaquePointer?) {
        self.fd = fd
        self.tls = tls
    }

    deinit {
        if let tls { lh_tls_free(tls) }
        close(fd)
    }

    /// Whether this is a TLS connection.
    var isTLS: Bool { tls != nil }

    /// Decrypted bytes OpenSSL holds that poll(2) on the socket cannot see.
    var hasBufferedInput: Bool { tls.map { lh_tls_pending($0) > 0 } ?? false }

    /// The negotiated TLS version ("TLSv1.3"), nil for plain connections.
    var tlsVersion: String? { tls.map { String(cString: lh_tls_version($0)) } }

    // MARK: Connect

    /// Connects and, when `tlsContext` is given, completes the TLS handshake, all before `deadline`.
    static func connect(
        _ address: RedisEndpoint.Address, tlsContext: TLSContext?, serverName: String?,
        deadline: ContinuousClock.Instant
    ) throws(TransportFailure) -> Transport {
        let fd = try openSocket(address, deadline: deadline)
        guard let tlsContext else { return Transport(fd: fd, tls: nil) }
        var failure = lh_tls_failure()
        guard let session = lh_tls_new(tlsContext.pointer, fd, serverName, &failure) else {
            close(fd)
            throw .tls(failure)
        }
        let transport = Transport(fd: fd, tls: session)
        do throws(TransportFailure) {
            while true {
                let status = lh_tls_handshake(session, &failure)
                switch status {
                case LH_TLS_OK: return transport
                case LH_TLS_WANT_READ: try transport.wait(for: Int16(POLLIN), until: deadline)
                case LH_TLS_WANT_WRITE: try transport.wait(for: Int16(POLLOUT), until: deadline)
                case LH_TLS_CLOSED: throw TransportFailure.closed
                default: throw TransportFailure.tls(failure)
                }
            }
        } catch {
            if case .timedOut = error { throw .handshakeTimedOut }
            throw error
        }
    }

    private static func openSocket(_ address: RedisEndpoint.Address, deadline: ContinuousClock.Instant)
        throws(TransportFailure) -> Int32
    {
        switch address {
        case .unix(let path):
            var storage = sockaddr_un()
            storage.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(path.utf8)
            let capacity = MemoryLayout.size(ofValue: storage.sun_path)
            guard bytes.count < capacity else { throw .system("socket path too long (\(bytes.count) bytes)") }
            withUnsafeMutableBytes(of: &storage.sun_path) { raw in
                raw.copyBytes(from: bytes)
                raw[bytes.count] = 0
            }
            let length = socklen_t(MemoryLayout<sockaddr_un>.size)
            return try withUnsafePointer(to: &storage) { pointer throws(TransportFailure) -> Int32 in
                try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw throws(TransportFailure) in
                    try connectOne(family: AF_UNIX, address: raw, length: length, deadline: deadline)
                }
            }
        case .tcp(let host, let port):
            var hints = addrinfo()
            hints.ai_family = AF_UNSPEC
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var list: UnsafeMutablePointer<addrinfo>?
            // getaddrinfo cannot be bounded; hiredis resolves the same way.
            let status = getaddrinfo(host, String(port), &hints, &list)
            guard status == 0, let list else { throw .system(String(cString: gai_strerror(status))) }
            defer { freeaddrinfo(list) }
            var lastFailure = TransportFailure.system("no address for \(host)")
            var entry: UnsafeMutablePointer<addrinfo>? = list
            while let current = entry {
                do {
                    let fd = try connectOne(
                        family: current.pointee.ai_family, address: current.pointee.ai_addr,
                        length: current.pointee.ai_addrlen, deadline: deadline)
                    var one: Int32 = 1
                    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, socklen_t(MemoryLayout<Int32>.size))
                    return fd
                } catch {
                    if case .timedOut = error { throw error }
                    lastFailure = error
                }
                entry = current.pointee.ai_next
            }
            throw lastFailure
        }
    }

    private static func connectOne(
        family: Int32, address: UnsafePointer<sockaddr>, length: socklen_t, deadline: ContinuousClock.Instant
    ) throws(TransportFailure) -> Int32 {
        let fd = socket(
            family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw .system(String(cString: strerror(errno))) }
        var result: Int32
        repeat { result = Glibc.connect(fd, address, length) } while result != 0 && errno == EINTR
        if result != 0 {
            let code = errno
            guard code == EINPROGRESS else {
                close(fd)
                throw .system(String(cString: strerror(code)))
            }
            do {
                try waitForDescriptor(fd, events: Int16(POLLOUT), until: deadline)
            } catch {
                close(fd)
                throw error
            }
            var socketError: Int32 = 0
            var size = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &socketError, &size)
            if socketError != 0 {
                close(fd)
                throw .system(String(cString: strerror(socketError)))
            }
        }
        return fd
    }

    // MARK: I/O

    /// Writes all of `bytes` before `deadline`.
    func write(_ bytes: [UInt8], until deadline: ContinuousClock.Instant) throws(TransportFailure) {
        var offset = 0
        while offset < bytes.count {
            let result = bytes.withUnsafeBytes { raw in
                Result { () throws(TransportFailure) -> Int in
                    try writeSome(raw.baseAddress! + offset, raw.count - offset, until: deadline)
                }
            }
            offset += try result.get()
        }
    }

    private func writeSome(_ pointer: UnsafeRawPointer, _ count: Int, until deadline: ContinuousClock.Instant)
        throws(TransportFailure) -> Int
    {
        while true {
            if let tls {
                var written = 0
                var failure = lh_tls_failure()
                switch lh_tls_write(tls, pointer, count, &written, &failure) {
                case LH_TLS_OK: return written
                case LH_TLS_WANT_READ: try wait(for: Int16(POLLIN), until: deadline)
                case LH_TLS_WANT_WRITE: try wait(for: Int16(POLLOUT), until: deadline)
                case LH_TLS_CLOSED: throw .closed
                default: throw .tls(failure)
                }
            } else {
                let n = send(fd, pointer, count, Int32(MSG_NOSIGNAL))
                if n >= 0 { return n }
                let code = errno
                if code == EINTR { continue }
                guard code == EAGAIN || code == EWOULDBLOCK else { throw .system(String(cString: strerror(code))) }
                try wait(for: Int16(POLLOUT), until: deadline)
            }
        }
    }

    /// Reads what is available (waiting until `deadline` for at least one byte) into `buffer`;
    /// returns the count, never 0 (a closed connection throws).
    func read(into buffer: UnsafeMutableRawBufferPointer, until deadline: ContinuousClock.Instant)
        throws(TransportFailure) -> Int
    {
        while true {
            var count = 0
            if let tls {
                var failure = lh_tls_failure()
                switch lh_tls_read(tls, buffer.baseAddress, buffer.count, &count, &failure) {
                case LH_TLS_OK: break
                case LH_TLS_WANT_READ:
                    try wait(for: Int16(POLLIN), until: deadline)
                    continue
                case LH_TLS_WANT_WRITE:
                    try wait(for: Int16(POLLOUT), until: deadline)
                    continue
                case LH_TLS_CLOSED: throw .closed
                default: throw .tls(failure)
                }
            } else {
                let n = recv(fd, buffer.baseAddress, buffer.count, 0)
                if n == 0 { throw .closed }
                if n < 0 {
                    let code = errno
                    if code == EINTR { continue }
                    guard code == EAGAIN || code == EWOULDBLOCK else {
                        throw .system(String(cString: strerror(code)))
                    }
                    try wait(for: Int16(POLLIN), until: deadline)
                    continue
                }
                count = n
            }
            if count == 0 { continue }
            if !receivedAny {
                receivedAny = true
                firstByte = buffer[0]
            }
            return count
        }
    }

    private func wait(for events: Int16, until deadline: ContinuousClock.Instant) throws(TransportFailure) {
        try Self.waitForDescriptor(fd, events: events, until: deadline)
    }

    /// poll(2) for `events` until `deadline`; a hang-up or error counts as ready (the next
    /// call on the socket reports it).
    static func waitForDescriptor(_ fd: Int32, events: Int16, until deadline: ContinuousClock.Instant)
        throws(TransportFailure)
    {
        while true {
            let left = deadline - ContinuousClock.now
            if left <= .zero { throw .timedOut }
            let milliseconds = Int32(clamping: (left.nanoseconds + 999_999) / 1_000_000)
            var descriptor = pollfd(fd: fd, events: events, revents: 0)
            let ready = poll(&descriptor, 1, milliseconds)
            if ready > 0 { return }
            if ready < 0 && errno != EINTR { throw .system(String(cString: strerror(errno))) }
        }
    }
}
