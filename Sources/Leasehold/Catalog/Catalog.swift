/// When a job runs while its member holds the lease.
public enum JobSchedule: Sendable, Hashable {
    /// The handler runs for as long as leadership lasts.
    case continuous
    /// A run every interval (measured from the previous scheduled time, coalesced after failover).
    case every(Duration)
    /// Runs at cron times in the schedule's time zone.
    case cron(CronSchedule)
}

/// How members decide who goes first for a job.
public enum PlacementMode: String, Sendable, CaseIterable {
    /// Rendezvous hashing spreads jobs across members; non-preferred members wait `standbyDelay`.
    case spread
    /// Whoever asks first wins.
    case any
}

/// What a leader does when it loses a lease while the handler is running.
public enum LostLeadershipAction: String, Sendable, CaseIterable {
    /// Cancel the handler and keep serving other jobs.
    case cancel
    /// Exit the process (for handlers that cannot be trusted to stop).
    case exit
}

/// How a failed run of a scheduled job is tried again (`retry:`).
public struct RetryPolicy: Sendable, Hashable {
    /// Total tries including the first (1 = no retry).
    public var attempts: Int
    /// The wait before the first retry; each later one waits twice as long.
    public var backoff: Duration
    /// The longest wait between two tries.
    public var maxBackoff: Duration

    /// Creates a policy; `backoff` defaults to 1s and `maxBackoff` to 5m.
    public init(attempts: Int, backoff: Duration = .seconds(1), maxBackoff: Duration = .seconds(300)) {
        self.attempts = attempts
        self.backoff = backoff
        self.maxBackoff = maxBackoff
    }
}

/// One job, fully resolved (defaults applied) and validated. Plain values: the lease engine never sees YAML.
public struct JobSpec: Sendable {
    /// Unique job name, also the Redis key suffix.
    public var name: String
    /// Handler kind (what `handler:` names).
    public var handler: String
    /// When it runs.
    public var schedule: JobSchedule
    /// Lease TTL.
    public var lease: Duration
    /// Renewal interval; always less than half of `lease`.
    public var renewEvery: Duration
    /// Clock-drift allowance as a fraction (0.01 = 1%), subtracted from validity.
    public var drift: Double
    /// Placement mode.
    public var placement: PlacementMode
    /// How long non-preferred members wait before trying; nil lets the placement code decide.
    public var standbyDelay: Duration?
    /// Reaction to a lost lease.
    public var onLostLeadership: LostLeadershipAction
    /// Per-run timeout; nil means none.
    public var timeout: Duration?
    /// A slot that cannot start this long after its planned time is skipped; nil runs a
    /// missed slot once, however late.
    public var startingDeadline: Duration?
    /// Each slot starts after a delay in [0, jitter), the same on every member; nil for none.
    public var jitter: Duration?
    /// How failed runs are retried; nil for no retry (scheduled jobs only).
    public var retry: RetryPolicy?
    /// The handler's own `config:` section, checked by the handler, kept with locations for its errors.
    public var config: ConfigNode?
    /// Where the job's mapping starts.
    public var location: SourceLocation

    /// Creates a job spec (the loader fills in defaults; tests and embedders may build one directly).
    public init(
        name: String, handler: String, schedule: JobSchedule, lease: Duration = .seconds(10),
        renewEvery: Duration? = nil, drift: Double = 0.01, placement: PlacementMode = .spread,
        standbyDelay: Duration? = nil, onLostLeadership: LostLeadershipAction = .cancel,
        timeout: Duration? = nil, startingDeadline: Duration? = nil, jitter: Duration? = nil,
        retry: RetryPolicy? = nil, config: ConfigNode? = nil,
        location: SourceLocation = SourceLocation(file: "<memory>", line: 0, column: 0)
    ) {
        self.name = name
        self.handler = handler
        self.schedule = schedule
        self.lease = lease
        self.renewEvery = renewEvery ?? lease / 3
        self.drift = drift
        self.placement = placement
        self.standbyDelay = standbyDelay
        self.onLostLeadership = onLostLeadership
        self.timeout = timeout
        self.startingDeadline = startingDeadline
        self.jitter = jitter
        self.retry = retry
        self.config = config
        self.location = location
    }
}

/// A loaded, validated `jobs.yaml`.
public struct Catalog: Sendable {
    /// Schema version (always 1 today).
    public var version: Int
    /// `redis.url` from the file; the caller applies `--redis` / `LEASEHOLD_REDIS_URL` over it.
    public var redisURL: String?
    /// Redis key namespace.
    public var namespace: String
    /// `redis.password_file`, resolved against the catalog's directory; the caller applies
    /// `--redis-password-file` / `LEASEHOLD_REDIS_PASSWORD_FILE` over it.
    public var redisPasswordFile: String?
    /// `redis.tls`, paths resolved against the catalog's directory; the caller applies the
    /// `--tls-*` flags over it (see `RedisTLSSetting`).
    package var redisTLS: CatalogTLS?
    /// `redis.sentinel_password`: the sentinels' own password for a `redis-sentinel://` URL.
    public var redisSentinelPassword: String?
    /// `redis.min_replicas`: replicas that must acknowledge every acquire, renew and release
    /// (`WAIT`); 0 (the default) sends no WAIT.
    public var redisMinReplicas: Int = 0
    /// Jobs in file order.
    public var jobs: [JobSpec]
    /// `defaults.crash_release`: whether a guardian process releases this daemon's leases
    /// once the daemon process has died (true unless the catalog says false).
    public var crashRelease: Bool = true
    /// The path as given to the loader.
    public var path: String

    /// Creates a catalog.
    public init(
        version: Int = 1, redisURL: String? = nil, namespace: String = "leasehold", jobs: [JobSpec], path: String
    ) {
        self.version = version
        self.redisURL = redisURL
        self.namespace = namespace
        self.jobs = jobs
        self.path = path
    }
}

/// A handler registry's verdict on a job's `handler:` kind and `config:` section.
public enum HandlerConfigCheck: Sendable {
    /// No handler of that kind is registered.
    case unknownKind
    /// The config is acceptable.
    case valid
    /// The config has these problems (with locations inside `config:`).
    case invalid([ConfigError])
}

/// `redis.tls` as the catalog gave it, each value with where it was written (for errors about
/// files that turn out missing when a member connects).
package struct CatalogTLS: Sendable, Hashable {
    /// A value and its location in the catalog.
    package struct Setting<Value: Sendable & Hashable>: Sendable, Hashable {
        /// The value (paths already resolved against the catalog's directory).
        package var value: Value
        /// Where it was written.
        package var location: SourceLocation
    }

    /// Where `tls:` starts.
    package var location: SourceLocation
    /// `ca_file`.
    package var caFile: Setting<String>?
    /// `cert_file`.
    package var certFile: Setting<String>?
    /// `key_file`.
    package var keyFile: Setting<String>?
    /// `server_name`.
    package var serverName: Setting<String>?
    /// `verify` (true when absent).
    package var verify: Setting<Bool>?
}
