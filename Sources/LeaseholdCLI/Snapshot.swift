import Leasehold

/// Everything `status`, `members` and `watch` show, read from Redis at one moment.
/// Rendering is a pure function of this value (see `StatusRenderer`).
package struct ClusterSnapshot: Sendable, Hashable {
    /// Redis `TIME` when the snapshot was read (ms since the epoch). Every age is relative to it.
    package var nowMs: Int64
    /// The key namespace.
    package var namespace: String
    /// Jobs from the catalog and from `{ns}:jobs`, sorted by name.
    package var jobs: [JobStatus]
    /// Every member in `{ns}:members` (live or not), sorted by name.
    package var members: [MemberStatus]
    /// The catalog digests live members advertise, sorted by digest.
    package var catalogs: [CatalogAdvert]
    /// Until when (Redis ms) no lease is granted because Redis lost the namespace's data
    /// (the restart quarantine, `{ns}:epoch`); nil when none is in force.
    package var quarantineUntilMs: Int64? = nil

    /// Creates a snapshot.
    package init(
        nowMs: Int64, namespace: String, jobs: [JobStatus], members: [MemberStatus], catalogs: [CatalogAdvert] = []
    ) {
        self.nowMs = nowMs
        self.namespace = namespace
        self.jobs = jobs
        self.members = members
        self.catalogs = catalogs
    }

    /// Live members whose job set is unknown: an older version without a `catalog` field, or
    /// a digest whose `{ns}:catalog:<digest>` set cannot be read. Each counts as carrying every
    /// job, so while one is live no job is "not carried" and `prune` deletes nothing.
    package var membersOfUnknownCatalog: [MemberStatus] {
        let unreadable = Set(catalogs.filter { $0.jobs == nil }.map(\.digest))
        return members.filter { member in
            member.live && (member.catalog.map { unreadable.contains($0) } ?? true)
        }
    }
}

/// One catalog digest advertised by live members, and the job set published under it.
package struct CatalogAdvert: Sendable, Hashable {
    /// The digest (16 lowercase hex characters as members write it).
    package var digest: String
    /// The live members advertising it, sorted.
    package var members: [String]
    /// The job names in `{ns}:catalog:<digest>`; nil when the set is missing, empty or not a set
    /// (then the members advertising it count as carrying every job).
    package var jobs: Set<String>?
    /// Why `jobs` is nil, for the operator.
    package var problem: String?

    /// Creates an advert.
    package init(digest: String, members: [String], jobs: Set<String>?, problem: String? = nil) {
        self.digest = digest
        self.members = members
        self.jobs = jobs
        self.problem = problem
    }
}

/// The current holder of a lease.
package struct LeaderInfo: Sendable, Hashable {
    /// The member name.
    package var member: String
    /// The member process's incarnation.
    package var instance: String
    /// The fencing token.
    package var token: UInt64
    /// The lease's remaining TTL (`PTTL`).
    package var expiresInMs: Int64

    /// Creates a leader record.
    package init(member: String, instance: String, token: UInt64, expiresInMs: Int64) {
        self.member = member
        self.instance = instance
        self.token = token
        self.expiresInMs = expiresInMs
    }
}

/// The last run recorded in a job's state hash.
package struct RunInfo: Sendable, Hashable {
    /// When it started (Redis ms).
    package var startedAtMs: Int64
    /// When it finished (Redis ms); nil while running or if it never finished.
    package var finishedAtMs: Int64?
    /// How long it took.
    package var durationMs: Int64?
    /// The recorded result (`ok`, `failed: ...`, ...).
    package var result: String?
    /// Whether the state hash says a run is in progress.
    package var running: Bool
    /// The token it ran under.
    package var token: UInt64?

    /// Creates a run record.
    package init(
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
package struct Leaderless: Sendable, Hashable {
    /// How the start was determined.
    package enum Source: String, Sendable, Hashable {
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
    package var sinceMs: Int64
    /// How `sinceMs` was found.
    package var source: Source

    /// Creates a record.
    package init(sinceMs: Int64, source: Source) {
        self.sinceMs = sinceMs
        self.source = source
    }
}

/// One job's row.
package struct JobStatus: Sendable, Hashable {
    /// The job name.
    package var name: String
    /// Whether the catalog lists it.
    package var inCatalog: Bool
    /// Whether `{ns}:jobs` lists it (some member has acquired it at least once).
    package var inRedis: Bool
    /// The current leader; nil when the lease key does not exist.
    package var leader: LeaderInfo?
    /// The rendezvous choice among live members, weighted as in their member hashes.
    package var preferred: String?
    /// The last run.
    package var lastRun: RunInfo?
    /// Set when the job has no leader and had one before.
    package var leaderless: Leaderless?
    /// The next scheduled slot (Redis ms), if the job is scheduled.
    package var nextRunAtMs: Int64?
    /// What is wrong with the job's keys (one of a wrong type, written by another tool), if
    /// anything: no member can acquire the job until it is fixed.
    package var problem: String?
    /// The live members that carry the job, sorted; a live member of unknown catalog (an
    /// older version) carries every job.
    package var carriedBy: [String] = []
    /// Set when members are live and none of them carries the job: its keys are left over
    /// from a catalog no live member runs (`leasehold prune` deletes them).
    package var notCarried = false
    /// Whether an operator paused the job (`paused` is "1" in its state hash).
    package var paused = false
    /// Why, as the operator said (`paused_reason`); nil when none was given.
    package var pausedReason: String?
    /// Who paused it (`paused_by`: user@host).
    package var pausedBy: String?
    /// When it was paused (`paused_at`, Redis ms).
    package var pausedAtMs: Int64?
    /// When a run last succeeded (`last_success_at`, Redis ms, written by the leader).
    package var lastSuccessAtMs: Int64?
    /// A manual trigger the leader has not consumed yet (`trigger_requested`, Redis ms).
    package var triggerRequestedAtMs: Int64?

    /// Creates a row.
    package init(
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
package struct MemberStatus: Sendable, Hashable {
    /// The member name.
    package var name: String
    /// The incarnation that last heartbeated under this name.
    package var instance: String?
    /// Host name from the member hash.
    package var host: String?
    /// Process id from the member hash.
    package var pid: Int64?
    /// Placement weight (1 when the hash does not say).
    package var weight: Double
    /// Version from the member hash.
    package var version: String?
    /// Process start (Redis ms or wall-clock ms, as the member wrote it).
    package var startedAtMs: Int64?
    /// Its last heartbeat tick (Redis ms).
    package var lastTickMs: Int64?
    /// When its heartbeat expires (the zset score, Redis ms).
    package var heartbeatExpiresAtMs: Int64
    /// Whether the heartbeat has not expired.
    package var live: Bool
    /// When the member announced a graceful exit (Redis ms), if it did.
    package var leftAtMs: Int64?
    /// How many jobs' leases name this member right now.
    package var jobsLed: Int
    /// The digest of the catalog the member advertises (`catalog` in its hash); nil for an
    /// older version, which carries an unknown set of jobs.
    package var catalog: String?
    /// How many jobs the member carries (`jobs` in its hash), if it says.
    package var jobs: Int?

    /// Creates a row.
    package init(
        name: String, instance: String? = nil, host: String? = nil, pid: Int64? = nil, weight: Double = 1,
        version: String? = nil, startedAtMs: Int64? = nil, lastTickMs: Int64? = nil, heartbeatExpiresAtMs: Int64,
        live: Bool, jobsLed: Int = 0, leftAtMs: Int64? = nil, catalog: String? = nil, jobs: Int? = nil
    ) {
        self.leftAtMs = leftAtMs
        self.catalog = catalog
        self.jobs = jobs
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
package struct HistoryEvent: Sendable, Hashable {
    /// The stream entry id.
    package var id: String
    /// `acquired`, `expired_takeover`, `released`, `handed_off`, `lost`, `forced_release`; the
    /// operator's `paused`, `resumed`, `triggered`; the leader's `missed_slot`.
    package var type: String
    /// The member the event is about.
    package var member: String?
    /// Its owner id (`member@incarnation`).
    package var owner: String?
    /// The token.
    package var token: UInt64?
    /// When (Redis ms); falls back to the stream id's time.
    package var atMs: Int64
    /// For acquisitions: how long the job was leaderless before.
    package var gapMs: Int64?
    /// For an expired takeover: the previous holder's lease value.
    package var previous: String?
    /// For a lost lease: the lease value found instead ('' if none).
    package var holder: String?
    /// For a forced release, a pause, a resume or a trigger: who did it (user@host).
    package var by: String?
    /// For a pause: the operator's reason ('' or nil for none).
    package var reason: String?
    /// For a trigger: whether it ran a paused job (`--force`).
    package var forced: Bool?
    /// For a missed slot: the slot (ms since the epoch).
    package var slotMs: Int64?
    /// For a missed slot: how late a start may be before the slot counts as missed.
    package var deadlineMs: Int64?

    /// Creates an event.
    package init(
        id: String, type: String, member: String? = nil, owner: String? = nil, token: UInt64? = nil, atMs: Int64,
        gapMs: Int64? = nil, previous: String? = nil, holder: String? = nil, by: String? = nil,
        reason: String? = nil, forced: Bool? = nil, slotMs: Int64? = nil, deadlineMs: Int64? = nil
    ) {
        self.reason = reason
        self.forced = forced
        self.slotMs = slotMs
        self.deadlineMs = deadlineMs
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
package struct JobHistory: Sendable, Hashable {
    /// The job.
    package var job: String
    /// Redis `TIME` when read.
    package var nowMs: Int64
    /// The events, oldest first.
    package var events: [HistoryEvent]

    /// Creates a history.
    package init(job: String, nowMs: Int64, events: [HistoryEvent]) {
        self.job = job
        self.nowMs = nowMs
        self.events = events
    }
}
