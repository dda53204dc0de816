/// The messages between the lease engine (pure, no I/O) and whatever carries its commands to
/// Redis: the real driver, or the deterministic simulator.

/// How a job's leadership is placed among members.
public enum LeasePlacement: Sendable, Hashable {
    /// First come, first served.
    case any
    /// Prefer the rendezvous choice among live members; others wait `standbyDelay` before
    /// taking a free lease, and a leader hands off once the preferred member has been live
    /// for `stability`.
    case spread(standbyDelay: Duration, stability: Duration)
}

/// One job as the lease engine sees it: a name, timing rules and placement.
public struct LeaseJob: Sendable, Hashable {
    /// The job name (unique within a namespace).
    public var name: String
    /// The lease timing rules.
    public var timing: LeaseTiming
    /// How leadership is placed.
    public var placement: LeasePlacement

    /// Creates a job description for the engine.
    public init(name: String, timing: LeaseTiming = LeaseTiming(), placement: LeasePlacement = .any) {
        self.name = name
        self.timing = timing
        self.placement = placement
    }
}

/// A live member as reported by the heartbeat script.
public struct MemberInfo: Sendable, Hashable {
    /// The member's stable name.
    public var name: String
    /// When its heartbeat expires, in Redis time (ms since the epoch).
    public var expiresAtMs: Int64
    /// Its placement weight.
    public var weight: Double
    /// The incarnation (process start) behind the heartbeat, if known: a lease held by
    /// another incarnation of the same name belongs to a process that is gone.
    public var incarnation: String?
    /// The digest of the job set it carries (`LeaseKeys.catalog(_:)` lists the jobs); nil for
    /// a member of an older version that does not advertise one, taken to carry every job.
    public var catalog: String?

    /// Creates a member record.
    public init(name: String, expiresAtMs: Int64, weight: Double, incarnation: String? = nil, catalog: String? = nil) {
        self.name = name
        self.expiresAtMs = expiresAtMs
        self.weight = weight
        self.incarnation = incarnation
        self.catalog = catalog
    }
}

/// A command the engine wants carried to Redis. `id` correlates the completion.
package enum LeaseCommand: Sendable, Hashable {
    /// Try to acquire these free-looking leases in one script call.
    case acquire(id: Int, requests: [AcquireRequest])
    /// Renew these held leases and refresh the heartbeat in one script call.
    case renew(id: Int, batch: RenewBatch)
    /// Release these leases by value in one script call.
    case release(id: Int, items: [ReleaseItem], reason: ReleaseReason)
    /// Read the job set another member advertises (only when a digest is new to us).
    case fetchCatalog(id: Int, digest: String)

    /// The correlation id of the command.
    package var id: Int {
        switch self {
        case .acquire(let id, _), .renew(let id, _), .release(let id, _, _), .fetchCatalog(let id, _): id
        }
    }
}

/// One job in an acquire batch.
package struct AcquireRequest: Sendable, Hashable {
    /// The job name.
    package var job: String
    /// The lease TTL to set.
    package var ttlMs: Int64
    /// How long the lease seemed to have been free when we asked, if we observed its end.
    package var gapHintMs: Int64?
    /// Placement: take a released lease only once it has been free this long (Redis time).
    /// A member that is not the preferred one sends its standby delay, so an attempt that
    /// happens to land just after a handoff release cannot beat the preferred member.
    package var minFreeMs: Int64? = nil

    /// Creates a request (the engine's; tests build replies to it).
    package init(job: String, ttlMs: Int64, gapHintMs: Int64? = nil, minFreeMs: Int64? = nil) {
        self.job = job
        self.ttlMs = ttlMs
        self.gapHintMs = gapHintMs
        self.minFreeMs = minFreeMs
    }
}

/// One member's renewal of everything it holds, plus its heartbeat.
package struct RenewBatch: Sendable, Hashable {
    /// The leases to renew.
    package var leases: [RenewItem]
    /// How long the member's heartbeat stays live.
    package var heartbeatTTLMs: Int64
    /// Redis time of this member's previous successful tick (0 if none), for duplicate
    /// member-name detection.
    package var previousTickMs: Int64
    /// The digest of the job set this member carries, written into its member hash.
    package var catalogDigest: String
    /// How many jobs it carries (for the CLI).
    package var jobCount: Int
    /// The job set to (re)write under the digest: only on the first tick after a start or a
    /// catalog change, or when Redis lost it; nil otherwise, so a tick stays small.
    package var publishJobs: [String]?

    /// Creates a batch.
    package init(
        leases: [RenewItem], heartbeatTTLMs: Int64, previousTickMs: Int64, catalogDigest: String = "",
        jobCount: Int = 0, publishJobs: [String]? = nil
    ) {
        self.leases = leases
        self.heartbeatTTLMs = heartbeatTTLMs
        self.previousTickMs = previousTickMs
        self.catalogDigest = catalogDigest
        self.jobCount = jobCount
        self.publishJobs = publishJobs
    }
}

/// One lease in a renew batch.
package struct RenewItem: Sendable, Hashable {
    /// The job name.
    package var job: String
    /// The token the member believes it holds.
    package var token: UInt64
    /// The TTL to extend to.
    package var ttlMs: Int64

    /// Creates an item.
    package init(job: String, token: UInt64, ttlMs: Int64) {
        self.job = job
        self.token = token
        self.ttlMs = ttlMs
    }
}

/// One lease in a release batch.
package struct ReleaseItem: Sendable, Hashable {
    /// The job name.
    package var job: String
    /// The token held, or nil to release whatever lease this owner holds (after an
    /// acquire whose outcome is unknown).
    package var token: UInt64?

    /// Creates an item.
    package init(job: String, token: UInt64?) {
        self.job = job
        self.token = token
    }
}

/// Why a lease is given up voluntarily.
public enum ReleaseReason: String, Sendable, Hashable {
    /// Shutdown or an explicit release.
    case released
    /// Placement (or an operator) moved the job to another member.
    case handedOff = "handed_off"
    /// The holder's process died and a process watching it released the lease by value once
    /// the holder's work had stopped (the daemon's guardian; the engine never sends it).
    case crashRelease = "crash_release"
}

/// What Redis answered for one job of an acquire batch.
package enum AcquireOutcome: Sendable, Hashable {
    /// The lease was free and is now ours with a new token.
    case acquired(token: UInt64, takeover: TakeoverKind, gapMs: Int64?)
    /// The lease already carried our owner id (an earlier acquire did succeed): TTL reset.
    case alreadyHeld(token: UInt64)
    /// Someone else holds it, for `pttlMs` more milliseconds (-1: no TTL, -2: just gone).
    case held(by: String, pttlMs: Int64)
    /// This job's step of the batch failed on the server (e.g. one of its keys has the wrong
    /// type); the script left no lease in our name. `message` names the key.
    case failed(message: String)
}

/// How a new leader came to the lease.
public enum TakeoverKind: String, Sendable, Hashable {
    /// Free after a release, or never held.
    case acquired
    /// The previous holder's lease expired without a release (crash, pause, partition).
    case expiredTakeover = "expired_takeover"
    /// This member's own lease, taken up again.
    case reacquired
    /// Free because the previous holder's process died and its guardian released the lease.
    case crashRelease = "crash_release"
}

/// The namespace epoch as a script reply reports it: written once per namespace, new after
/// Redis lost its data.
package struct NamespaceEpoch: Sendable, Hashable {
    /// The epoch's id (Redis µs when it was written).
    package var id: String
    /// Until when (Redis ms) no lease is granted after a data loss; 0 or past for none.
    package var quarantineUntilMs: Int64

    /// Creates an epoch as a reply reports it.
    package init(id: String, quarantineUntilMs: Int64) {
        self.id = id
        self.quarantineUntilMs = quarantineUntilMs
    }
}

/// The decoded reply of an acquire batch.
package struct AcquireReply: Sendable, Hashable {
    /// Redis time when the script ran (ms).
    package var redisNowMs: Int64
    /// One outcome per request, in order.
    package var outcomes: [AcquireOutcome]
    /// The namespace epoch the script saw (nil where a test builds the reply).
    package var epoch: NamespaceEpoch?

    /// Creates a reply.
    package init(redisNowMs: Int64, outcomes: [AcquireOutcome], epoch: NamespaceEpoch? = nil) {
        self.redisNowMs = redisNowMs
        self.outcomes = outcomes
        self.epoch = epoch
    }
}

/// The decoded reply of a renew batch.
package struct RenewReply: Sendable, Hashable {
    /// Redis time when the script ran (ms).
    package var redisNowMs: Int64
    /// Whether each lease of the batch was renewed, in order.
    package var renewed: [Bool]
    /// Members whose heartbeat is live.
    package var members: [MemberInfo]
    /// Another live incarnation using this member's name, if one was seen.
    package var duplicateIncarnation: String?
    /// Jobs an operator asked this member to hand over.
    package var handoffRequests: [String]
    /// Whether the job set of this member's digest exists in Redis (false after a data loss:
    /// the next tick publishes it again).
    package var catalogPresent: Bool
    /// The namespace epoch the script saw (nil where a test builds the reply).
    package var epoch: NamespaceEpoch?

    /// Creates a reply.
    package init(
        redisNowMs: Int64, renewed: [Bool], members: [MemberInfo],
        duplicateIncarnation: String? = nil, handoffRequests: [String] = [], catalogPresent: Bool = true,
        epoch: NamespaceEpoch? = nil
    ) {
        self.epoch = epoch
        self.redisNowMs = redisNowMs
        self.renewed = renewed
        self.members = members
        self.duplicateIncarnation = duplicateIncarnation
        self.handoffRequests = handoffRequests
        self.catalogPresent = catalogPresent
    }
}

/// A failed call to Redis, as the engine needs to know it.
package struct LeaseCallFailure: Error, Sendable, Hashable {
    /// True when the command may have been executed anyway (timeout, connection lost after
    /// sending): never count it as success, never assume it did nothing.
    package var outcomeUnknown: Bool
    /// A one-line description for logs.
    package var message: String
    /// False when the call never reached Redis because its connection was still waiting out
    /// a reconnect backoff: old news about Redis, not evidence that it is down now.
    package var attempted: Bool

    /// Creates a failure.
    package init(outcomeUnknown: Bool, message: String, attempted: Bool = true) {
        self.outcomeUnknown = outcomeUnknown
        self.message = message
        self.attempted = attempted
    }
}

/// The result of a command, fed back into the engine.
package enum LeaseCompletion: Sendable, Hashable {
    /// An acquire batch finished.
    case acquire(id: Int, Result<AcquireReply, LeaseCallFailure>)
    /// A renew batch finished.
    case renew(id: Int, Result<RenewReply, LeaseCallFailure>)
    /// A release batch finished: one flag per item.
    case release(id: Int, Result<[Bool], LeaseCallFailure>)
    /// A catalog fetch finished: the job names stored under the digest (empty when none).
    case fetchCatalog(id: Int, Result<[String], LeaseCallFailure>)
}

/// Why a member stopped leading a job without choosing to.
public enum LossReason: String, Sendable, Hashable {
    /// Validity ran out before a renewal succeeded (Redis unreachable or slow): the member
    /// stepped down on its own clock.
    case steppedDown = "stepped_down"
    /// A renewal found the lease gone or held by someone else.
    case expired
}

/// A change in what this member leads, for the layer that runs handlers.
package enum LeadershipEvent: Sendable, Hashable {
    /// This member now leads `job` with `token` until `validUntil` (engine time).
    case acquired(job: String, token: UInt64, validUntil: Duration, takeover: TakeoverKind, gapMs: Int64?)
    /// This member no longer leads `job`: its handler must stop now.
    case lost(job: String, token: UInt64, reason: LossReason)
    /// A release requested through `release(job:token:reason:now:)` completed (or was abandoned because
    /// Redis was unreachable, in which case the lease simply expires).
    case released(job: String, token: UInt64, reason: ReleaseReason, confirmed: Bool)
    /// Placement or an operator wants this leader to hand `job` over at its next safe point.
    case handoffSuggested(job: String, to: String?)
    /// Another live process uses this member's name.
    case duplicateMember(incarnation: String)
    /// Redis became reachable (true) or unreachable (false).
    case redisAvailability(up: Bool, detail: String?)
    /// The set of live members changed.
    case membersChanged([MemberInfo])
    /// Acquiring `job` failed on the server for a reason of its own (a key of the wrong
    /// type): reported once per distinct message, nil when it works again.
    case jobFailure(job: String, message: String?)
}
