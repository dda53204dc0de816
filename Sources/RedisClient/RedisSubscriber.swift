import Dispatch
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// What a ``RedisSubscriber`` yields.
public enum RedisMessage: Sendable, Hashable {
    /// A published message.
    case message(channel: String, payload: [UInt8])
    /// All channels are (re)subscribed: yielded after the first subscribe and after every
    /// reconnect. Messages published while disconnected are lost (Redis pub/sub is fire and forget).
    case subscribed(channels: [String])
    /// The connection was lost or could not be made; yielded once per transition to
    /// disconnected, not once per failed reconnect attempt.
    case disconnected(RedisError)

    /// The payload as UTF-8 text, for `.message`.
    public var payloadString: String? {
        if case .message(_, let payload) = self { return String(validating: payload, as: UTF8.self) }
        return nil
    }
}

/// A dedicated subscriber connection. It runs on its own dispatch thread (blocking I/O never
/// touches the cooperative pool), reconnects and resubscribes by itself with capped, jittered
/// backoff, and PINGs an idle connection every second so a dead peer is noticed within
/// about `1 s + commandTimeout`.
///
/// ``messages`` is a single-consumer stream (newest 10,000 buffered). It finishes after
/// ``stop()``, or when the subscriber is deinitialised; ending the iteration stops the subscriber.
public final class RedisSubscriber: Sendable {
    /// Messages and connection state changes, in order (single consumer).
    public let messages: AsyncStream<RedisMessage>
    /// The channels subscribed to.
    public let channels: [String]
    private let control: SubscriberControl

    /// Starts the subscriber on its own thread; it connects and resubscribes by itself.
    public init(configuration: RedisConfiguration, channels: [String]) {
        let (stream, continuation) = AsyncStream.makeStream(
            of: RedisMessage.self, bufferingPolicy: .bufferingNewest(10_000))
        let control = SubscriberControl()
        continuation.onTermination = { _ in control.requestStop() }
        self.messages = stream
        self.channels = channels
        self.control = control
        let queue = DispatchQueue(label: "leasehold.redis.subscriber")
        let monitor = SentinelMonitor.retain(for: configuration)
        queue.async {
            var loop = SubscriberLoop(
                configuration: configuration, channels: channels, control: control, continuation: continuation)
            loop.monitor = monitor
            loop.run()
            monitor?.release()
            continuation.finish()
            control.markFinished()
        }
    }

    /// Stops the subscriber and waits until its connection is closed and `messages` finished.
    /// Takes at most about 100 ms, or a connect/command timeout if one is in progress.
    public func stop() async {
        control.requestStop()
        await control.waitUntilFinished()
    }

    deinit { control.requestStop() }
}

/// Stop flag and finish signal shared between the subscriber and its thread.
final class SubscriberControl: Sendable {
    private struct State {
        var stopRequested = false
        var finished = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())

    var stopRequested: Bool { state.withLock { $0.stopRequested } }

    func requestStop() { state.withLock { $0.stopRequested = true } }

    func markFinished() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.finished = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    func waitUntilFinished() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state -> Bool in
                if state.finished { return true }
                state.waiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }
}

/// The subscriber's blocking loop; runs on the subscriber's own dispatch thread.
private struct SubscriberLoop {
    let configuration: RedisConfiguration
    let channels: [String]
    let control: SubscriberControl
    let continuation: AsyncStream<RedisMessage>.Continuation
    var connected = false
    var reportedDisconnect = false
    /// Set for a `redis-sentinel://` endpoint: the subscriber follows the primary.
    var monitor: SentinelMonitor?
    /// For a `redis-cluster://` endpoint: the seed subscribed to last.
    var clusterIndex = 0
    var generation: UInt64 = 0

    static let pollInterval: Int32 = 100  // ms: how often the stop flag is checked
    static let pingInterval: Duration = .seconds(1)

    init(
        configuration: RedisConfiguration, channels: [String], control: SubscriberControl,
        continuation: AsyncStream<RedisMessage>.Continuation
    ) {
        self.configuration = configuration
        self.channels = channels
        self.control = control
        self.continuation = continuation
    }

    mutating func run() {
        var backoff = Backoff(minimum: configuration.reconnectBackoffMin, maximum: configuration.reconnectBackoffMax)
        while !control.stopRequested {
            let context: HiredisContext
            do {
                if let cluster = configuration.endpoint.cluster {
                    // Classic PUBLISH is broadcast to every node: any node will do.
                    let made = try HiredisContext.connectAnyNode(configuration, cluster, startingAt: clusterIndex)
                    context = made.0
                    clusterIndex = made.1
                } else {
                    let made = try HiredisContext.connect(configuration, via: monitor)
                    context = made.0
                    generation = made.1
                }
                try subscribe(context)
            } catch {
                reportDisconnect(error)
                if !sleep(backoff.next()) { return }
                continue
            }
            backoff.reset()
            reportedDisconnect = false
            continuation.yield(.subscribed(channels: channels))
            do {
                try listen(context)
                return  // stop requested
            } catch {
                monitor?.invalidate(generation: generation)
                clusterIndex += 1  // on a cluster, try the next node
                reportDisconnect(error)
                // Reconnect at once after a connection that worked; backoff if that fails.
            }
        }
    }

    mutating func reportDisconnect(_ error: RedisError) {
        if !reportedDisconnect {
            reportedDisconnect = true
            continuation.yield(.disconnected(error))
        }
    }

    /// Sleeps in small slices; false when stop was requested meanwhile.
    func sleep(_ duration: Duration) -> Bool {
        let deadline = ContinuousClock.now + duration
        while ContinuousClock.now < deadline {
            if control.stopRequested { return false }
            let left = min(deadline - ContinuousClock.now, .milliseconds(50))
            if left > .zero { usleep(UInt32(max(1, left.nanoseconds / 1000))) }
        }
        return !control.stopRequested
    }

    func subscribe(_ context: HiredisContext) throws(RedisError) {
        if channels.isEmpty { return }
        try context.append([[UInt8]("SUBSCRIBE".utf8)] + channels.utf8Arguments)
        var confirmed = 0
        while confirmed < channels.count {
            let reply = try context.readReply()
            if case .error(let text) = reply {
                if HiredisContext.isAuthenticationError(text) {
                    throw HiredisContext.authenticationRequired(context.endpoint, text)
                }
                throw RedisError(kind: .server, message: "SUBSCRIBE failed on \(context.endpoint): \(text)")
            }
            if let kind = reply.array?.first?.string, kind == "subscribe" {
                confirmed += 1
            } else {
                handle(reply)
            }
        }
    }

    /// Reads until stop (returns) or a failure (throws).
    func listen(_ context: HiredisContext) throws(RedisError) {
        var lastActivity = ContinuousClock.now
        var pingSentAt: ContinuousClock.Instant?
        while true {
            if control.stopRequested { return }
            if let monitor, monitor.generation != generation {
                throw RedisError(
                    kind: .connectionClosed, message: "the primary of '\(monitor.sentinel.master)' changed (failover)")
            }
            while let reply = try context.bufferedReply() {
                lastActivity = ContinuousClock.now
                pingSentAt = nil
                handle(reply)
            }
            // TLS: a record may already be decrypted inside OpenSSL while the socket is quiet.
            if context.hasBufferedInput {
                try context.readIntoBuffer()
                continue
            }
            var descriptor = pollfd(fd: context.fileDescriptor, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, Self.pollInterval)
            if ready > 0 {
                try context.readIntoBuffer()
                continue
            }
            if ready < 0 && errno != EINTR {
                throw RedisError(
                    kind: .connectionClosed, message: "poll failed on the subscriber connection to \(context.endpoint)")
            }
            let now = ContinuousClock.now
            if let pingSentAt {
                if now - pingSentAt > configuration.commandTimeout {
                    throw RedisError(
                        kind: .timeout,
                        message:
                            "subscriber connection to \(context.endpoint) did not answer PING within \(configuration.commandTimeout.shortDescription)"
                    )
                }
            } else if now - lastActivity >= Self.pingInterval {
                try context.append([[UInt8]("PING".utf8)])
                try context.flush()
                pingSentAt = now
            }
        }
    }

    func handle(_ reply: RedisReply) {
        guard let parts = reply.array, let kind = parts.first?.string else { return }
        if kind == "message", parts.count == 3, let channel = parts[1].string, let payload = parts[2].bytes {
            continuation.yield(.message(channel: channel, payload: payload))
        }
        // "pong", "subscribe" and "unsubscribe" confirmations carry nothing to report.
    }
}
