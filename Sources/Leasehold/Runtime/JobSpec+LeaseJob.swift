import LeaseholdElection

extension JobSpec {
    /// The lease rules of this catalog job, as the election sees them: the daemon, the bench
    /// and user-built members all derive them here, so they cannot drift apart.
    public var leaseJob: LeaseJob {
        let timing = LeaseTiming(ttl: lease, renewEvery: renewEvery, drift: drift)
        let leasePlacement: LeasePlacement
        switch placement {
        case .any: leasePlacement = .any
        case .spread: leasePlacement = .spread(standbyDelay: standbyDelay ?? renewEvery, stability: lease)
        }
        return LeaseJob(name: name, timing: timing, placement: leasePlacement)
    }
}
