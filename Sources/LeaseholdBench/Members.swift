import Leasehold
import LeaseholdTesting
import Logging
import RedisClient

/// The lease rules the daemon derives from a catalog job (`JobSpec.leaseJob`): spread
/// placement, standby delay = renew interval, stability window = TTL (unless given).
func benchJobs(count: Int, ttl: Duration, spread: Bool = true, stability: Duration? = nil) -> [LeaseJob] {
    (0..<count).map { index in
        var job = JobSpec(
            name: "job-\(index)", handler: "log", schedule: .continuous, lease: ttl, placement: spread ? .spread : .any
        ).leaseJob
        if let stability, case .spread(let delay, _) = job.placement {
            job.placement = .spread(standbyDelay: delay, stability: stability)
        }
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
func holders(_ members: [TestMember]) -> [String: String] {
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
        if holders[job.name] == nil || holders[job.name] != Rendezvous.preferred(job: job.name, among: candidates) {
            count += 1
        }
    }
    return count
}
