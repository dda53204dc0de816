import CHiredis

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The only place that touches hiredis. Not thread-safe, not Sendable: one owner at a time
/// (the ``RedisConnection`` actor, or the subscriber's own thread).
final class HiredisContext {
    private let context: UnsafeMutablePointer<redisContext>
    let configuration: RedisConfiguration
    /// Set once a call failed at the transport level: the context must not be used again.
    private(set) var isBroken = false

    var endpoint: RedisEndpoint { configuration.endpoint }
    var fileDescriptor: Int32 { context.pointee.fd }

    private init(context: UnsafeMutablePointer<redisContext>, configuration: RedisConfiguration) {
        self.context = context
        self.configuration = configuration
    }

    deinit { redisFree(context) }

    /// Connects within `connectTimeout`, sets the command timeout, then AUTH and SELECT.
    static func connect(_ configuration: RedisConfiguration) throws(RedisError) -> HiredisContext {
        let endpoint = configuration.endpoint
        let connectTV = makeTimeval(configuration.connectTimeout)
        let raw: UnsafeMutablePointer<redisContext>?
        switch endpoint.address {
        case .tcp(let host, let port):
            raw = redisConnectWithTimeout(host, Int32(port), connectTV)
        case .unix(let path):
            raw = redisConnectUnixWithTimeout(path, connectTV)
        }
        guard let raw else {
            throw RedisError(kind: .unavailable, message: "cannot allocate a hiredis context for \(endpoint)")
        }
        if raw.pointee.err != 0 {
            let error = mapTransportError(raw, phase: .connect, configuration: configuration)
            redisFree(raw)
            throw error
        }
        let context = HiredisContext(context: raw, configuration: configuration)
        if redisSetTimeout(raw, makeTimeval(configuration.commandTimeout)) != REDIS_OK {
            context.isBroken = true
            throw RedisError(
                kind: .unavailable, message: "cannot set the command timeout on the connection to \(endpoint)")
        }
        try context.handshake()
        return context
    }

    private func handshake() throws(RedisError) {
        if let password = endpoint.password {
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
        let status = flat.withUnsafeBufferPointer { buffer -> Int32 in
            let base = UnsafeRawPointer(buffer.baseAddress!)
            var argv: [UnsafePointer<CChar>?] = offsets.map { (base + $0).assumingMemoryBound(to: CChar.self) }
            return redisAppendCommandArgv(context, Int32(arguments.count), &argv, lengths)
        }
        if status != REDIS_OK {
            isBroken = true
            throw RedisError(kind: .unavailable, message: "cannot format a command for \(endpoint) (out of memory)")
        }
    }

    /// Flushes pending output and blocks (up to the command timeout) for one reply.
    func readReply() throws(RedisError) -> RedisReply {
        try readReply(phase: .command)
    }

    private func readReply(phase: Phase) throws(RedisError) -> RedisReply {
        var out: UnsafeMutableRawPointer?
        if redisGetReply(context, &out) != REDIS_OK || out == nil {
            isBroken = true
            throw Self.mapTransportError(context, phase: phase, configuration: configuration)
        }
        defer { freeReplyObject(out) }
        return RedisReply(hiredis: out!.assumingMemoryBound(to: redisReply.self))
    }

    // MARK: Non-blocking pieces for the subscriber

    /// A reply already parsed from the input buffer, without I/O.
    func bufferedReply() throws(RedisError) -> RedisReply? {
        var out: UnsafeMutableRawPointer?
        if redisGetReplyFromReader(context, &out) != REDIS_OK {
            isBroken = true
            throw Self.mapTransportError(context, phase: .command, configuration: configuration)
        }
        guard let out else { return nil }
        defer { freeReplyObject(out) }
        return RedisReply(hiredis: out.assumingMemoryBound(to: redisReply.self))
    }

    /// One read(2) into the input buffer; call only when the socket is readable.
    func readIntoBuffer() throws(RedisError) {
        if redisBufferRead(context) != REDIS_OK {
            isBroken = true
            throw Self.mapTransportError(context, phase: .command, configuration: configuration)
        }
    }

    /// Writes the whole output buffer.
    func flush() throws(RedisError) {
        var done: Int32 = 0
        while done == 0 {
            if redisBufferWrite(context, &done) != REDIS_OK {
                isBroken = true
                throw Self.mapTransportError(context, phase: .command, configuration: configuration)
            }
        }
    }

    // MARK: Errors

    enum Phase { case connect, handshake, command }

    static func errorText(_ context: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: context.pointee.errstr) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
    }

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

    static func mapTransportError(
        _ context: UnsafeMutablePointer<redisContext>, phase: Phase, configuration: RedisConfiguration
    ) -> RedisError {
        classify(code: context.pointee.err, text: errorText(context), phase: phase, configuration: configuration)
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

func makeTimeval(_ duration: Duration) -> timeval {
    let nanos = max(duration.nanoseconds, 1_000_000)  // at least 1 ms: zero would mean "no timeout"
    return timeval(tv_sec: Int(nanos / 1_000_000_000), tv_usec: Int((nanos % 1_000_000_000) / 1000))
}

extension Array where Element == String {
    var utf8Arguments: [[UInt8]] { map { [UInt8]($0.utf8) } }
}
