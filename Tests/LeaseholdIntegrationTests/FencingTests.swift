import LeaseholdTesting
import RedisClient
import Testing

@testable import Leasehold

/// Writes guarded by the lease: a member that lost the lease cannot write any more.
@Suite("Fenced writes against redis-server", .timeLimit(.minutes(1)))
struct FencingTests {
    @Test func fencedRedisRefusesWritesOnceTheLeaseMovedToAnotherMember() async throws {
        let server = try await RedisServerProcess()
        let spec = jobs(["fenced"], ttl: .seconds(2))
        try await withMember("alpha", redis: server.configuration(), jobs: spec, options: options(seed: 1)) { alpha in
            let first = try await eventually("alpha leads") { alpha.log.acquisitions.first }
            let connection = RedisConnection(configuration: server.configuration())
            let alphaWrites = FencedRedis(
                connection: connection, keys: keys, job: "fenced", owner: alpha.owner, token: first.grant.token)
            #expect(try await alphaWrites.set("out", to: "alpha-1"))
            #expect(try await alphaWrites.hashSet("out-hash", fields: ["by": "alpha"]))

            // Alpha crashes (no release); beta takes over once the lease expired.
            try await withMember("beta", redis: server.configuration(), jobs: spec, options: options(seed: 2)) { beta in
                await alpha.crash()
                let second = try await eventually("beta takes over") { beta.log.acquisitions.first }
                #expect(second.grant.token > first.grant.token)

                // Alpha's writer (a handler that outlived its process's leadership) is refused.
                #expect(try await alphaWrites.set("out", to: "alpha-stale") == false)
                #expect(try await alphaWrites.hashSet("out-hash", fields: ["by": "alpha-stale"]) == false)
                #expect(try await server.command("GET", "out").string == "alpha-1")
                #expect(try await server.command("HGET", "out-hash", "by").string == "alpha")

                let betaWrites = FencedRedis(
                    connection: connection, keys: keys, job: "fenced", owner: beta.owner, token: second.grant.token)
                #expect(try await betaWrites.set("out", to: "beta-1"))
                #expect(try await server.command("GET", "out").string == "beta-1")
                // A writer with the right owner but an older token is refused too.
                let oldToken = FencedRedis(
                    connection: connection, keys: keys, job: "fenced", owner: beta.owner, token: first.grant.token)
                #expect(try await oldToken.set("out", to: "old-token") == false)
                await beta.stop()
                // Released: nobody may write.
                #expect(try await betaWrites.set("out", to: "beta-after-release") == false)
                #expect(try await server.command("GET", "out").string == "beta-1")
                await connection.close()
            }
        }
    }

    /// The downstream-fencing script from Docs/PROTOCOL.md: a store that remembers the highest
    /// token it accepted and refuses anything lower, whoever holds the lease right now.
    static let downstreamFencedWrite = RedisScript(
        #"""
        local seen = tonumber(redis.call('HGET', KEYS[1], 'token') or '0')
        local token = tonumber(ARGV[1])
        if token < seen then
          return {0, string.format('%d', seen)}
        end
        redis.call('HSET', KEYS[1], 'token', ARGV[1], 'value', ARGV[2])
        return {1, ARGV[1]}
        """#)

    @Test func downstreamStoreRejectsALowerTokenThanItHasSeen() async throws {
        let server = try await RedisServerProcess()
        let spec = jobs(["down"], ttl: .seconds(2))
        let first = try await withMember("alpha", redis: server.configuration(), jobs: spec, options: options(seed: 1))
        { alpha in
            try await eventually("alpha leads") { alpha.log.acquisitions.first }
        }
        let second = try await withMember("beta", redis: server.configuration(), jobs: spec, options: options(seed: 2))
        { beta in
            try await eventually("beta leads") { beta.log.acquisitions.first }
        }
        #expect(second.grant.token > first.grant.token)

        let connection = RedisConnection(configuration: server.configuration())
        func write(_ token: UInt64, _ value: String) async throws -> Bool {
            let reply = try await connection.evaluate(
                Self.downstreamFencedWrite, keys: ["store:{down}"], arguments: [String(token), value])
            return reply.array?.first?.integer == 1
        }
        #expect(try await write(second.grant.token, "from beta"))
        // Alpha wakes from a pause and writes with its old token: refused.
        #expect(try await write(first.grant.token, "stale from alpha") == false)
        #expect(try await server.command("HGET", "store:{down}", "value").string == "from beta")
        // Tokens are ~1.7e15 (µs): exact in Lua doubles and printed in full.
        #expect(try await server.command("HGET", "store:{down}", "token").string == String(second.grant.token))
        // Same token again (a retry of the same leadership) is accepted.
        #expect(try await write(second.grant.token, "retry from beta"))
        await connection.close()
    }
}
