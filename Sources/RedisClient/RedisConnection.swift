#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

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
    /// Set for a `redis-sentinel://` endpoint: where the primary is, shared in the process.
    private nonisolated let monitor: SentinelMonitor?
    /// The monitor generation the open context (or the last connect attempt) was made for.
    private var contextGeneration: UInt64 = 0
    /// Set for a `redis-cluster://` endpoint: the slot map this connection routes by.
    private var slotMap: ClusterSlotMap?
    /// The cluster node the open context is connected to.
    private var contextNode: RedisSentinel.Node?
    /// The slot the current call is routed by (nil: any node will do).
    private var routeSlot: Int?

    /// The connection's own serial queue: blocking socket calls never run on the cooperative pool.
    public nonisolated var unownedExecutor: UnownedSerialExecutor {
        executor.asUnownedSerialExecutor()
    }

    /// Creates a connection; it connects lazily on the first call.
    public init(configuration: RedisConfiguration) {
        self.configuration = configuration
        self.executor = DispatchQueueExecutor(label: "leasehold.redis.connection")
        self.backoff = Backoff(minimum: configuration.reconnectBackoffMin, maximum: configuration.reconnectBackoffMax)
        self.monitor = SentinelMonitor.retain(for: configuration)
        self.slotMap = configuration.endpoint.cluster.map(ClusterSlotMap.init(cluster:))
    }

    deinit {
        if !isClosed { monitor?.release() }
    }

    /// Whether a live context is open (for tests and diagnostics).
    public var isConnected: Bool { context != nil }

    /// True when actor code runs on the connection's private queue (not the cooperative pool).
    var isRunningOnOwnQueue: Bool { executor.isCurrent }

    /// Sends one command; error replies are returned as `.error`, transport failures thrown.
    public func send(_ arguments: [String]) async throws(RedisError) -> RedisReply {
        try await send(arguments.utf8Arguments)
    }

    /// Binary-safe variant.
    public func send(_ arguments: [[UInt8]]) async throws(RedisError) -> RedisReply {
        if slotMap != nil { return try clusterRun([arguments])[0] }
        return try perform { context throws(RedisError) in try Self.checked(context.command(arguments), context) }
    }

    /// Sends all commands in one write and reads all replies (hiredis formats, the transport
    /// writes them at once). A transport failure fails the whole pipeline (outcome unknown).
    public func pipeline(_ commands: [[String]]) async throws(RedisError) -> [RedisReply] {
        try await pipeline(commands.map { $0.utf8Arguments })
    }

    /// Binary-safe variant.
    public func pipeline(_ commands: [[[UInt8]]]) async throws(RedisError) -> [RedisReply] {
        if commands.isEmpty { return [] }
        if slotMap != nil { return try clusterRun(commands) }
        return try perform { context throws(RedisError) in try Self.run(commands, context) }
    }

    private static func run(_ commands: [[[UInt8]]], _ context: HiredisContext) throws(RedisError) -> [RedisReply] {
        if commands.count == 1 { return [try checked(context.command(commands[0]), context)] }
        for command in commands { try context.append(command) }
        var replies: [RedisReply] = []
        replies.reserveCapacity(commands.count)
        for _ in commands { replies.append(try checked(context.readReply(), context)) }
        return replies
    }

    // MARK: Cluster routing

    /// Runs `commands` (one call or one pipeline) on the node owning the slot of their first
    /// key, following one `MOVED` (the map is read again and the commands re-sent: a MOVED
    /// reply means the command did not run) or one `ASK` (`ASKING` + the command on the
    /// target, the map unchanged). A pipeline is re-sent only when every reply is a
    /// redirect (or of a repeatable keyless command such as WAIT): otherwise something ran,
    /// and the replies are returned as they are.
    ///
    /// `TRYAGAIN` (a multi-key call while its slot's keys are half migrated: nothing ran) is
    /// retried every 20 ms for up to half the command timeout, on the connection's own queue.
    private func clusterRun(_ commands: [[[UInt8]]]) throws(RedisError) -> [RedisReply] {
        let deadline = ContinuousClock.now + configuration.commandTimeout / 2
        while true {
            let replies = try clusterRunOnce(commands)
            guard Self.isTryAgain(replies, commands), ContinuousClock.now + .milliseconds(20) < deadline else {
                return replies
            }
            usleep(20_000)
        }
    }

    /// Whether nothing ran because the slot is being migrated (every reply TRYAGAIN or of a
    /// repeatable keyless command).
    private static func isTryAgain(_ replies: [RedisReply], _ commands: [[[UInt8]]]) -> Bool {
        var found = false
        for (reply, command) in zip(replies, commands) {
            if reply.errorMessage?.hasPrefix("TRYAGAIN") == true {
                found = true
                continue
            }
            let name = String(decoding: command.first ?? [], as: UTF8.self).uppercased()
            if !RedisCluster.repeatableKeyless.contains(name) { return false }
        }
        return found
    }

    private func clusterRunOnce(_ commands: [[[UInt8]]]) throws(RedisError) -> [RedisReply] {
        let slot = commands.lazy.compactMap(RedisCluster.routingSlot).first
        routeSlot = slot
        let replies = try perform { context throws(RedisError) in try Self.run(commands, context) }
        guard let redirect = Self.redirect(replies, commands) else { return replies }
        switch redirect {
        case .moved(let movedSlot, let node):
            slotMap?.learn(slot: movedSlot, node: node)
            routeSlot = slot ?? movedSlot
            return try perform { context throws(RedisError) in try Self.run(commands, context) }
        case .ask(_, let node):
            let context = try HiredisContext.connect(ClusterSlotMap.configuration(configuration, node))
            let asking = [Array("ASKING".utf8)]
            for command in commands {
                try context.append(asking)
                try context.append(command)
            }
            var replies: [RedisReply] = []
            for _ in commands {
                _ = try Self.checked(context.readReply(), context)
                replies.append(try Self.checked(context.readReply(), context))
            }
            return replies
        }
    }

    /// The redirect to follow, when nothing of `commands` ran.
    private static func redirect(_ replies: [RedisReply], _ commands: [[[UInt8]]]) -> ClusterRedirect? {
        var found: ClusterRedirect?
        for (reply, command) in zip(replies, commands) {
            if let redirect = ClusterRedirect(reply) {
                if found == nil { found = redirect }
                continue
            }
            let name = String(decoding: command.first ?? [], as: UTF8.self).uppercased()
            if RedisCluster.repeatableKeyless.contains(name) { continue }
            return nil
        }
        return found
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

    /// EVALSHA (EVAL after NOSCRIPT) pipelined with `WAIT replicas timeout` in the same
    /// round trip: the reply and how many replicas acknowledged the script's writes.
    ///
    /// `timeout` should stay well under the command timeout, which bounds the whole round
    /// trip. A WAIT error reply throws ``RedisError/Kind/protocolError`` (the script ran; its
    /// replication is unknown).
    public func evaluate(
        _ script: RedisScript, keys: [String], arguments: [String], waitingFor replicas: Int, timeout: Duration
    ) async throws(RedisError) -> (reply: RedisReply, acknowledged: Int) {
        let milliseconds = max(Int64(1), timeout.nanoseconds / 1_000_000)  // WAIT 0 would block forever
        let wait = ["WAIT", String(replicas), String(milliseconds)]
        var command = ["EVALSHA", script.sha1, String(keys.count)] + keys + arguments
        var replies = try await pipeline([command, wait])
        if case .error(let text) = replies[0], text.hasPrefix("NOSCRIPT") {
            command[0] = "EVAL"
            command[1] = script.source
            replies = try await pipeline([command, wait])
        }
        guard let acknowledged = replies[1].integer else {
            throw RedisError(
                kind: .protocolError,
                message:
                    "WAIT \(replicas) failed on \(configuration.endpoint): \(replies[1].errorMessage ?? "not an integer"); the script ran, its replication is unknown"
            )
        }
        return (replies[0], Int(acknowledged))
    }

    /// Frees the context. Later calls throw ``RedisError/Kind/unavailable``.
    public func close() {
        if !isClosed { monitor?.release() }
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
            if context.isBroken || error.kind == .authenticationFailed || error.kind == .readOnly {
                // A demoted primary or a lost connection: the primary may have moved.
                if context.isBroken || error.kind == .readOnly { monitor?.invalidate(generation: contextGeneration) }
                // A lost node may have failed over: read the slot map again on reconnect.
                if context.isBroken { slotMap?.isStale = true }
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
        if let monitor, monitor.generation != contextGeneration {
            // A failover was announced (or another connection saw READONLY): reconnect now,
            // to the new primary, without waiting out a backoff earned on the old one.
            context = nil
            retryNotBefore = nil
        }
        if let map = slotMap, context != nil, let slot = routeSlot, let owner = map.owner(of: slot),
            owner != contextNode
        {
            // The slot's owner changed (MOVED, a new map): a namespace lives in one slot, so
            // the connection follows it to its new node.
            context = nil
            retryNotBefore = nil
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
            contextGeneration = monitor?.generation ?? 0
            let context: HiredisContext
            if var map = slotMap {
                if map.isStale { try map.refresh(configuration, using: nil) }
                slotMap = map
                let node = routeSlot.flatMap(map.owner(of:)) ?? contextNode ?? map.anyNode
                context = try HiredisContext.connect(ClusterSlotMap.configuration(configuration, node))
                contextNode = node
            } else {
                let (made, generation) = try HiredisContext.connect(configuration, via: monitor)
                contextGeneration = generation
                context = made
            }
            self.context = context
            backoff.reset()
            retryNotBefore = nil
            lastError = nil
            return context
        } catch {
            lastError = error
            // Only a change after this failure (a failover announced) skips the backoff.
            contextGeneration = monitor?.generation ?? 0
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
        if case .error(let text) = reply, text.hasPrefix("READONLY") {
            throw RedisError(
                kind: .readOnly,
                message:
                    "\(context.endpoint) answered READONLY: it is a replica now (failover?); reconnecting to the primary, the command's outcome is unknown"
            )
        }
        return reply
    }
}
