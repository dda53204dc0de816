import LeaseholdTesting
import RedisClient
import Testing

@testable import Leasehold

/// `adoptSchedule` and `beginRun` against a real redis-server: both are fenced by the lease
/// value, and both refuse to act on a stale view of the stored schedule.
@Suite(.timeLimit(.minutes(1)))
struct ScheduleScriptTests {
    static let keys = LeaseKeys(namespace: "sched-scripts")
    static let job = "job"
    static let holder = "m1@0000abcd:1000"

    /// A server where `holder` holds the job's lease.
    static func server() async throws -> (RedisServerProcess, RedisConnection) {
        let server = try await RedisServerProcess()
        _ = try await server.command("SET", keys.lease(job), holder)
        return (server, RedisConnection(configuration: server.configuration()))
    }

    static func adopt(
        _ redis: RedisConnection, lease: String = holder, expected: String, new: String, since: Int64, next: Int64
    ) async throws -> Int64? {
        try await redis.evaluate(
            LeaseScripts.adoptSchedule, keys: [keys.lease(job), keys.state(job)],
            arguments: [lease, expected, new, String(since), String(next)]
        ).integer
    }

    static func begin(
        _ redis: RedisConnection, lease: String = holder, slot: Int64, next: Int64, schedule: String
    ) async throws -> [String] {
        let reply = try await redis.evaluate(
            LeaseScripts.beginRun, keys: [keys.lease(job), keys.state(job), keys.runs(job)],
            arguments: [lease, String(slot), String(next), "m1", "1000", "1000", schedule])
        return (reply.array ?? []).map { $0.string ?? $0.integer.map(String.init) ?? "nil" }
    }

    static func state(_ redis: RedisConnection) async throws -> StoredSchedule {
        let reply = try await redis.send(["HMGET", keys.state(job)] + StoredSchedule.fields)
        return StoredSchedule(fields: (reply.array ?? []).map(\.string))
    }

    @Test func adoptScheduleWritesOnlyForTheHolderOverTheExpectedSchedule() async throws {
        let (server, redis) = try await Self.server()
        defer { withExtendedLifetime(server) {} }
        // Wrong token: nothing written.
        #expect(
            try await Self.adopt(redis, lease: "m1@0000abcd:999", expected: "", new: "every:5000", since: 7, next: 100)
                == 0)
        #expect(try await Self.state(redis) == StoredSchedule())
        // Nothing stored, '' expected: written, all three fields together.
        #expect(try await Self.adopt(redis, expected: "", new: "every:5000", since: 7, next: 100) == 1)
        #expect(try await Self.state(redis) == StoredSchedule(nextRunAtMs: 100, fingerprint: "every:5000", sinceMs: 7))
        // A stale expectation (none, or another schedule): refused, the state stays.
        #expect(try await Self.adopt(redis, expected: "", new: "every:1000", since: 8, next: 200) == 0)
        #expect(try await Self.adopt(redis, expected: "every:3600000", new: "every:1000", since: 8, next: 200) == 0)
        #expect(try await Self.state(redis) == StoredSchedule(nextRunAtMs: 100, fingerprint: "every:5000", sinceMs: 7))
        // The right expectation: replaced.
        #expect(try await Self.adopt(redis, expected: "every:5000", new: "every:1000", since: 8, next: 200) == 1)
        #expect(try await Self.state(redis) == StoredSchedule(nextRunAtMs: 200, fingerprint: "every:1000", sinceMs: 8))
        // The lease gone: refused even with the right expectation.
        _ = try await server.command("DEL", Self.keys.lease(Self.job))
        #expect(try await Self.adopt(redis, expected: "every:1000", new: "every:5000", since: 9, next: 300) == 0)
        #expect(try await Self.state(redis).fingerprint == "every:1000")
    }

    @Test func beginRunRefusesASlotComputedWithAnotherSchedule() async throws {
        let (server, redis) = try await Self.server()
        defer { withExtendedLifetime(server) {} }
        #expect(try await Self.adopt(redis, expected: "", new: "every:1000", since: 8, next: 200) == 1)
        // Computed from the old hourly schedule: refused with the stored next_run_at, nothing recorded.
        #expect(try await Self.begin(redis, slot: 200, next: 3_600_200, schedule: "every:3600000") == ["2", "200"])
        // Computed from no schedule at all (an older member's view): refused too.
        #expect(try await Self.begin(redis, slot: 200, next: 1200, schedule: "") == ["2", "200"])
        #expect(try await server.command("XLEN", Self.keys.runs(Self.job)).integer == 0)
        // Not the holder: {0}, whatever the schedule.
        #expect(try await Self.begin(redis, lease: "x@1:1", slot: 200, next: 1200, schedule: "every:1000") == ["0"])
        // The right schedule: started, next_run_at advanced, the schedule untouched.
        let started = try await Self.begin(redis, slot: 200, next: 1200, schedule: "every:1000")
        #expect(started.first == "1")
        #expect(
            try await Self.state(redis)
                == StoredSchedule(nextRunAtMs: 1200, fingerprint: "every:1000", sinceMs: 8, lastRunSlotMs: 200))
        // The same slot again: taken (the existing next_run_at check still holds).
        #expect(try await Self.begin(redis, slot: 200, next: 1200, schedule: "every:1000") == ["2", "1200"])
        #expect(try await server.command("XLEN", Self.keys.runs(Self.job)).integer == 1)
    }

    @Test func beginRunOfAContinuousJobIgnoresTheSchedule() async throws {
        let (server, redis) = try await Self.server()
        defer { withExtendedLifetime(server) {} }
        #expect(try await Self.adopt(redis, expected: "", new: "every:1000", since: 8, next: 200) == 1)
        let reply = try await redis.evaluate(
            LeaseScripts.beginRun,
            keys: [Self.keys.lease(Self.job), Self.keys.state(Self.job), Self.keys.runs(Self.job)],
            arguments: [Self.holder, "", "", "m1", "1000", "1000", ""])
        #expect(reply.array?.first?.integer == 1)
    }
}
