/// One logical connection to Redis; connects lazily and reconnects lazily.
///
/// Blocking socket calls run on the actor's own serial executor (a private `DispatchQueue`),
/// never on Swift's cooperative pool. Every call is bounded by the configured timeouts
/// (connect + AUTH/SELECT when a new context is needed, then the command).
///
/// Failure rules:
/// - Error replies are returned as ``RedisReply/error(_:)``; only transport, authentication
///   and timeout failures throw. A `NOAUTH` reply throws ``RedisError/Kind/authenticationFailed``.
/// - A context that broke or timed out is freed; the next call makes a new one at once.
/// - A failed *connect* starts capped, jittered backoff; while it lasts calls fail fast with
///   ``RedisError/Kind/unavailable`` carrying the last error's text (no sleeping).
/// - Commands are never retried automatically after a failure: a timed-out command has an
///   unknown outcome and the caller decides. (``evaluate(_:keys:arguments:)`` re-sends as EVAL
///   after a NOSCRIPT reply, which means the script did not run.)
/// - Task cancellation does not interrupt a call; calls are bounded by the timeouts instead.
public actor RedisConnection {
    /// The endpoint and timeouts.
    public nonisolated let configuration: RedisConfiguration
    private nonisolated let executor: DispatchQueueExecutor

    private var context: HiredisContext?
    private var backoff: Backoff
    private var retryNotBefore: ContinuousClock.Instant?
    private var lastError: RedisError?
    private var isClosed = false

    /// The connection's own serial queue: blocking socket calls never run on the cooperative pool.
    public nonisolated var unownedExecutor: UnownedSerialExecutor {
        executor.asUnownedSerialExecutor()
    }

    /// Creates a connection; it connects lazily on the first call.
    public init(configuration: RedisConfiguration) {
        self.configuration = configuration
        self.executor = DispatchQueueExecutor(label: "leasehold.redis.connection")
        self.backoff = Backoff(minimum: configuration.reconnectBackoffMin, maximum: configuration.reconnectBackoffMax)
    }

    /// Whether a live context is open (for tests and diagnostics).
    public var isConnected: Bool { context != nil }

    /// True when actor code runs on the connection's private queue (not the cooperative pool).
    var isRunningOnOwnQueue: Bool { executor.isCurrent }

    /// Sends one command; error replies are returned as `.error`, transport failures thrown.
    public func send(_ arguments: [String]) async throws(RedisError) -> RedisReply {
        try perform { context throws(RedisError) in try Self.checked(context.command(arguments.utf8Arguments), context)
        }
    }

    /// Binary-safe variant.
    public func send(_ arguments: [[UInt8]]) async throws(RedisError) -> RedisReply {
        try perform { context throws(RedisError) in try Self.checked(context.command(arguments), context) }
    }

    /// Sends all commands in one write and reads all replies (hiredis formats, the transport
    /// writes them at once). A transport failure fails the whole pipeline (outcome unknown).
    public func pipeline(_ commands: [[String]]) async throws(RedisError) -> [RedisReply] {
        try await pipeline(commands.map { $0.utf8Arguments })
    }

    /// Binary-safe variant.
    public func pipeline(_ commands: [[[UInt8]]]) async throws(RedisError) -> [RedisReply] {
        if commands.isEmpty { return [] }
        return try perform { context throws(RedisError) in
            for command in commands { try context.append(command) }
            var replies: [RedisReply] = []
            replies.reserveCapacity(commands.count)
            for _ in commands { replies.append(try Self.checked(context.readReply(), context)) }
            return replies
        }
    }

    /// EVALSHA; on a NOSCRIPT reply (script cache empty, e.g. after a restart or SCRIPT FLUSH)
    /// sends EVAL with the source once, which also caches it.
    public func evaluate(_ script: RedisScript, keys: [String], arguments: [String]) async throws(RedisError)
        -> RedisReply
    {
        var command = ["EVALSHA", script.sha1, String(keys.count)] + keys + arguments
        let reply = try await send(command)
        if case .error(let text) = reply, text.hasPrefix("NOSCRIPT") {
            command[0] = "EVAL"
            command[1] = script.source
            return try await send(command)
        }
        return reply
    }

    /// Frees the context. Later calls throw ``RedisError/Kind/unavailable``.
    public func close() {
        isClosed = true
        context = nil
    }

    // MARK: -

    private func perform<T>(_ body: (HiredisContext) throws(RedisError) -> T) throws(RedisError) -> T {
        let context = try currentContext()
        do {
            return try body(context)
        } catch {
            // After an authentication error the server may already have closed the socket
            // (see `checked`): start afresh rather than reuse the context.
            if context.isBroken || error.kind == .authenticationFailed {
                self.context = nil
                lastError = error
                retryNotBefore = nil  // the next call reconnects at once; backoff starts if that fails
            }
            throw error
        }
    }

    private func currentContext() throws(RedisError) -> HiredisContext {
        if isClosed {
            throw RedisError(
                kind: .unavailable, message: "connection to \(configuration.endpoint) was closed by close()")
        }
        if let context { return context }
        let now = ContinuousClock.now
        if let retryNotBefore, now < retryNotBefore {
            let wait = retryNotBefore - now
            throw RedisError(
                kind: .unavailable,
                message:
                    "\(configuration.endpoint) unavailable, next reconnect in \(wait.shortDescription); last error: \(lastError?.message ?? "unknown")"
            )
        }
        do {
            let context = try HiredisContext.connect(configuration)
            self.context = context
            backoff.reset()
            retryNotBefore = nil
            lastError = nil
            return context
        } catch {
            lastError = error
            retryNotBefore = ContinuousClock.now + backoff.next()
            throw error
        }
    }

    /// NOAUTH means the server wants a password we did not give: throw rather than return it.
    /// Redis 7 answers an unauthenticated command with more than 10 arguments (or a large
    /// bulk) with `ERR Protocol error: unauthenticated multibulk length` / `bulk length`
    /// instead, and closes the connection: the same cause, so the same error.
    private static func checked(_ reply: RedisReply, _ context: HiredisContext) throws(RedisError) -> RedisReply {
        if case .error(let text) = reply,
            text.hasPrefix("NOAUTH") || text.hasPrefix("ERR Protocol error: unauthenticated")
        {
            throw HiredisContext.authenticationRequired(context.endpoint, text)
        }
        return reply
    }
}
