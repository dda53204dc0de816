import LeaseholdTesting
import RedisClient
import Testing

@testable import Leasehold

/// A job's key of the wrong type (written by another tool) fails that job alone: Redis keeps a
/// script's earlier writes when a command raises, so without per-job error handling the batch
/// acquire left leases in this member's name that it believed it never got, and every later
/// batch and every renewal failed the same way.
@Suite("Keys of the wrong type against redis-server", .timeLimit(.minutes(1)))
struct WrongTypeKeyTests {
    @Test func aWrongTypeKeyFailsItsJobAloneAndLeavesNoLeaseBehind() async throws {
        let server = try await RedisServerProcess()
        let keys = LeaseKeys()
        // j2's events key is a list: the acquire script's XADD raises after it set the lease.
        _ = try await server.command("LPUSH", keys.events("j2"), "written by another tool")
        let names = ["j1", "j2", "j3"]
        try await withMember("alpha", redis: server.configuration(), jobs: jobs(names, ttl: .seconds(4))) { alpha in
            try await eventually("j1 and j3 led") {
                Set(alpha.log.acquisitions.map(\.grant.job)) == ["j1", "j3"]
            }
            #expect(try await server.lease("j1")?.owner == alpha.owner)
            #expect(try await server.lease("j3")?.owner == alpha.owner)
            // No lease of j2 in alpha's name that alpha does not know about, then or later.
            for _ in 0..<5 {
                #expect(try await server.command("GET", keys.lease("j2")).isNull)
                try await Task.sleep(for: .milliseconds(300))
            }
            #expect(!alpha.log.acquisitions.contains { $0.grant.job == "j2" })

            // A lost lease whose events key is broken must not fail the renewal of the others.
            let j3 = try #require(try await server.lease("j3"))
            _ = try await server.command("DEL", keys.events("j3"))
            _ = try await server.command("LPUSH", keys.events("j3"), "broken")
            _ = try await server.command("SET", keys.lease("j3"), "someone@else:\(j3.token + 1)", "PX", "60000")
            try await eventually("alpha loses j3") { alpha.log.losses.contains { $0.job == "j3" } }
            let renewedAt = ContinuousClock.now
            // More than a TTL: j1 only stays led if renewed. A 4 s lease tolerates the 2 s stalls a
            // machine loaded with parallel suites and builds has shown.
            try await Task.sleep(for: .seconds(5))
            #expect(
                !alpha.log.losses.contains { $0.job == "j1" }, "j1 was lost after \(ContinuousClock.now - renewedAt)")
            #expect(try await server.lease("j1")?.owner == alpha.owner)

            // Once the key is fixed, j2 is acquired.
            _ = try await server.command("DEL", keys.events("j2"))
            try await eventually("j2 led once its key is fixed", within: .seconds(15)) {
                alpha.log.acquisitions.contains { $0.grant.job == "j2" }
            }
        }
    }
}
