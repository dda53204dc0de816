import CoreMetrics

/// Every metric the election reports (the job framework extends it with run metrics), created through one injectable factory so tests can use
/// a private `TestMetrics` instead of bootstrapping the global metrics system.
///
/// Names follow Prometheus conventions (base units, `_total` counters); labels are `job`,
/// `reason`, `result` and `operation`, all of bounded cardinality.
public struct LeaseholdMetrics: Sendable {
    /// The factory every metric is created on; the job framework adds its own metrics on it.
    package let factory: any MetricsFactory

    /// Creates the metrics on `factory` (default: the global metrics system).
    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        self.factory = factory
    }

    /// 1 while this member leads `job`, else 0.
    public func leader(job: String) -> Gauge {
        Gauge(label: "leasehold_leader", dimensions: [("job", job)], factory: factory)
    }

    /// Counts leases this member acquired.
    public func leaseAcquired(job: String) -> Counter {
        Counter(label: "leasehold_lease_acquired_total", dimensions: [("job", job)], factory: factory)
    }

    /// Counts leadership ends by reason: expired, stepped_down, released, handed_off.
    public func leaseLost(job: String, reason: String) -> Counter {
        Counter(label: "leasehold_lease_lost_total", dimensions: [("job", job), ("reason", reason)], factory: factory)
    }

    /// Counts takeovers of a lease the dead holder's guardian released (crash release).
    public func crashReleases(job: String) -> Counter {
        Counter(label: "leasehold_crash_releases_total", dimensions: [("job", job)], factory: factory)
    }

    /// The leaderless gap a new leader observed before it took over.
    public func leaderlessSeconds(job: String) -> Gauge {
        Gauge(label: "leasehold_leaderless_seconds", dimensions: [("job", job)], factory: factory)
    }

    /// Duration of the one renew call per tick.
    public var renewDuration: Timer {
        Timer(
            label: "leasehold_renew_duration_seconds", dimensions: [], preferredDisplayUnit: .seconds, factory: factory)
    }

    /// 1 while Redis answers, else 0.
    public var redisUp: Gauge {
        Gauge(label: "leasehold_redis_up", factory: factory)
    }

    /// Counts failed Redis calls by operation (acquire, renew, release, schedule, fenced_write).
    public func redisErrors(operation: String) -> Counter {
        Counter(label: "leasehold_redis_errors_total", dimensions: [("operation", operation)], factory: factory)
    }

    /// Counts the times this member found that Redis lost the namespace's data (its epoch
    /// missing or changed); each starts a quarantine of one lease TTL without grants.
    public var redisDataLosses: Counter {
        Counter(label: "leasehold_redis_data_losses_total", factory: factory)
    }

    /// 1 while the namespace is quarantined after a data loss (no lease is granted), else 0.
    public var quarantined: Gauge {
        Gauge(label: "leasehold_quarantined", factory: factory)
    }

    /// Counts lease calls that ran but fewer than `min_replicas` replicas acknowledged
    /// (by operation): not counted as grants, renewals or releases.
    public func replicaAckShortfall(operation: String) -> Counter {
        Counter(
            label: "leasehold_replica_ack_shortfall_total", dimensions: [("operation", operation)], factory: factory)
    }

    /// The number of live members this member sees.
    public var members: Gauge {
        Gauge(label: "leasehold_members", factory: factory)
    }
}
