/// The timing rules of one job's lease; every figure is a duration on a monotonic clock.
///
/// A leader counts itself valid until `sentAt + ttl × (1 − drift) − margin`, measured from
/// the moment it *sent* the acquire or renew that succeeded. `drift` bounds how much slower
/// the leader's clock may run than Redis's (a slow clock would let the leader believe less
/// time has passed than Redis has counted against the TTL); `margin` absorbs scheduling delay between the
/// engine deciding to send and the bytes leaving. Its handler is cancelled `grace` before
/// validity ends so it can stop before another member may become leader.
public struct LeaseTiming: Sendable, Hashable {
    /// The lease TTL set in Redis (PX).
    public var ttl: Duration
    /// How often the leader renews (default ttl / 3).
    public var renewEvery: Duration
    /// Bound on how much slower the member's clock may run than Redis's, as a fraction (0.01 = 1 %).
    public var drift: Double
    /// Safety margin subtracted from validity for scheduling delay.
    public var margin: Duration
    /// How long before validity ends the handler is told to stop.
    public var grace: Duration

    /// Creates timing rules; nil picks the documented default for that figure.
    ///
    /// Defaults: renewEvery = ttl/3; drift = 1 %; margin = ttl/100 clamped to 10–200 ms;
    /// grace = ttl/10 clamped to 100 ms–2 s.
    public init(
        ttl: Duration = .seconds(10),
        renewEvery: Duration? = nil,
        drift: Double = 0.01,
        margin: Duration? = nil,
        grace: Duration? = nil
    ) {
        self.ttl = ttl
        self.renewEvery = renewEvery ?? ttl / 3
        self.drift = drift
        self.margin = margin ?? Self.clamp(ttl / 100, .milliseconds(10), .milliseconds(200))
        self.grace = grace ?? Self.clamp(ttl / 10, .milliseconds(100), .seconds(2))
    }

    /// How long after sending a successful acquire/renew the leader may act.
    public var validityWindow: Duration { ttl * (1 - drift) - margin }

    /// How long after sending a successful acquire/renew the handler is cancelled.
    public var stepDownWindow: Duration { validityWindow - grace }

    /// The TTL in whole milliseconds, as Redis takes it.
    public var ttlMilliseconds: Int64 { ttl.wholeMilliseconds }

    /// How long one Redis call (connect or command) may take for members leading `jobs`: it
    /// must come back, or fail, well within the shortest renew interval, so a hung Redis is
    /// noticed and the call retried while the lease is still valid. Half the shortest renew
    /// interval, clamped to 100 ms–2 s.
    public static func callTimeout(for jobs: [LeaseJob]) -> Duration {
        let shortestRenew = jobs.map(\.timing.renewEvery).min() ?? .seconds(3)
        return clamp(shortestRenew / 2, .milliseconds(100), .seconds(2))
    }

    private static func clamp(_ value: Duration, _ low: Duration, _ high: Duration) -> Duration {
        min(max(value, low), high)
    }
}

extension Duration {
    /// The duration truncated to whole milliseconds.
    package var wholeMilliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }

    /// The duration in seconds as a floating-point number (for metrics and logs).
    package var secondsValue: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
