/// Names every Redis key and channel Leasehold uses, so the schema lives in one place.
///
/// Per-job keys carry the job name as a Redis Cluster hash tag (`ns:{job}:lease`), so all
/// keys of one job land in one slot.
public struct LeaseKeys: Sendable, Hashable {
    /// The prefix every key starts with (`leasehold` unless configured).
    public let namespace: String

    /// Creates the key schema for one namespace.
    public init(namespace: String = "leasehold") {
        self.namespace = namespace
    }

    /// The lease string of a job: `<owner>:<token>` with a PX TTL.
    public func lease(_ job: String) -> String { "\(namespace):{\(job)}:lease" }
    /// The last fencing token issued for a job.
    public func fence(_ job: String) -> String { "\(namespace):{\(job)}:fence" }
    /// The job's state hash: holder, run records, next_run_at.
    public func state(_ job: String) -> String { "\(namespace):{\(job)}:state" }
    /// The job's capped audit stream of leadership transitions.
    public func events(_ job: String) -> String { "\(namespace):{\(job)}:events" }
    /// The job's capped stream of run records (slot, token, member, start).
    public func runs(_ job: String) -> String { "\(namespace):{\(job)}:runs" }
    /// The sorted set of members, scored by heartbeat expiry (Redis time, ms).
    public var members: String { "\(namespace):members" }
    /// A member's metadata hash.
    public func member(_ name: String) -> String { "\(namespace):member:\(name)" }
    /// Jobs an operator asked a member to hand over at its next safe point.
    public func handoffRequests(_ member: String) -> String { "\(namespace):member:\(member):handoff" }
    /// The set of job names the members advertising catalog `digest` carry (24 h TTL, kept
    /// alive by the renew of every member advertising it).
    public func catalog(_ digest: String) -> String { "\(namespace):catalog:\(digest)" }
    /// The set of job names members have seen (for the CLI).
    public var jobs: String { "\(namespace):jobs" }
    /// The pub/sub channel that carries a job name whenever its lease is released.
    public var releasedChannel: String { "\(namespace):released" }
    /// The pub/sub channel that carries a job name when an operator paused, resumed or triggered it.
    public var controlChannel: String { "\(namespace):control" }
}
