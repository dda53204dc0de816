/// Timeouts and backoff for a ``RedisConnection`` or ``RedisSubscriber``.
public struct RedisConfiguration: Sendable, CustomStringConvertible {
    /// The server to talk to.
    public var endpoint: RedisEndpoint
    /// Bounds the TCP/unix connect and, for `rediss://`, the TLS handshake, together.
    public var connectTimeout: Duration
    /// Bounds each round trip (writing the command and reading its whole reply), including
    /// AUTH/SELECT at connect.
    public var commandTimeout: Duration
    /// Reconnect backoff after a failed connect: doubles from min up to max, with jitter.
    public var reconnectBackoffMin: Duration
    /// The cap of that backoff.
    public var reconnectBackoffMax: Duration

    /// Creates a configuration; the defaults suit a local Redis.
    public init(
        endpoint: RedisEndpoint,
        connectTimeout: Duration = .seconds(2),
        commandTimeout: Duration = .seconds(2),
        reconnectBackoffMin: Duration = .milliseconds(50),
        reconnectBackoffMax: Duration = .seconds(2)
    ) {
        self.endpoint = endpoint
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
        self.reconnectBackoffMin = reconnectBackoffMin
        self.reconnectBackoffMax = max(reconnectBackoffMax, reconnectBackoffMin)
    }

    /// The endpoint (password redacted) and timeouts, for logs.
    public var description: String {
        "RedisConfiguration(\(endpoint), connectTimeout: \(connectTimeout.shortDescription), commandTimeout: \(commandTimeout.shortDescription))"
    }
}

/// Capped exponential backoff with "equal jitter": a delay in [d/2, d], d = min·2ⁿ ≤ max.
struct Backoff {
    let minimum: Duration
    let maximum: Duration
    private(set) var failures = 0

    init(minimum: Duration, maximum: Duration) {
        self.minimum = minimum
        self.maximum = maximum
    }

    mutating func reset() { failures = 0 }

    mutating func next() -> Duration {
        var ceiling = minimum
        var step = 0
        while step < failures && ceiling < maximum {
            ceiling = ceiling * 2
            step += 1
        }
        ceiling = Swift.min(ceiling, maximum)
        failures += 1
        let ceilingNanos = Swift.max(Int64(1), ceiling.nanoseconds)
        let half = ceilingNanos / 2
        return .nanoseconds(half + Int64.random(in: 0...(ceilingNanos - half)))
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }

}
