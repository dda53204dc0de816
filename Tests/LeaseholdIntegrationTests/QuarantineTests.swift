import LeaseholdTesting
import RedisClient
import Testing

@testable import Leasehold

/// The restart quarantine against redis-server: the namespace epoch is written once; a member
/// that saw an epoch and finds it lost or changed makes every member wait one lease TTL before
/// any grant, because a leader of the lost data may still count itself valid that long.
@Suite("Restart quarantine against redis-server", .timeLimit(.minutes(1)))
struct QuarantineScriptTests {
    private struct Caller {
        let connection: RedisConnection
        let codec: LeaseScriptCodec

        func acquire(_ job: String, seen: String, quarantineMs: Int64) async throws -> AcquireReply {
            let call = codec.acquireCall(
                [AcquireRequest(job: job, ttlMs: 5000)], epoch: EpochArguments(seen: seen, quarantineMs: quarantineMs))
            let reply = try await connection.evaluate(call.script, keys: call.keys, arguments: call.arguments)
            return try codec.decodeAcquire(reply, count: 1)
        }
    }

    @Test func aLostEpochQuarantinesTheNamespaceForEveryMember() async throws {
        let server = try await RedisServerProcess()
        let keys = LeaseKeys(namespace: "q")
        let connection = RedisConnection(configuration: server.configuration())
        let a = Caller(connection: connection, codec: LeaseScriptCodec(keys: keys, owner: OwnerID(member: "a")))
        let b = Caller(connection: connection, codec: LeaseScriptCodec(keys: keys, owner: OwnerID(member: "b")))

        // The namespace's first start: an epoch without a quarantine, the lease granted.
        let first = try await a.acquire("j1", seen: "", quarantineMs: 8000)
        let epoch1 = try #require(first.epoch)
        #expect(epoch1.quarantineUntilMs == 0)
        guard case .acquired = first.outcomes[0] else {
            Issue.record("first start must grant at once: \(first.outcomes)")
            return
        }
        #expect(try await a.acquire("j2", seen: epoch1.id, quarantineMs: 8000).epoch == epoch1)

        // Redis loses everything. A member that never saw an epoch cannot tell a loss from a
        // first start: it writes a new epoch without a quarantine and gets its lease.
        _ = try await server.command("FLUSHALL")
        let fresh = try await b.acquire("j3", seen: "", quarantineMs: 5000)
        let epoch2 = try #require(fresh.epoch)
        #expect(epoch2.id != epoch1.id)
        #expect(epoch2.quarantineUntilMs == 0)

        // a saw epoch 1: it extends the quarantine to the new epoch's creation plus its longest
        // TTL, and a free job is not granted.
        let seenByA = try await a.acquire("j4", seen: epoch1.id, quarantineMs: 8000)
        let quarantined = try #require(seenByA.epoch)
        #expect(quarantined.id == epoch2.id)
        #expect(quarantined.quarantineUntilMs > seenByA.redisNowMs)
        #expect(quarantined.quarantineUntilMs <= seenByA.redisNowMs + 8000)
        guard case .held(let holder, let wait) = seenByA.outcomes[0], holder.isEmpty, wait > 0, wait <= 8000 else {
            Issue.record("a free job must wait out the quarantine: \(seenByA.outcomes)")
            return
        }
        #expect(try await server.command("EXISTS", keys.lease("j4")).integer == 0)

        // b obeys it too, though b itself saw no loss; its own lease (granted before the
        // quarantine began) stays its own.
        let seenByB = try await b.acquire("j5", seen: epoch2.id, quarantineMs: 5000)
        guard case .held("", _) = seenByB.outcomes[0] else {
            Issue.record("every member must obey the quarantine: \(seenByB.outcomes)")
            return
        }
        guard case .alreadyHeld = try await b.acquire("j3", seen: epoch2.id, quarantineMs: 5000).outcomes[0] else {
            Issue.record("a lease held in the new epoch must stay its holder's")
            return
        }

        // A loss seen by a member that saw the epoch: the quarantine starts from now.
        _ = try await server.command("FLUSHALL")
        let again = try await a.acquire("j6", seen: epoch2.id, quarantineMs: 8000)
        let epoch3 = try #require(again.epoch)
        #expect(epoch3.id != epoch2.id)
        #expect(epoch3.quarantineUntilMs == again.redisNowMs + 8000)
        #expect(try await server.command("HGET", keys.epoch, "previous").string == epoch2.id)
        await connection.close()
    }

    @Test func membersOfTheOlderKeyLayoutHoldANewMemberBack() async throws {
        let server = try await RedisServerProcess()
        let keys = LeaseKeys(namespace: "old")
        // A member of the layout before the namespace hash tag, live for another minute.
        let time = try await server.command("TIME").array ?? []
        let nowMs = (Int64(time.first?.string ?? "0") ?? 0) * 1000
        _ = try await server.command("ZADD", keys.legacyMembers, String(nowMs + 60_000), "veteran")
        let options = TestMember.Options(keys: keys)
        try await withMember(
            "newcomer", redis: server.configuration(), jobs: jobs(["j"], ttl: .seconds(2)), options: options
        ) { member in
            try await Task.sleep(for: .seconds(2))
            #expect(member.log.acquisitions.isEmpty, "acquired while a member of the older layout was live")
            #expect(try await server.command("EXISTS", keys.lease("j")).integer == 0)
            _ = try await server.command("ZREM", keys.legacyMembers, "veteran")
            try await eventually("the job led once the old member is gone", within: .seconds(10)) {
                !member.log.acquisitions.isEmpty
            }
        }
    }
}
