import LeaseholdTesting
import RedisClient
import Testing

@testable import Leasehold

/// Leadership against a real redis-server: exclusivity, crash and graceful failover.
@Suite("Leadership against redis-server", .timeLimit(.minutes(1)))
struct LeadershipTests {
    @Test func twoMembersShareTwentyJobsWithExactlyOneHolderEach() async throws {
        let server = try await RedisServerProcess()
        let names = (0..<20).map { "job-\($0)" }
        // A 4 s lease: "nothing lost while nobody failed" must hold through the 2 s stalls a
        // machine loaded with parallel suites and builds has shown.
        let spec = jobs(names, ttl: .seconds(4))
        try await withMembers(
            ["alpha", "beta"], redis: server.configuration(), jobs: spec,
            options: { options(seed: $0 == "alpha" ? 1 : 2) }
        ) { members in
            let (alpha, beta) = (members[0], members[1])
            // Converge: every job has a lease in Redis, and exactly its owner holds a grant with
            // the same token.
            try await eventually("every job held in Redis and by its owner's grants") {
                for job in names {
                    guard let value = try await server.lease(job) else { return false }
                    for member in members {
                        let grant = member.manager.grant(for: job)
                        if value.owner == member.owner {
                            if grant?.token != value.token { return false }
                        } else if grant != nil {
                            return false
                        }
                    }
                }
                return true
            }

            // Then watch for a few renew ticks: no job is ever held by both, and a valid grant is
            // always backed by the same lease in Redis (read after the grant, so a mismatch is
            // only allowed once that grant's validity has passed).
            // At least five samples, however slow a loaded machine makes them: each reads every
            // lease in one MGET (one consistent snapshot, one connection).
            let watchUntil = ContinuousClock.now + .seconds(3)
            var samples = 0
            while ContinuousClock.now < watchUntil || samples < 5 {
                let grantsByJob = names.map { job in members.map { $0.manager.grant(for: job) } }
                let values = try await server.leases(names)
                let readAt = ContinuousClock.now
                for (job, grants) in zip(names, grantsByJob) {
                    #expect(grants.compactMap { $0 }.count <= 1, "\(job) held by both members")
                    let value = values[job]
                    for (member, grant) in zip(members, grants) {
                        guard let grant else { continue }
                        let backed = value?.owner == member.owner && value?.token == grant.token
                        #expect(
                            backed || readAt >= grant.validUntil,
                            "\(member.name) counts itself leader of \(job) (token \(grant.token)) but Redis has \(value?.description ?? "nothing")"
                        )
                    }
                }
                samples += 1
                try await Task.sleep(for: .milliseconds(100))
            }
            let heldByAlpha = alpha.manager.currentGrants.map(\.job)
            let heldByBeta = beta.manager.currentGrants.map(\.job)
            #expect(Set(heldByAlpha).isDisjoint(with: heldByBeta))
            #expect(heldByAlpha.count + heldByBeta.count == names.count)
            // Nothing was lost or changed hands while nobody failed.
            #expect(alpha.log.losses.isEmpty && beta.log.losses.isEmpty)

            await alpha.stop()
            await beta.stop()
            for job in names { #expect(try await server.lease(job) == nil, "\(job) not released on stop") }
        }
    }

    @Test func crashedLeaderIsReplacedOnlyAfterItsLeaseExpires() async throws {
        let server = try await RedisServerProcess()
        let spec = jobs(["crashy"], ttl: .seconds(2))
        try await withMember("alpha", redis: server.configuration(), jobs: spec, options: options(seed: 1)) { alpha in
            let first = try await eventually("alpha leads") { alpha.log.acquisitions.first }
            try await withMember("beta", redis: server.configuration(), jobs: spec, options: options(seed: 2)) { beta in
                try await eventually("beta talks to Redis") { beta.log.availability.contains { $0.up } }

                await alpha.crash()
                // The lease stays in Redis: nobody released it.
                let before = ContinuousClock.now
                let remaining = try await server.leasePTTL("crashy")
                let value = try await server.lease("crashy")
                #expect(value?.owner == alpha.owner && value?.token == first.grant.token)
                #expect(remaining > 0)
                // Redis executed PTTL after `before`, so the key cannot vanish before before + remaining.
                let expiresNoEarlierThan = before + .milliseconds(remaining)

                let takeover = try await eventually("beta takes over") { beta.log.acquisitions.first }
                #expect(takeover.grant.token > first.grant.token)
                #expect(takeover.takeover == .expiredTakeover)
                // Not before the old lease expired (1 % rate tolerance), and not much after (bounded).
                let tolerance = Duration.milliseconds(Int64(Double(remaining) * 0.01) + 5)
                #expect(
                    takeover.at >= expiresNoEarlierThan - tolerance,
                    "took over \((expiresNoEarlierThan - takeover.at).ms) ms before the old lease expired")
                #expect(
                    takeover.at <= expiresNoEarlierThan + .seconds(2), "failover took \((takeover.at - before).ms) ms")

                let event = try await server.lastLeaseEvent("crashy")
                #expect(event["type"] == "expired_takeover")
                #expect(event["previous"] == "\(alpha.owner):\(first.grant.token)")
                #expect(event["token"] == String(takeover.grant.token))
            }
        }
    }

    @Test func gracefulShutdownHandsOverAtOnce() async throws {
        let server = try await RedisServerProcess()
        // A TTL far above the bound: a takeover within 500 ms can only come from the release
        // and the released channel, never from expiry.
        let spec = jobs(["graceful"], ttl: .seconds(10))
        try await withMember("alpha", redis: server.configuration(), jobs: spec, options: options(seed: 1)) { alpha in
            let first = try await eventually("alpha leads") { alpha.log.acquisitions.first }
            // Alpha's first renew has completed once it reports members; its next is ~3 s away.
            try await eventually("alpha's first renew") {
                alpha.log.all.contains { if case .membersChanged = $0.event { true } else { false } }
            }
            let scriptCalls = { () async throws -> Int in
                let stats = try await server.commandStats()
                return stats["evalsha", default: 0] + stats["eval", default: 0]
            }
            let callsBeforeBeta = try await scriptCalls()
            try await withMember("beta", redis: server.configuration(), jobs: spec, options: options(seed: 2)) { beta in
                try await eventually("beta talks to Redis") { beta.log.availability.contains { $0.up } }
                // Beta's first poll sends a renew and an acquire; once both ran, the acquire found the
                // lease held and beta waits for its expiry (~10 s) unless told otherwise.
                try await eventually("beta's first acquire ran") { try await scriptCalls() >= callsBeforeBeta + 2 }
                try await eventually("both members subscribed to the released channel") {
                    let reply = try await server.command("PUBSUB", "NUMSUB", keys.releasedChannel)
                    return reply.array?.last?.integer == 2
                }
                #expect(beta.log.acquisitions.isEmpty)

                let stopAt = ContinuousClock.now
                await alpha.stop()
                let released = alpha.log.all.compactMap { entry -> ContinuousClock.Instant? in
                    if case .released(let job, let token, _, let confirmed) = entry.event, job == "graceful",
                        token == first.grant.token, confirmed
                    {
                        return entry.at
                    }
                    return nil
                }.first
                #expect(released != nil, "alpha did not confirm its release")

                let takeover = try await eventually("beta takes over", within: .seconds(5)) {
                    beta.log.acquisitions.first
                }
                #expect(takeover.at - stopAt <= .milliseconds(500), "handoff took \((takeover.at - stopAt).ms) ms")
                #expect(takeover.grant.token > first.grant.token)
                #expect(takeover.takeover == .acquired)
                let event = try await server.lastLeaseEvent("graceful")
                #expect(event["type"] == "acquired")
                #expect(event["gap_ms"].flatMap { Int($0) } != nil)
            }
        }
    }

    @Test func releasingOneJobLetsSomeMemberLeadItAgainQuickly() async throws {
        let server = try await RedisServerProcess()
        let spec = jobs(["solo"], ttl: .seconds(10))
        try await withMembers(
            ["alpha", "beta"], redis: server.configuration(), jobs: spec,
            options: { options(seed: $0 == "alpha" ? 1 : 2) }
        ) { members in
            let (leader, first) = try await eventually("someone leads") {
                members.lazy.compactMap { member in member.log.acquisitions.first.map { (member, $0) } }.first
            }
            try await eventually("both subscribed") {
                try await server.command("PUBSUB", "NUMSUB", keys.releasedChannel).array?.last?.integer == 2
            }
            let releaseAt = ContinuousClock.now
            leader.manager.release(job: "solo", token: first.grant.token)
            let next = try await eventually("a new leadership", within: .seconds(5)) {
                members.lazy.compactMap { member in
                    member.log.acquisitions.first { $0.grant.token != first.grant.token }.map { (member, $0) }
                }.first
            }
            #expect(next.1.at - releaseAt <= .milliseconds(500), "re-lead took \((next.1.at - releaseAt).ms) ms")
            #expect(next.1.grant.token > first.grant.token)
            #expect(try await server.lease("solo")?.token == next.1.grant.token)
        }
    }
}
