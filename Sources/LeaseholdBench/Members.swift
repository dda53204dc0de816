import Leasehold
import Logging
import RedisClient
import Synchronization

/// One in-process Leasehold member: a `LeaseManager` plus a consumer of its events that acts
/// on handoff suggestions at once (the bench runs no handlers, so every point is safe).
final class InProcessMember: Sendable {
    let name: String
    let manager: LeaseManager
    private let tasks = Mutex<(run: Task<Void, Never>?, events: Task<Void, Never>?)>((nil, nil))
    /// Acquisitions seen so far (for counting moves).
    let acquisitions = Atomic<Int>(0)

    init(name: String, redis: RedisConfiguration, namespace: String, jobs: [LeaseJob], seed: UInt64) {
        self.name = name
        manager = LeaseManager(
            configuration: .init(
                redis: redis, keys: LeaseKeys(namespace: namespace),
                member: .init(owner: OwnerID(member: name), seed: seed)),
            jobs: jobs, logger: quietLogger("bench.\(name)"))
    }

    func start() {
        let manager = self.manager
        let run = Task { await manager.run() }
        let events = Task { [self] in
            for await event in manager.events {
                switch event {
                case .handoffSuggested(let job, _):
                    if let grant = manager.grant(for: job) {
                        manager.release(job: job, token: grant.token, reason: .handedOff)
                    }
                case .acquired:
                    self.acquisitions.add(1, ordering: .relaxed)
                default:
                    break
                }
            }
        }
        tasks.withLock { $0 = (run, events) }
    }

    /// Cancels `run()`: a graceful stop that releases every lease.
    func stop() async {
        let (run, events) = tasks.withLock { $0 }
        run?.cancel()
        await run?.value
        await events?.value
    }
}

/// The lease rules the daemon derives from a catalog job (`JobSpec.leaseJob`): spread
/// placement, standby delay = renew interval, stability window = TTL (unless given).
func benchJobs(count: Int, ttl: Duration, spread: Bool = true, stability: Duration? = nil) -> [LeaseJob] {
    (0..<count).map { index in
        var job = JobSpec(name: "job-\(index)", handler: "log", schedule: .continuous, lease: ttl, placement: spread ? .spread : .any).leaseJob
        if let stability, case .spread(let delay, _) = job.placement { job.placement = .spread(standbyDelay: delay, stability: stability) }
        return job
    }
}

/// The Redis timeouts the daemon uses for these jobs (`LeaseTiming.callTimeout(for:)`).
func daemonRedisConfiguration(_ base: RedisConfiguration, jobs: [LeaseJob]) -> RedisConfiguration {
    var config = base
    let timeout = LeaseTiming.callTimeout(for: jobs)
    config.connectTimeout = timeout
    config.commandTimeout = timeout
    return config
}

/// Who leads each job right now, across in-process members.
func holders(_ members: [InProcessMember]) -> [String: String] {
    var result: [String: String] = [:]
    for member in members {
        for grant in member.manager.currentGrants { result[grant.job] = member.name }
    }
    return result
}

/// Jobs led by a member other than their rendezvous-preferred one (or not led at all).
func misplaced(jobs: [LeaseJob], holders: [String: String], members: [String]) -> Int {
    let candidates = members.map { RendezvousMember(name: $0) }
    var count = 0
    for job in jobs {
        if holders[job.name] == nil || holders[job.name] != Rendezvous.preferred(job: job.name, among: candidates) { count += 1 }
    }
    return count
}
