/// Names every Redis key and channel Leasehold uses, so the schema lives in one place.
///
/// Every key of a namespace starts with the namespace as a Redis Cluster hash tag
/// (`{ns}:…`), so all of them land in one slot: a batched script (one renew for every lease
/// of a member) may only touch keys of one slot in a Cluster. The same layout is used on a
/// single node and behind Sentinel, so a namespace can move between topologies unchanged.
public struct LeaseKeys: Sendable, Hashable {
    /// The namespace every key belongs to (`leasehold` unless configured).
    public let namespace: String

    /// Creates the key schema for one namespace.
    public init(namespace: String = "leasehold") {
        self.namespace = namespace
    }

    /// `{ns}`: the hash tag that puts the whole namespace in one Cluster slot.
    public var prefix: String { "{\(namespace)}" }

    /// The lease string of a job: `<owner>:<token>` with a PX TTL.
    public func lease(_ job: String) -> String { "\(prefix):{\(job)}:lease" }
    /// The last fencing token issued for a job.
    public func fence(_ job: String) -> String { "\(prefix):{\(job)}:fence" }
    /// The job's state hash: holder, run records, next_run_at.
    public func state(_ job: String) -> String { "\(prefix):{\(job)}:state" }
    /// The job's capped audit stream of leadership transitions.
    public func events(_ job: String) -> String { "\(prefix):{\(job)}:events" }
    /// The job's capped stream of run records (slot, token, member, start).
    public func runs(_ job: String) -> String { "\(prefix):{\(job)}:runs" }
    /// The sorted set of members, scored by heartbeat expiry (Redis time, ms).
    public var members: String { "\(prefix):members" }
    /// A member's metadata hash.
    public func member(_ name: String) -> String { "\(prefix):member:\(name)" }
    /// Jobs an operator asked a member to hand over at its next safe point.
    public func handoffRequests(_ member: String) -> String { "\(prefix):member:\(member):handoff" }
    /// The set of job names the members advertising catalog `digest` carry (24 h TTL, kept
    /// alive by the renew of every member advertising it).
    public func catalog(_ digest: String) -> String { "\(prefix):catalog:\(digest)" }
    /// The set of job names members have seen (for the CLI).
    public var jobs: String { "\(prefix):jobs" }
    /// The namespace's epoch hash (`id`, `created_at`, `quarantine_until`): written once per
    /// namespace, so a member that finds it missing or changed knows Redis lost its data.
    public var epoch: String { "\(prefix):epoch" }
    /// The pub/sub channel that carries a job name whenever its lease is released.
    public var releasedChannel: String { "\(prefix):released" }
    /// The pub/sub channel that carries a job name after an operator paused, resumed or
    /// triggered it, so its leader re-reads the job's state at once.
    public var controlChannel: String { "\(prefix):control" }

    /// The members zset of the layout before the namespace hash tag (`ns:members`): a new
    /// member waits while members of that layout are live, since the two layouts would elect
    /// leaders independently.
    package var legacyMembers: String { "\(namespace):members" }
    /// A job's lease key in the layout before the namespace hash tag (`ns:{job}:lease`).
    package func legacyLease(_ job: String) -> String { "\(namespace):{\(job)}:lease" }
}
