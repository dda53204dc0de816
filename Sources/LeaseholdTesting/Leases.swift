import LeaseholdElection

extension RedisServerProcess {
    /// The lease of `job` in Redis, parsed by the library's own parser; nil if there is none.
    public func lease(_ job: String, keys: LeaseKeys = LeaseKeys()) async throws -> LeaseValue? {
        guard let text = try await command("GET", keys.lease(job)).string else { return nil }
        return LeaseValue(parsing: text)
    }

    /// The leases of `jobs` read in one MGET, so they are one consistent snapshot; jobs
    /// without a lease are missing from the result.
    public func leases(_ jobs: [String], keys: LeaseKeys = LeaseKeys()) async throws -> [String: LeaseValue] {
        let reply = try await command(["MGET"] + jobs.map(keys.lease))
        var leases: [String: LeaseValue] = [:]
        for (job, value) in zip(jobs, reply.array ?? []) {
            if let text = value.string, let lease = LeaseValue(parsing: text) { leases[job] = lease }
        }
        return leases
    }
}
