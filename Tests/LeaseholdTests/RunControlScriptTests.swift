import LeaseholdTesting
import RedisClient
import Testing

@testable import Leasehold

/// Pause, manual triggers, retries, missed slots and the runs stream in the fenced scripts,
/// against a real redis-server.
@Suite(.timeLimit(.minutes(1)))
struct RunControlScriptTests {
    static let keys = LeaseKeys(namespace: "run-scripts")
    static let job = "job"
    static let holder = "m1@0000abcd:1000"

    static func server() async throws -> (RedisServerProcess, RedisConnection) {
        let server = try await RedisServerProcess()
        _ = try await server.command("SET", keys.lease(job), holder)
        _ = try await server.command("HSET", keys.state(job), "schedule", "every:1000", "next_run_at", "200")
        return (server, RedisConnection(configuration: server.configuration()))
    }

    /// beginRun's reply as text: `["1", now]`, `["0"]`, `["2", next]`, `["3"]`.
    static func begin(
        _ redis: RedisConnection, lease: String = holder, slot: String = "200", next: String = "1200",
        trigger: String, attempt: String = "1"
    ) async throws -> [String] {
        let reply = try await redis.evaluate(
            LeaseScripts.beginRun, keys: [keys.lease(job), keys.state(job), keys.runs(job)],
            arguments: [lease, slot, next, "m1", "1000", "1000", "every:1000", trigger, attempt])
        return (reply.array ?? []).map { $0.string ?? $0.integer.map(String.init) ?? "nil" }
    }

    static func field(_ server: RedisServerProcess, _ name: String) async throws -> String? {
        try await server.command("HGET", keys.state(job), name).string
    }

    /// Every runs-stream entry as a dictionary, oldest first.
    static func runs(_ server: RedisServerProcess) async throws -> [[String: String]] {
        let reply = try await server.command("XRANGE", keys.runs(job), "-", "+")
        return (reply.array ?? []).map { entry in
            let flat = entry.array?.last?.array?.compactMap(\.string) ?? []
            var fields: [String: String] = [:]
            for index in stride(from: 0, to: flat.count - 1, by: 2) { fields[flat[index]] = flat[index + 1] }
            return fields
        }
    }

    @Test func aPausedJobStartsNothingButAForcedTrigger() async throws {
        let (server, redis) = try await Self.server()
        defer { withExtendedLifetime(server) {} }
        _ = try await server.command("HSET", Self.keys.state(Self.job), "paused", "1", "paused_by", "ops@host")
        #expect(try await Self.begin(redis, trigger: "schedule") == ["3"])
        #expect(try await Self.begin(redis, slot: "", next: "", trigger: "schedule") == ["3"])
        // No trigger pending: nothing to consume.
        #expect(try await Self.begin(redis, slot: "", next: "", trigger: "manual").first == "2")
        _ = try await server.command(
            "HSET", Self.keys.state(Self.job), "trigger_requested", "5", "trigger_by", "ops@host")
        // Pending but not forced: still paused, and the trigger stays.
        #expect(try await Self.begin(redis, slot: "", next: "", trigger: "manual") == ["3"])
        #expect(try await Self.field(server, "trigger_requested") == "5")
        _ = try await server.command("HSET", Self.keys.state(Self.job), "trigger_forced", "1")
        #expect(try await Self.begin(redis, slot: "", next: "", trigger: "manual").first == "1")
        // Consumed with the start: it cannot run twice; the schedule did not move.
        for name in ["trigger_requested", "trigger_by", "trigger_forced"] {
            #expect(try await Self.field(server, name) == nil)
        }
        #expect(try await Self.begin(redis, slot: "", next: "", trigger: "manual").first == "2")
        #expect(try await Self.field(server, "next_run_at") == "200")
        // Resumed: the slot starts.
        _ = try await server.command("HSET", Self.keys.state(Self.job), "paused", "0")
        #expect(try await Self.begin(redis, trigger: "schedule").first == "1")
        #expect(try await Self.field(server, "next_run_at") == "1200")
        let runs = try await Self.runs(server)
        #expect(runs.map { $0["trigger"] } == ["manual", "schedule"])
        #expect(runs.map { $0["type"] } == ["started", "started"])
        #expect(runs.map { $0["slot"] } == ["", "200"])
        // Not the holder: {0} before anything else.
        #expect(try await Self.begin(redis, lease: "x@1:1", trigger: "schedule") == ["0"])
    }

    @Test func aRetryIsConsumedOnceAndASlotDropsIt() async throws {
        let (server, redis) = try await Self.server()
        defer { withExtendedLifetime(server) {} }
        _ = try await server.command(
            "HSET", Self.keys.state(Self.job), "retry_attempt", "2", "retry_at", "150", "retry_slot", "100")
        // The wrong attempt (a stale view): refused.
        #expect(try await Self.begin(redis, slot: "100", next: "", trigger: "retry", attempt: "3").first == "2")
        #expect(try await Self.begin(redis, slot: "100", next: "", trigger: "retry", attempt: "2").first == "1")
        #expect(try await Self.field(server, "retry_attempt") == nil)
        #expect(try await Self.field(server, "retry_slot") == nil)
        #expect(try await Self.begin(redis, slot: "100", next: "", trigger: "retry", attempt: "2").first == "2")
        // A retry neither moves next_run_at nor last_run_slot.
        #expect(try await Self.field(server, "next_run_at") == "200")
        #expect(try await Self.field(server, "last_run_attempt") == "2")
        // A pending retry is dropped by the slot that starts.
        _ = try await server.command(
            "HSET", Self.keys.state(Self.job), "retry_attempt", "3", "retry_at", "250", "retry_slot", "100")
        #expect(try await Self.begin(redis, trigger: "schedule").first == "1")
        #expect(try await Self.field(server, "retry_attempt") == nil)
        #expect(try await Self.begin(redis, slot: "100", next: "", trigger: "retry", attempt: "3").first == "2")
        #expect(try await Self.runs(server).map { $0["attempt"] } == ["2", "1"])
    }

    @Test func finishRunStreamsTheEndAndLeavesARetry() async throws {
        let (server, redis) = try await Self.server()
        defer { withExtendedLifetime(server) {} }
        func finish(lease: String = Self.holder, result: String, retry: [String]) async throws -> Int64? {
            try await redis.evaluate(
                LeaseScripts.finishRun,
                keys: [Self.keys.lease(Self.job), Self.keys.state(Self.job), Self.keys.runs(Self.job)],
                arguments: [lease, result, "42", "200", "1000", "m1", "7", "1", "schedule", "1000"] + retry
            ).integer
        }
        #expect(try await finish(result: "failure", retry: ["2", "5000", "200"]) == 1)
        #expect(try await Self.field(server, "retry_attempt") == "2")
        #expect(try await Self.field(server, "retry_at") == "5000")
        #expect(try await Self.field(server, "retry_slot") == "200")
        #expect(try await Self.field(server, "last_success_at") == nil)
        #expect(try await finish(result: "success", retry: ["", "", ""]) == 1)
        #expect(try await Self.field(server, "last_success_at") != nil)
        // Not the holder: the end is still streamed (the run did end), the state is not touched.
        #expect(try await finish(lease: "x@1:1", result: "timeout", retry: ["3", "9", "200"]) == 0)
        #expect(try await Self.field(server, "last_result") == "success")
        #expect(try await Self.field(server, "retry_attempt") == "2")
        let runs = try await Self.runs(server)
        #expect(runs.map { $0["type"] } == ["finished", "finished", "finished"])
        #expect(runs.map { $0["result"] } == ["failure", "success", "timeout"])
        #expect(runs.first?["duration_ms"] == "42")
        #expect(runs.first?["started"] == "7")
        #expect(runs.first?["finished"] != nil)
    }

    @Test func skipSlotsRecordsMissedSlotsOnlyFromTheStateItWasDecidedFrom() async throws {
        let (server, redis) = try await Self.server()
        defer { withExtendedLifetime(server) {} }
        _ = try await server.command("HSET", Self.keys.state(Self.job), "retry_attempt", "2", "retry_at", "150")
        func skip(lease: String = Self.holder, from: String, schedule: String = "every:1000") async throws -> Int64? {
            try await redis.evaluate(
                LeaseScripts.skipSlots,
                keys: [Self.keys.lease(Self.job), Self.keys.state(Self.job), Self.keys.events(Self.job)],
                arguments: [lease, schedule, from, "3200", "m1", "1000", "1000", "500", "200", "1200", "2200"]
            ).integer
        }
        #expect(try await skip(lease: "x@1:1", from: "200") == 0)
        #expect(try await skip(from: "100") == 2)
        #expect(try await skip(from: "200", schedule: "every:5000") == 2)
        #expect(try await server.command("XLEN", Self.keys.events(Self.job)).integer == 0)
        #expect(try await skip(from: "200") == 1)
        #expect(try await Self.field(server, "next_run_at") == "3200")
        #expect(try await Self.field(server, "retry_attempt") == nil)
        let reply = try await server.command("XRANGE", Self.keys.events(Self.job), "-", "+")
        let events = (reply.array ?? []).map { entry -> [String: String] in
            let flat = entry.array?.last?.array?.compactMap(\.string) ?? []
            var fields: [String: String] = [:]
            for index in stride(from: 0, to: flat.count - 1, by: 2) { fields[flat[index]] = flat[index + 1] }
            return fields
        }
        #expect(events.map { $0["slot"] } == ["200", "1200", "2200"])
        #expect(
            events.allSatisfy { $0["type"] == "missed_slot" && $0["deadline_ms"] == "500" && $0["token"] == "1000" })
        // Decided again from the old slot (a stale view): refused.
        #expect(try await skip(from: "200") == 2)
    }
}
