import Leasehold

/// Everything `status`, `members` and `watch` show, read from Redis at one moment.
/// Rendering is a pure function of this value (see `StatusRenderer`).
public struct ClusterSnapshot: Sendable, Hashable {
    /// Redis `TIME` when the snapshot was read (ms since the epoch). Every age is relative to it.
    public var nowMs: Int64
    /// The key namespace.
    public var namespace: String
    /// Jobs from the catalog and from `ns:jobs`, sorted by name.
    public var jobs: [JobStatus]
    /// Every member in `ns:members` (live or not), sorted by name.
    public var members: [MemberStatus]

    /// Creates a snapshot.
    public init(nowMs: Int64, namespace: String, jobs: [JobStatus], members: [MemberStatus]) {
        self.nowMs = nowMs
        self.namespace = namespace
        self.jobs = jobs
        self.members = members
    }
}

/// The current holder of a lease.
public struct LeaderInfo: Sendable, Hashable {
    /// The member name.
    public var member: String
    /// The member process's incarnation.
    public var instance: String
    /// The fencing token.
    public var token: UInt64
    /// The lease's remaining TTL (`PTTL`).
    public var expiresInMs: Int64

    /// Creates a leader record.
    public init(member: String, instance: String, token: UInt64, expiresInMs: Int64) {
        self.member = member
        self.instance = instance
        self.token = token
        self.expiresInMs = expiresInMs
    }
}

/// The last run recorded in a job's state hash.
public struct RunInfo: Sendable, Hashable {
    /// When it started (Redis ms).
    public var startedAtMs: Int64
    /// When it finished (Redis ms); nil while running or if it never finished.
    public var finishedAtMs: Int64?
    /// How long it took.
    public var durationMs: Int64?
    /// The recorded result (`ok`, `failed: ...`, ...).
    public var result: String?
    /// Whether the state hash says a run is in progress.
    public var running: Bool
    /// The token it ran under.
    public var token: UInt64?

    /// Creates a run record.
    public init(
        startedAtMs: Int64, finishedAtMs: Int64? = nil, durationMs: Int64? = nil, result: String? = nil,
        running: Bool = false, token: UInt64? = nil
    ) {
        self.startedAtMs = startedAtMs
        self.finishedAtMs = finishedAtMs
        self.durationMs = durationMs
        self.result = result
        self.running = running
        self.token = token
    }
}

/// Since when a job without a leader has had none.
public struct Leaderless: Sendable, Hashable {
    /// How the start was determined.
    public enum Source: String, Sendable, Hashable {
        /// The last leader released it: exact (`released_at`).
        case released
        /// The lease expired; estimated from the holder's last heartbeat tick + the lease TTL.
        case expiredEstimate = "expired_estimate"
        /// The lease expired and the holder's heartbeat is gone (or belongs to a newer
        /// incarnation): estimated from `acquired_at` + the lease TTL (the earliest possible
        /// expiry, so this over-states the gap).
        case acquiredEstimate = "acquired_estimate"
    }

    /// When the job lost its leader (Redis ms).
    public var sinceMs: Int64
    /// How `sinceMs` was found.
    public var source: Source

    /// Creates a record.
    public init(sinceMs: Int64, source: Source) {
        self.sinceMs = sinceMs
        self.source = source
    }
}

/// One job's row.
public struct JobStatus: Sendable, Hashable {
    /// The job name.
    public var name: String
    /// Whether the catalog lists it.
    public var inCatalog: Bool
    /// Whether `ns:jobs` lists it (some member has acquired it at least once).
    public var inRedis: Bool
    /// The current leader; nil when the lease key does not exist.
    public var leader: LeaderInfo?
    /// The rendezvous choice among live members, weighted as in their member hashes.
    public var preferred: String?
    /// The last run.
    public var lastRun: RunInfo?
    /// Set when the job has no leader and had one before.
    public var leaderless: Leaderless?
    /// The next scheduled slot (Redis ms), if the job is scheduled.
    public var nextRunAtMs: Int64?

    /// Creates a row.
    public init(
        name: String, inCatalog: Bool = true, inRedis: Bool = true, leader: LeaderInfo? = nil, preferred: String? = nil,
        lastRun: RunInfo? = nil, leaderless: Leaderless? = nil, nextRunAtMs: Int64? = nil
    ) {
        self.name = name
        self.inCatalog = inCatalog
        self.inRedis = inRedis
        self.leader = leader
        self.preferred = preferred
        self.lastRun = lastRun
        self.leaderless = leaderless
        self.nextRunAtMs = nextRunAtMs
    }
}

/// One member's row.
public struct MemberStatus: Sendable, Hashable {
    /// The member name.
    public var name: String
    /// The incarnation that last heartbeated under this name.
    public var instance: String?
    /// Host name from the member hash.
    public var host: String?
    /// Process id from the member hash.
    public var pid: Int64?
    /// Placement weight (1 when the hash does not say).
    public var weight: Double
    /// Version from the member hash.
    public var version: String?
    /// Process start (Redis ms or wall-clock ms, as the member wrote it).
    public var startedAtMs: Int64?
    /// Its last heartbeat tick (Redis ms).
    public var lastTickMs: Int64?
    /// When its heartbeat expires (the zset score, Redis ms).
    public var heartbeatExpiresAtMs: Int64
    /// Whether the heartbeat has not expired.
    public var live: Bool
    /// When the member announced a graceful exit (Redis ms), if it did.
    public var leftAtMs: Int64?
    /// How many jobs' leases name this member right now.
    public var jobsLed: Int

    /// Creates a row.
    public init(
        name: String, instance: String? = nil, host: String? = nil, pid: Int64? = nil, weight: Double = 1,
        version: String? = nil, startedAtMs: Int64? = nil, lastTickMs: Int64? = nil, heartbeatExpiresAtMs: Int64,
        live: Bool, jobsLed: Int = 0, leftAtMs: Int64? = nil
    ) {
        self.leftAtMs = leftAtMs
        self.name = name
        self.instance = instance
        self.host = host
        self.pid = pid
        self.weight = weight
        self.version = version
        self.startedAtMs = startedAtMs
        self.lastTickMs = lastTickMs
        self.heartbeatExpiresAtMs = heartbeatExpiresAtMs
        self.live = live
        self.jobsLed = jobsLed
    }
}

/// One entry of a job's events stream.
public struct HistoryEvent: Sendable, Hashable {
    /// The stream entry id.
    public var id: String
    /// `acquired`, `expired_takeover`, `released`, `handed_off`, `lost`, `forced_release`.
    public var type: String
    /// The member the event is about.
    public var member: String?
    /// Its owner id (`member@incarnation`).
    public var owner: String?
    /// The token.
    public var token: UInt64?
    /// When (Redis ms); falls back to the stream id's time.
    public var atMs: Int64
    /// For acquisitions: how long the job was leaderless before.
    public var gapMs: Int64?
    /// For an expired takeover: the previous holder's lease value.
    public var previous: String?
    /// For a lost lease: the lease value found instead ('' if none).
    public var holder: String?
    /// For a forced release: who forced it.
    public var by: String?

    /// Creates an event.
    public init(
        id: String, type: String, member: String? = nil, owner: String? = nil, token: UInt64? = nil, atMs: Int64,
        gapMs: Int64? = nil, previous: String? = nil, holder: String? = nil, by: String? = nil
    ) {
        self.id = id
        self.type = type
        self.member = member
        self.owner = owner
        self.token = token
        self.atMs = atMs
        self.gapMs = gapMs
        self.previous = previous
        self.holder = holder
        self.by = by
    }
}

/// A job's audit trail, oldest first.
public struct JobHistory: Sendable, Hashable {
    /// The job.
    public var job: String
    /// Redis `TIME` when read.
    public var nowMs: Int64
    /// The events, oldest first.
    public var events: [HistoryEvent]

    /// Creates a history.
    public init(job: String, nowMs: Int64, events: [HistoryEvent]) {
        self.job = job
        self.nowMs = nowMs
        self.events = events
    }
}
