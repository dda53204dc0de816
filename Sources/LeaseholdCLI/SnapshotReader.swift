import Leasehold
import RedisClient

/// Reads a `ClusterSnapshot` and job histories from Redis with pipelines: one round trip for
/// the time, the job set and the member zset, then one pipeline per chunk of jobs (five
/// commands per job) that also carries the member hashes, and one for the job sets of the
/// catalog digests live members advertise (only when some do). 10,000 jobs take five or six
/// round trips.
package struct SnapshotReader: Sendable {
    /// Jobs per pipeline.
    package static let jobsPerPipeline = 2_500
    /// State hash fields read per job, in this order.
    static let stateFields = [
        "holder", "holder_member", "acquired_at", "released_at", "lease_ms", "last_run_started",
        "last_run_finished", "last_result", "last_duration_ms", "running", "last_run_token", "next_run_at",
        "paused", "paused_reason", "paused_by", "paused_at", "last_success_at", "trigger_requested",
    ]

    /// The connection used.
    package let connection: RedisConnection
    /// The key schema.
    package let keys: LeaseKeys
    /// The endpoint (for error messages).
    package let endpoint: RedisEndpoint

    /// Creates a reader.
    package init(connection: RedisConnection, keys: LeaseKeys) {
        self.connection = connection
        self.keys = keys
        self.endpoint = connection.configuration.endpoint
    }

    func pipeline(_ commands: [[String]], tolerating tolerated: Bool = false) async throws(CLIFailure) -> [RedisReply] {
        let replies: [RedisReply]
        do {
            replies = try await connection.pipeline(commands)
        } catch {
            throw CLIFailure.redis(error, endpoint: endpoint)
        }
        if !tolerated, let index = replies.firstIndex(where: \.isError) {
            throw CLIFailure.runtime(
                "Redis error for \(commands[index].first ?? "?") \(commands[index].dropFirst().first ?? ""): \(replies[index].errorMessage ?? "")"
            )
        }
        return replies
    }

    func evaluate(_ script: RedisScript, keys: [String], arguments: [String]) async throws(CLIFailure) -> RedisReply {
        do {
            return try await connection.evaluate(script, keys: keys, arguments: arguments)
        } catch {
            throw CLIFailure.redis(error, endpoint: endpoint)
        }
    }

    /// Redis `TIME` in ms from a TIME reply.
    static func timeMs(_ reply: RedisReply) -> Int64? {
        guard let parts = reply.array, parts.count == 2, let s = parts[0].integer, let us = parts[1].integer else {
            return nil
        }
        return s * 1000 + us / 1000
    }

    /// Reads everything `status`/`members` show. `catalogJobs` are listed even if Redis has
    /// never seen them.
    package func snapshot(catalogJobs: [String]) async throws(CLIFailure) -> ClusterSnapshot {
        let first = try await pipeline(
            [
                ["TIME"], ["SMEMBERS", keys.jobs], ["ZRANGE", keys.members, "0", "-1", "WITHSCORES"],
                ["HGET", keys.epoch, "quarantine_until"],
            ], tolerating: true)
        // Only the epoch may fail (a key of the wrong type must not hide the status).
        if let index = first.prefix(3).firstIndex(where: \.isError) {
            throw CLIFailure.runtime(
                "Redis error for \(["TIME", "SMEMBERS", "ZRANGE"][index]): \(first[index].errorMessage ?? "")")
        }
        guard let nowMs = Self.timeMs(first[0]) else {
            throw CLIFailure.runtime("unexpected TIME reply from \(endpoint)")
        }
        let redisJobs = Set((first[1].array ?? []).compactMap(\.string))
        let catalogSet = Set(catalogJobs)
        let names = catalogSet.union(redisJobs).sorted()

        var memberScores: [(name: String, expiry: Int64)] = []
        let flat = first[2].array ?? []
        var index = 0
        while index + 1 < flat.count {
            if let name = flat[index].string, let score = flat[index + 1].string.flatMap(Double.init) {
                memberScores.append((name, Int64(score)))
            }
            index += 2
        }

        // Member hashes ride along with the first chunk of jobs.
        var memberHashes: [[String: String]] = []
        var jobs: [JobStatus] = []
        jobs.reserveCapacity(names.count)
        var rawStates: [(lease: String?, pttl: Int64, state: [String?], problem: String?)] = []
        rawStates.reserveCapacity(names.count)
        var start = 0
        repeat {
            let chunk = names[start..<min(start + Self.jobsPerPipeline, names.count)]
            var commands: [[String]] = []
            commands.reserveCapacity(chunk.count * 5 + memberScores.count)
            if start == 0 {
                for member in memberScores { commands.append(["HGETALL", keys.member(member.name)]) }
            }
            for job in chunk {
                commands.append(["GET", keys.lease(job)])
                commands.append(["PTTL", keys.lease(job)])
                commands.append(["HMGET", keys.state(job)] + Self.stateFields)
                // A key of the wrong type (written by another tool) blocks every acquire of
                // the job: name it instead of failing the whole status.
                commands.append(["TYPE", keys.fence(job)])
                commands.append(["TYPE", keys.events(job)])
            }
            let replies = try await pipeline(commands, tolerating: true)
            var cursor = 0
            if start == 0 {
                for _ in memberScores {
                    memberHashes.append(Self.hash(replies[cursor]))
                    cursor += 1
                }
            }
            for job in chunk {
                var problems: [String] = []
                // `expected` set: the reply is TYPE's; otherwise only an error reply is a problem.
                func check(_ reply: RedisReply, _ key: String, type expected: String? = nil) {
                    if let message = reply.errorMessage {
                        problems.append("\(key): \(message)")
                    } else if let expected, let type = reply.string, type != "none", type != expected {
                        problems.append("\(key) holds a \(type), expected a \(expected)")
                    }
                }
                check(replies[cursor], keys.lease(job))
                check(replies[cursor + 2], keys.state(job))
                check(replies[cursor + 3], keys.fence(job), type: "string")
                check(replies[cursor + 4], keys.events(job), type: "stream")
                let lease = replies[cursor].isError ? nil : replies[cursor].string
                let pttl = replies[cursor + 1].integer ?? -2
                let state = (replies[cursor + 2].array ?? []).map { $0.isNull ? nil : $0.string }
                rawStates.append((lease, pttl, state, problems.isEmpty ? nil : problems.joined(separator: "; ")))
                cursor += 5
            }
            start += Self.jobsPerPipeline
        } while start < names.count

        var members: [MemberStatus] = []
        for (offset, entry) in memberScores.enumerated() {
            let hash = memberHashes[offset]
            let leftAt = hash["left_at"].flatMap { Int64($0) }
            members.append(
                MemberStatus(
                    name: entry.name, instance: hash["incarnation"], host: hash["host"],
                    pid: hash["pid"].flatMap { Int64($0) },
                    weight: hash["weight"].flatMap { Double($0) } ?? 1, version: hash["version"],
                    startedAtMs: hash["started_at"].flatMap(Self.parseMillis),
                    lastTickMs: hash["tick_at"].flatMap { Int64($0) },
                    heartbeatExpiresAtMs: entry.expiry, live: entry.expiry >= nowMs && leftAt == nil, leftAtMs: leftAt,
                    catalog: hash["catalog"].flatMap { $0.isEmpty ? nil : $0 }, jobs: hash["jobs"].flatMap { Int($0) }))
        }
        let catalogs = try await catalogAdverts(of: members)
        let live = members.filter(\.live).map { RendezvousMember(name: $0.name, weight: $0.weight) }
        // Per live member, the jobs it carries; nil: unknown (an older version, or a digest
        // whose set cannot be read), which counts as carrying every job.
        let jobSets = Dictionary(catalogs.map { ($0.digest, $0.jobs) }, uniquingKeysWith: { first, _ in first })
        let carriers: [(name: String, jobs: Set<String>?)] = members.filter(\.live).sorted { $0.name < $1.name }
            .map { member in (member.name, member.catalog.flatMap { jobSets[$0] ?? nil }) }
        let memberByName = Dictionary(members.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })

        var led: [String: Int] = [:]
        for (job, raw) in zip(names, rawStates) {
            var status = JobStatus(name: job, inCatalog: catalogSet.contains(job), inRedis: redisJobs.contains(job))
            let field = { (name: String) -> String? in
                guard let i = Self.stateFields.firstIndex(of: name), i < raw.state.count else { return nil }
                return raw.state[i].flatMap { $0.isEmpty ? nil : $0 }
            }
            if let text = raw.lease, let value = LeaseValue(parsing: text) {
                status.leader = LeaderInfo(
                    member: value.owner.member, instance: value.owner.incarnation, token: value.token,
                    expiresInMs: max(raw.pttl, 0))
                led[value.owner.member, default: 0] += 1
            } else {
                status.leaderless = Self.leaderless(
                    holder: field("holder"), releasedAt: field("released_at").flatMap { Int64($0) },
                    acquiredAt: field("acquired_at").flatMap { Int64($0) },
                    leaseMs: field("lease_ms").flatMap { Int64($0) },
                    holderMember: field("holder_member").flatMap { memberByName[$0] }, nowMs: nowMs)
            }
            if let started = field("last_run_started").flatMap({ Int64($0) }) {
                var finished = field("last_run_finished").flatMap { Int64($0) }
                let running = field("running") == "1"
                // A finish older than the start belongs to the run before.
                if let f = finished, f < started { finished = nil }
                status.lastRun = RunInfo(
                    startedAtMs: started, finishedAtMs: finished,
                    durationMs: finished == nil ? nil : field("last_duration_ms").flatMap { Int64($0) },
                    result: finished == nil ? nil : field("last_result"), running: running,
                    token: field("last_run_token").flatMap { UInt64($0) })
            }
            status.nextRunAtMs = field("next_run_at").flatMap { Int64($0) }
            status.paused = field("paused") == "1"
            if status.paused {
                status.pausedReason = field("paused_reason")
                status.pausedBy = field("paused_by")
                status.pausedAtMs = field("paused_at").flatMap { Int64($0) }
            }
            status.lastSuccessAtMs = field("last_success_at").flatMap { Int64($0) }
            status.triggerRequestedAtMs = field("trigger_requested").flatMap { Int64($0) }
            status.problem = raw.problem
            status.carriedBy = carriers.filter { $0.jobs?.contains(job) ?? true }.map(\.name)
            status.notCarried = !carriers.isEmpty && status.carriedBy.isEmpty
            // As the members decide it: rendezvous over the live members that carry the job.
            let carrying = Set(status.carriedBy)
            status.preferred = Rendezvous.preferred(job: job, among: live.filter { carrying.contains($0.name) })
            jobs.append(status)
        }
        for index in members.indices { members[index].jobsLed = led[members[index].name] ?? 0 }
        var snapshot = ClusterSnapshot(
            nowMs: nowMs, namespace: keys.namespace, jobs: jobs, members: members.sorted { $0.name < $1.name },
            catalogs: catalogs)
        if let until = first[3].integer, until > nowMs { snapshot.quarantineUntilMs = until }
        return snapshot
    }

    /// The digests live members advertise and the job set under each: one extra round trip
    /// (`SMEMBERS` + `TYPE` per digest), only when some live member advertises one.
    func catalogAdverts(of members: [MemberStatus]) async throws(CLIFailure) -> [CatalogAdvert] {
        var byDigest: [String: [String]] = [:]
        for member in members where member.live {
            if let digest = member.catalog { byDigest[digest, default: []].append(member.name) }
        }
        let digests = byDigest.keys.sorted()
        if digests.isEmpty { return [] }
        let replies = try await pipeline(
            digests.flatMap { [["SMEMBERS", keys.catalog($0)], ["TYPE", keys.catalog($0)]] }, tolerating: true)
        return digests.enumerated().map { offset, digest in
            let members = byDigest[digest, default: []].sorted()
            let key = keys.catalog(digest)
            let (names, type) = (replies[offset * 2], replies[offset * 2 + 1])
            // An unreadable set says nothing about what its members carry: they count as
            // carrying everything, so nothing is pruned on a guess.
            if type.string == "none" {
                return CatalogAdvert(digest: digest, members: members, jobs: nil, problem: "\(key) does not exist")
            }
            if let message = names.errorMessage ?? type.errorMessage {
                return CatalogAdvert(digest: digest, members: members, jobs: nil, problem: "\(key): \(message)")
            }
            let jobs = Set((names.array ?? []).compactMap(\.string))
            if jobs.isEmpty {
                return CatalogAdvert(digest: digest, members: members, jobs: nil, problem: "\(key) is empty")
            }
            return CatalogAdvert(digest: digest, members: members, jobs: jobs)
        }
    }

    /// The leaderless estimate for a job whose lease key does not exist.
    ///
    /// - Released (state `holder` empty): exactly `released_at`.
    /// - Expired (state `holder` still set): the holder's lease was last extended by one of its
    ///   heartbeat ticks, so it expired at most `lease_ms` after the holder's last tick:
    ///   `tick_at + lease_ms` when the member hash still belongs to the holder's incarnation.
    ///   Otherwise `acquired_at + lease_ms`, the earliest possible expiry.
    /// The estimate is clamped to `now`; nil for a job that never had a leader.
    static func leaderless(
        holder: String?, releasedAt: Int64?, acquiredAt: Int64?, leaseMs: Int64?, holderMember: MemberStatus?,
        nowMs: Int64
    ) -> Leaderless? {
        if holder == nil {
            guard let releasedAt else { return nil }
            return Leaderless(sinceMs: min(releasedAt, nowMs), source: .released)
        }
        let value = holder.flatMap { LeaseValue(parsing: $0) }
        let ttl = leaseMs ?? 0
        if let value, let member = holderMember, member.instance == value.owner.incarnation,
            let tick = member.lastTickMs,
            let acquiredAt, tick >= acquiredAt
        {
            return Leaderless(sinceMs: min(tick + ttl, nowMs), source: .expiredEstimate)
        }
        guard let acquiredAt else { return nil }
        return Leaderless(sinceMs: min(acquiredAt + ttl, nowMs), source: .acquiredEstimate)
    }

    /// A `started_at` as ms: integers below 10^11 are taken as seconds.
    static func parseMillis(_ text: String) -> Int64? {
        guard let value = Int64(text) ?? Double(text).map({ Int64($0) }) else { return nil }
        return value < 100_000_000_000 ? value * 1000 : value
    }

    static func hash(_ reply: RedisReply) -> [String: String] {
        let flat = reply.array ?? []
        var out: [String: String] = [:]
        var index = 0
        while index + 1 < flat.count {
            if let key = flat[index].string, let value = flat[index + 1].string { out[key] = value }
            index += 2
        }
        return out
    }

    /// The last `limit` events of a job, oldest first (`XREVRANGE ... COUNT limit`, reversed).
    package func history(job: String, limit: Int) async throws(CLIFailure) -> (history: JobHistory, known: Bool) {
        let replies = try await pipeline([
            ["TIME"], ["XREVRANGE", keys.events(job), "+", "-", "COUNT", String(limit)], ["SISMEMBER", keys.jobs, job],
        ])
        guard let nowMs = Self.timeMs(replies[0]) else {
            throw CLIFailure.runtime("unexpected TIME reply from \(endpoint)")
        }
        var events: [HistoryEvent] = []
        for entry in replies[1].array ?? [] {
            guard let parts = entry.array, parts.count == 2, let id = parts[0].string else { continue }
            let fields = Self.hash(parts[1])
            let idMs = Int64(id.split(separator: "-").first ?? "") ?? 0
            let nonEmpty = { (key: String) -> String? in fields[key].flatMap { $0.isEmpty ? nil : $0 } }
            events.append(
                HistoryEvent(
                    id: id, type: fields["type"] ?? "?", member: nonEmpty("member"), owner: nonEmpty("owner"),
                    token: nonEmpty("token").flatMap { UInt64($0) }, atMs: nonEmpty("at").flatMap { Int64($0) } ?? idMs,
                    gapMs: nonEmpty("gap_ms").flatMap { Int64($0) }, previous: nonEmpty("previous"),
                    holder: fields["holder"],
                    by: nonEmpty("by"), reason: nonEmpty("reason"), forced: fields["forced"].map { $0 == "1" },
                    slotMs: nonEmpty("slot").flatMap { Int64($0) },
                    deadlineMs: nonEmpty("deadline_ms").flatMap { Int64($0) }))
        }
        let known = replies[2].integer == 1 || !events.isEmpty
        return (JobHistory(job: job, nowMs: nowMs, events: events.reversed()), known)
    }
}
