import Foundation
import Leasehold
import LeaseholdTesting
import RedisClient
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Regression tests for bugs the fault suite found (Docs/TESTING.md, "Multi-process fault suite", "Bugs found").
@Suite(.timeLimit(.minutes(2)))
struct FaultRegressionTests {
    /// A short outage that the lease survives (renewals retry within validity) used to end
    /// the runs of a scheduled job for good: `beginRun` failed, the leadership task returned,
    /// and the member went on renewing a lease it no longer used. Found by the fault suite
    /// after `redis-restart-aof` (down ~1.2 s): job `e1` kept its leader and never ran again.
    @Test func scheduledJobRunsAgainAfterAnOutageShorterThanItsValidity() async throws {
        // lease 10s (renew every 3.3 s, step-down 8.8 s after the last renewal sent): a 2.5 s
        // outage cannot cost the lease.
        let fleet = try await DaemonFleet(
            catalog: """
                version: 1
                redis: { namespace: NAMESPACE }
                defaults: { lease: 10s }
                jobs:
                  - { name: tick, handler: log, schedule: { every: 1s } }
                """, proxied: true)
        let (redis, keys) = (fleet.redis, fleet.keys)
        let member = try fleet.start("solo")
        let proxy = try #require(try fleet.proxy("solo"))
        // Starts only: the runs stream also carries `finished` entries.
        func runCount() async throws -> Int { try await fleet.runs("tick").count }
        try await eventually("two runs", within: .seconds(30), diagnostics: { member.logTail() }) {
            try await runCount() >= 2 ? true : nil
        }
        let before = try #require(try await redis.command("GET", keys.lease("tick")).string)

        proxy.set(.drop)
        try await Task.sleep(for: .milliseconds(2500))  // the outage itself, not a synchronisation
        proxy.set(.pass)
        let runsAfterOutage = try await runCount()

        // Same leadership (nothing was lost), and the schedule goes on.
        try await eventually(
            "runs to resume after the outage", within: .seconds(15), diagnostics: { member.logTail(30) }
        ) {
            try await runCount() >= runsAfterOutage + 2 ? true : nil
        }
        #expect(try await redis.command("GET", keys.lease("tick")).string == before, "\(member.logTail(30))")
        #expect(!member.lines.contains { $0.message == "lost leadership" }, "\(member.logTail(30))")
        member.signal(SIGTERM)
        #expect(try await member.waitForExit() == 0)
    }

    /// The same for a continuous job: a failed `beginRun` must not end its leadership's work.
    @Test func continuousJobRestartsAfterAnOutageShorterThanItsValidity() async throws {
        // The command exits at once, so the runner restarts it (after 1 s backoff) and must
        // begin a new run each time; the outage hits one of those begins.
        let fleet = try await DaemonFleet(
            catalog: """
                version: 1
                redis: { namespace: NAMESPACE }
                defaults: { lease: 10s }
                jobs:
                  - { name: loop, handler: shell, schedule: continuous, config: { command: ["true"], kill_grace: 300ms } }
                """, proxied: true)
        let (redis, keys) = (fleet.redis, fleet.keys)
        let member = try fleet.start("solo")
        let proxy = try #require(try fleet.proxy("solo"))
        func runCount() async throws -> Int { try await fleet.runs("loop").count }
        try await eventually("a run", within: .seconds(30), diagnostics: { member.logTail() }) {
            try await runCount() >= 1 ? true : nil
        }
        let before = try #require(try await redis.command("GET", keys.lease("loop")).string)
        // Cut the path right after the first run, for longer than the first restart backoff
        // (1 s), so the restart's beginRun falls into the outage; 4 s + one renew interval
        // stays within the 8.8 s step-down of a 10 s lease.
        proxy.set(.drop)
        try await Task.sleep(for: .milliseconds(4000))
        proxy.set(.pass)
        let runsAfterOutage = try await runCount()
        try await eventually(
            "runs to resume after the outage", within: .seconds(40), diagnostics: { member.logTail(30) }
        ) {
            try await runCount() > runsAfterOutage ? true : nil
        }
        #expect(try await redis.command("GET", keys.lease("loop")).string == before, "\(member.logTail(30))")
        member.signal(SIGTERM)
        #expect(try await member.waitForExit() == 0)
    }
}
