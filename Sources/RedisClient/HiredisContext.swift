import CHiredis
import CRedisTLS

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The only place that touches hiredis: its RESP encoder (`redisFormatCommandArgv`) and reply
/// reader (`redisReader`). The socket under it, plain or TLS, is a ``Transport`` of our own.
/// Not thread-safe, not Sendable: one owner at a time (the ``RedisConnection`` actor, or the
/// subscriber's own thread).
final class HiredisContext {
    private let reader: UnsafeMutablePointer<redisReader>
    private let transport: Transport
    /// Formatted commands not yet written.
    private var output: [UInt8] = []
    let configuration: RedisConfiguration
    /// Set once a call failed at the transport level: the context must not be used again.
    private(set) var isBroken = false

    var endpoint: RedisEndpoint { configuration.endpoint }
    var fileDescriptor: Int32 { transport.fd }
    /// Input already inside the TLS layer: poll(2) on ``fileDescriptor`` cannot see it.
    var hasBufferedInput: Bool { transport.hasBufferedInput }
    /// "TLSv1.3" on a TLS connection, nil on a plain one.
    var tlsVersion: String? { transport.tlsVersion }

    private init(transport: Transport, configuration: RedisConfiguration) throws(RedisError) {
        guard let reader = redisReaderCreate() else {
            throw RedisError(
                kind: .unavailable, message: "cannot allocate a hiredis reader for \(configuration.endpoint)")
        }
        self.reader = reader
        self.transport = transport
        self.configuration = configuration
    }

    deinit { redisReaderFree(reader) }

    /// Connects (and completes the TLS handshake) within `connectTimeout`, then AUTH and
    /// SELECT within the command timeout; over TLS a PING when there is neither, so that a
    /// server refusing the client certificate (TLS 1.3 says so only after the handshake)
    /// fails the connect rather than the first command.
    static func connect(_ configuration: RedisConfiguration) throws(RedisError) -> HiredisContext {
        let endpoint = configuration.endpoint
        let deadline = ContinuousClock.now + configuration.connectTimeout
        var tlsContext: TLSContext?
        if let tls = endpoint.tls {
            if case .unix = endpoint.address {
                throw RedisError(
                    kind: .invalidURL,
                    message: "TLS settings given for the unix socket \(endpoint): Redis serves TLS on TCP ports only")
            }
            tlsContext = try TLSContext(tls)
        }
        let transport: Transport
        do {
            transport = try Transport.connect(
                endpoint.address, tlsContext: tlsContext, serverName: endpoint.tlsServerName, deadline: deadline)
        } catch {
            throw mapConnectFailure(error, configuration: configuration, tls: tlsContext != nil)
        }
        let context = try HiredisContext(transport: transport, configuration: configuration)
        try context.handshake()
        return context
    }

    private func handshake() throws(RedisError) {
        var sent = false
        if let password = endpoint.password {
            sent = true
            var arguments: [[UInt8]] = [Array("AUTH".utf8)]
            if let username = endpoint.username { arguments.append(Array(username.utf8)) }
            arguments.append(Array(password.utf8))
            let reply = try command(arguments, phase: .handshake)
            if case .error(let text) = reply {
                isBroken = true
                throw RedisError(
                    kind: .authenticationFailed,
                    message:
                        "authentication failed for \(endpoint): \(text) — check the user and password in the Redis URL")
            }
        }
        if endpoint.database != 0 {
            sent = true
            let reply = try command([Array("SELECT".utf8), Array(String(endpoint.database).utf8)], phase: .handshake)
            if case .error(let text) = reply {
                isBroken = true
                if Self.isAuthenticationError(text) {
                    throw Self.authenticationRequired(endpoint, text)
                }
                throw RedisError(
                    kind: .server,
                    message:
                        "SELECT \(endpoint.database) failed on \(endpoint): \(text) — check the database number in the Redis URL"
                )
            }
        }
        if transport.isTLS && !sent {
            // Any reply (even NOAUTH, which the first real command reports) proves the session.
            _ = try command([Array("PING".utf8)], phase: .handshake)
        }
    }

    // MARK: Commands

    func command(_ arguments: [[UInt8]]) throws(RedisError) -> RedisReply {
        try command(arguments, phase: .command)
    }

    private func command(_ arguments: [[UInt8]], phase: Phase) throws(RedisError) -> RedisReply {
        try append(arguments)
        return try readReply(phase: phase)
    }

    /// Formats a command into the output buffer (no I/O).
    func append(_ arguments: [[UInt8]]) throws(RedisError) {
        precondition(!arguments.isEmpty, "a Redis command needs at least one argument")
        var flat: [UInt8] = []
        flat.reserveCapacity(arguments.reduce(1) { $0 + $1.count })
        var offsets: [Int] = []
        var lengths: [Int] = []
        offsets.reserveCapacity(arguments.count)
        lengths.reserveCapacity(arguments.count)
        for argument in arguments {
            offsets.append(flat.count)
            lengths.append(argument.count)
            flat.append(contentsOf: argument)
        }
        flat.append(0)  // never empty, so baseAddress is never nil
        var formatted: UnsafeMutablePointer<CChar>?
        let length = flat.withUnsafeBufferPointer { buffer -> Int32 in
            let base = UnsafeRawPointer(buffer.baseAddress!)
            var argv: [UnsafePointer<CChar>?] = offsets.map { (base + $0).assumingMemoryBound(to: CChar.self) }
            return redisFormatCommandArgv(&formatted, Int32(arguments.count), &argv, lengths)
        }
        guard length >= 0, let formatted else {
            isBroken = true
            throw RedisError(kind: .unavailable, message: "cannot format a command for \(endpoint) (out of memory)")
        }
        defer { redisFreeCommand(formatted) }
        UnsafeRawPointer(formatted).withMemoryRebound(to: UInt8.self, capacity: Int(length)) { bytes in
            output.append(contentsOf: UnsafeBufferPointer(start: bytes, count: Int(length)))
        }
    }

    /// Flushes pending output and waits (up to the command timeout) for one reply.
    func readReply() throws(RedisError) -> RedisReply {
        try readReply(phase: .command)
    }

    private func readReply(phase: Phase) throws(RedisError) -> RedisReply {
        let deadline = ContinuousClock.now + configuration.commandTimeout
        try flush(until: deadline, phase: phase)
        while true {
            if let reply = try bufferedReply() { return reply }
            try fill(until: deadline, phase: phase)
        }
    }

    // MARK: Non-blocking pieces for the subscriber

    /// A reply already parsed from the input buffer, without I/O.
    func bufferedReply() throws(RedisError) -> RedisReply? {
        var out: UnsafeMutableRawPointer?
        if redisReaderGetReply(reader, &out) != REDIS_OK {
            isBroken = true
            let text = withUnsafeBytes(of: reader.pointee.errstr) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            throw notRedis(text)
        }
        guard let out else { return nil }
        defer { freeReplyObject(out) }
        return RedisReply(hiredis: out.assumingMemoryBound(to: redisReply.self))
    }

    /// Reads what the socket (or the TLS layer) has into the reader; call when
    /// ``fileDescriptor`` is readable or ``hasBufferedInput``. A partial TLS record is waited
    /// for up to the command timeout.
    func readIntoBuffer() throws(RedisError) {
        try fill(until: ContinuousClock.now + configuration.commandTimeout, phase: .command)
    }

    /// Writes the whole output buffer (up to the command timeout).
    func flush() throws(RedisError) {
        try flush(until: ContinuousClock.now + configuration.commandTimeout, phase: .command)
    }

    private func flush(until deadline: ContinuousClock.Instant, phase: Phase) throws(RedisError) {
        if output.isEmpty { return }
        do {
            try transport.write(output, until: deadline)
            output.removeAll(keepingCapacity: output.count <= 65_536)
        } catch {
            isBroken = true
            throw mapIOFailure(error, phase: phase)
        }
    }

    private func fill(until deadline: ContinuousClock.Instant, phase: Phase) throws(RedisError) {
        // A stack buffer as hiredis's own redisBufferRead uses: no allocation per read. 16 kB
        // is also the largest TLS record, so one read takes a whole record.
        let transport = self.transport
        let reader = self.reader
        let result = withUnsafeTemporaryAllocation(byteCount: 16 * 1024, alignment: 1) { raw in
            Result { () throws(TransportFailure) -> Int32 in
                let count = try transport.read(into: raw, until: deadline)
                return redisReaderFeed(reader, raw.baseAddress!.assumingMemoryBound(to: CChar.self), count)
            }
        }
        let status: Int32
        switch result {
        case .success(let fed): status = fed
        case .failure(let error):
            isBroken = true
            throw mapIOFailure(error, phase: phase)
        }
        if status != REDIS_OK {
            isBroken = true
            throw RedisError(kind: .unavailable, message: "out of memory reading from \(endpoint)")
        }
    }

    // MARK: Transport errors

    /// A reply stream hiredis cannot parse; a plain client at a TLS port gets TLS records.
    private func notRedis(_ text: String) -> RedisError {
        if !transport.isTLS, let first = transport.firstByte, first == 0x15 || first == 0x16 {
            return RedisError(
                kind: .protocolError,
                message:
                    "\(endpoint) answered with TLS, not plain Redis — use a rediss:// URL (and the TLS settings) for this server"
            )
        }
        return Self.classify(code: REDIS_ERR_PROTOCOL, text: text, phase: .command, configuration: configuration)
    }

    private func mapIOFailure(_ failure: TransportFailure, phase: Phase) -> RedisError {
        if transport.isTLS && phase == .handshake {
            // TLS 1.3 rejects a missing or untrusted client certificate only after the
            // client's handshake finished: an alert, often lost to the reset that follows.
            var cause: String?
            switch failure {
            case .closed: cause = "closed"
            case .system(let text): cause = text
            case .tls(let tls) where tls.kind == LH_TLS_FAIL_SYSCALL: cause = tls.message
            default: break
            }
            if let cause {
                return RedisError(
                    kind: .tls,
                    message:
                        "\(endpoint) ended the TLS session right after the handshake (\(cause)) — it probably requires a client certificate it trusts: set cert_file and key_file (--tls-cert-file, --tls-key-file)"
                )
            }
        }
        switch failure {
        case .timedOut, .handshakeTimedOut:
            return Self.classify(
                code: REDIS_ERR_IO, text: "Resource temporarily unavailable", phase: phase,
                configuration: configuration)
        case .closed:
            if !transport.isTLS && !transport.receivedAny {
                return RedisError(
                    kind: .connectionClosed,
                    message:
                        "\(endpoint) closed the connection without a reply — if the server only speaks TLS there, use a rediss:// URL"
                )
            }
            return Self.classify(
                code: REDIS_ERR_EOF, text: "Server closed the connection", phase: phase, configuration: configuration)
        case .system(let text):
            var error = Self.classify(code: REDIS_ERR_IO, text: text, phase: phase, configuration: configuration)
            if !transport.isTLS && !transport.receivedAny && error.kind == .connectionClosed {
                // A TLS-only port resets a plain client's first command.
                error.message += " — if the server only speaks TLS there, use a rediss:// URL"
            }
            return error
        case .tls(let failure):
            return Self.tlsError(failure, configuration: configuration)
        }
    }

    private static func mapConnectFailure(_ failure: TransportFailure, configuration: RedisConfiguration, tls: Bool)
        -> RedisError
    {
        let endpoint = configuration.endpoint
        switch failure {
        case .handshakeTimedOut:
            return RedisError(
                kind: .timeout,
                message:
                    "TLS handshake with \(endpoint) got no answer within the connect timeout of \(configuration.connectTimeout.shortDescription) — a plain Redis port waits silently (use redis:// for a server without TLS), or the server is stalled"
            )
        case .timedOut:
            return classify(
                code: REDIS_ERR_IO, text: "Connection timed out", phase: .connect, configuration: configuration)
        case .closed where tls:
            return RedisError(
                kind: .tls,
                message:
                    "\(endpoint) closed the connection during the TLS handshake — is that port a TLS port? does the server require a client certificate (cert_file, key_file)?"
            )
        case .closed:
            return classify(
                code: REDIS_ERR_EOF, text: "Server closed the connection", phase: .connect, configuration: configuration
            )
        case .system(let text):
            return classify(code: REDIS_ERR_IO, text: text, phase: .connect, configuration: configuration)
        case .tls(let failure) where failure.kind == LH_TLS_FAIL_SYSCALL:
            return RedisError(
                kind: .tls,
                message:
                    "\(endpoint) reset the connection during the TLS handshake (\(failure.message)) — is that port a TLS port? does the server require a client certificate (cert_file, key_file)?"
            )
        case .tls(let failure):
            return tlsError(failure, configuration: configuration)
        }
    }

    /// One line for a failed TLS handshake or session: what failed, which name or file, what to check.
    static func tlsError(_ failure: lh_tls_failure, configuration: RedisConfiguration) -> RedisError {
        let endpoint = configuration.endpoint
        let reason = failure.message
        let tls = endpoint.tls ?? RedisTLSConfiguration()
        let trust = tls.caFile.map { "the CA file '\($0)' (ca_file, --tls-ca-file)" } ?? "the system's CA store"
        switch failure.kind {
        case LH_TLS_FAIL_NAME:
            let name = endpoint.tlsServerName ?? "?"
            return RedisError(
                kind: .tls,
                message:
                    "TLS certificate of \(endpoint) does not match the expected name '\(name)' (\(reason)) — connect by a name the certificate lists, or set server_name (--tls-server-name)"
            )
        case LH_TLS_FAIL_VERIFY:
            return RedisError(
                kind: .tls,
                message:
                    "TLS certificate of \(endpoint) failed verification: \(reason) (trusting \(trust)) — check ca_file (--tls-ca-file)"
            )
        case LH_TLS_FAIL_NOT_TLS:
            return RedisError(
                kind: .tls,
                message:
                    "\(endpoint) does not speak TLS (OpenSSL: \(reason)) — is it a plain Redis port? use redis:// for a server without TLS"
            )
        case LH_TLS_FAIL_CERT_REQUIRED:
            return RedisError(
                kind: .tls,
                message:
                    "\(endpoint) requires a TLS client certificate (OpenSSL: \(reason)) — set cert_file and key_file (--tls-cert-file, --tls-key-file)"
            )
        case LH_TLS_FAIL_ALERT:
            return RedisError(
                kind: .tls,
                message:
                    "\(endpoint) refused the TLS session (OpenSSL: \(reason)) — check the client certificate (cert_file) and the server's TLS settings"
            )
        case LH_TLS_FAIL_SYSCALL:
            return classify(code: REDIS_ERR_IO, text: reason, phase: .command, configuration: configuration)
        default:
            return RedisError(kind: .tls, message: "TLS with \(endpoint) failed: \(reason)")
        }
    }

    // MARK: Errors

    enum Phase { case connect, handshake, command }

    static func isAuthenticationError(_ text: String) -> Bool {
        let upper = text.uppercased()
        return upper.hasPrefix("NOAUTH") || upper.hasPrefix("WRONGPASS") || upper.contains("INVALID PASSWORD")
            || upper.hasPrefix("ERR AUTH") || upper.contains("INVALID USERNAME-PASSWORD")
            || upper.contains("CLIENT SENT AUTH, BUT NO PASSWORD IS SET")
    }

    static func authenticationRequired(_ endpoint: RedisEndpoint, _ text: String) -> RedisError {
        RedisError(
            kind: .authenticationFailed,
            message:
                "authentication failed for \(endpoint): \(text) — the server needs a password: put it in the Redis URL (redis://:PASSWORD@host:port/db)"
        )
    }

    static func classify(code: Int32, text: String, phase: Phase, configuration: RedisConfiguration) -> RedisError {
        let endpoint = configuration.endpoint
        let lower = text.lowercased()
        func timedOut() -> RedisError {
            if phase == .connect {
                return RedisError(
                    kind: .timeout,
                    message:
                        "connecting to \(endpoint) timed out after \(configuration.connectTimeout.shortDescription) (\(text)) — check the host and port in the Redis URL and the network"
                )
            }
            return RedisError(
                kind: .timeout,
                message:
                    "no reply from \(endpoint) within \(configuration.commandTimeout.shortDescription) (\(text)); the command's outcome is unknown"
            )
        }
        switch code {
        case REDIS_ERR_PROTOCOL:
            return RedisError(
                kind: .protocolError,
                message:
                    "protocol error from \(endpoint): \(text) — is a Redis server really listening there? check the Redis URL"
            )
        case REDIS_ERR_EOF:
            if phase == .connect {
                return RedisError(
                    kind: .connectionClosed, message: "\(endpoint) closed the connection while connecting: \(text)")
            }
            return RedisError(kind: .connectionClosed, message: "\(endpoint) closed the connection: \(text)")
        case REDIS_ERR_OOM:
            return RedisError(kind: .unavailable, message: "out of memory talking to \(endpoint): \(text)")
        default:
            break
        }
        if lower.contains("connection refused") || lower.contains("no such file or directory") {
            return RedisError(
                kind: .connectionRefused,
                message:
                    "connection refused by \(endpoint) (\(text)) — is redis-server running there? check the Redis URL")
        }
        if lower.contains("timed out") || lower.contains("temporarily unavailable") || lower.contains("would block")
            || lower.contains("in progress")
        {
            return timedOut()
        }
        if lower.contains("unreachable") || lower.contains("no route") || lower.contains("name or service not known")
            || lower.contains("name resolution") || lower.contains("nodename nor servname")
            || lower.contains("no address associated") || lower.contains("cannot assign requested address")
            || lower.contains("can't resolve")
        {
            return RedisError(
                kind: .unreachable,
                message: "cannot reach \(endpoint): \(text) — check the host in the Redis URL and the network")
        }
        if lower.contains("reset by peer") || lower.contains("broken pipe") || lower.contains("closed") {
            return RedisError(kind: .connectionClosed, message: "connection to \(endpoint) lost: \(text)")
        }
        if phase == .connect {
            return RedisError(
                kind: .unreachable, message: "cannot connect to \(endpoint): \(text) — check the Redis URL")
        }
        return RedisError(kind: .connectionClosed, message: "connection to \(endpoint) failed: \(text)")
    }
}

extension Array where Element == String {
    var utf8Arguments: [[UInt8]] { map { [UInt8]($0.utf8) } }
}
