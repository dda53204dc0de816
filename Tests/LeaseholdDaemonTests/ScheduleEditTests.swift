import Foundation
import Leasehold
import LeaseholdDaemon
import LeaseholdTesting
import RedisClient
import Testing

/// An edited schedule takes effect at once on a member with a newer catalog, and members
/// with an older catalog follow it instead of flapping back (in-process members, real Redis).
@Suite(.timeLimit(.minutes(2)))
struct ScheduleEditTests {
    static func member(
        _ name: String, every interval: Duration, loadedAtMs: Int64, namespace: String, redis: RedisServerProcess,
        logs: ObsLogCapture
    ) throws -> LeaseholdService {
        let catalog = Catalog(
            namespace: namespace,
            jobs: [
                JobSpec(name: "tick", handler: "log", schedule: .every(interval), lease: .seconds(2), placement: .any)
            ],
            path: "<memory>")
        return try LeaseholdService(
            configuration: .init(
                catalog: catalog, redis: redis.endpoint, memberName: name, shutdownTimeout: .seconds(2),
                catalogLoadedAtMs: loadedAtMs),
            registry: .builtIn, logger: logs.logger())
    }

    /// The `slot` of every run start, oldest first (`finished` entries repeat the slot).
    static func runSlots(_ redis: RedisServerProcess, _ keys: LeaseKeys) async throws -> [Int64] {
        let reply = try await redis.command("XRANGE", keys.runs("tick"), "-", "+")
        return try (reply.array ?? []).compactMap { entry in
            let fields = entry.array?.last?.array?.compactMap(\.string) ?? []
            if let type = fields.firstIndex(of: "type"), type + 1 < fields.count, fields[type + 1] != "started" {
                return nil
            }
            guard let index = fields.firstIndex(of: "slot"), index + 1 < fields.count,
                let slot = Int64(fields[index + 1])
            else { throw TestSupportError("run record without a slot: \(entry)") }
            return slot
        }
    }

    static func state(_ redis: RedisServerProcess, _ keys: LeaseKeys) async throws -> [String: String] {
        let fields = ["next_run_at", "schedule", "schedule_since", "last_run_slot"]
        let reply = try await redis.command(["HMGET", keys.state("tick")] + fields)
        var state: [String: String] = [:]
        for (field, value) in zip(fields, reply.array ?? []) { state[field] = value.string }
        return state
    }

    @Test func aNewerCatalogsScheduleWinsAndAnOlderMemberFollowsIt() async throws {
        let redis = try await RedisServerProcess()
        let namespace = "sched-edit-\(UInt32.random(in: 0 ... .max))"
        let keys = LeaseKeys(namespace: namespace)
        let logs = ObsLogCapture(format: .json)
        let diagnostics = { logs.lines.suffix(30).joined(separator: "\n") }
        let oldLoad: Int64 = 1_700_000_000_000
        let newLoad = oldLoad + 60_000

        // The old catalog: every hour. Its first slot runs at once, the next is an hour away.
        let old = try Self.member(
            "old", every: .seconds(3600), loadedAtMs: oldLoad, namespace: namespace, redis: redis, logs: logs)
        let runOld = Task { try await old.run() }
        try await eventually("the hourly job ran once", within: .seconds(20), diagnostics: diagnostics) {
            try await Self.runSlots(redis, keys).count == 1
        }
        try await eventually("the hourly schedule stored", within: .seconds(10), diagnostics: diagnostics) {
            try await Self.state(redis, keys)["schedule"] == "every:3600000"
        }
        await old.stop()
        _ = try await runOld.value
        let hourlyNext = try #require(Int64(try await Self.state(redis, keys)["next_run_at"] ?? ""))
        #expect(hourlyNext > Int64(Date().timeIntervalSince1970 * 1000) + 3_000_000)

        // (a) A member with the edited catalog (every second, loaded later) leads: it runs
        // within a few new periods, not after the hour the stored next_run_at says.
        let new = try Self.member(
            "new", every: .seconds(1), loadedAtMs: newLoad, namespace: namespace, redis: redis, logs: logs)
        let runNew = Task { try await new.run() }
        try await eventually("the edited schedule runs", within: .seconds(20), diagnostics: diagnostics) {
            try await Self.runSlots(redis, keys).count >= 3
        }
        await new.stop()
        _ = try await runNew.value
        let adopted = try await Self.state(redis, keys)
        #expect(adopted["schedule"] == "every:1000")
        #expect(adopted["schedule_since"] == String(newLoad))
        #expect(logs.lines.contains { $0.contains("schedule changed: next run at") })
        let slotsBeforeFollow = try await Self.runSlots(redis, keys)
        #expect(slotsBeforeFollow[1] < hourlyNext, "the first run of the edited schedule came before the hourly slot")

        // (b) A member that still has the old catalog leads again: it follows the stored,
        // newer schedule (every second), does not write its own back, and runs no slot twice.
        let oldAgain = try Self.member(
            "old", every: .seconds(3600), loadedAtMs: oldLoad, namespace: namespace, redis: redis, logs: logs)
        let runOldAgain = Task { try await oldAgain.run() }
        try await eventually("the old member keeps the new cadence", within: .seconds(20), diagnostics: diagnostics) {
            try await Self.runSlots(redis, keys).count >= slotsBeforeFollow.count + 3
        }
        let followed = try await Self.state(redis, keys)
        await oldAgain.stop()
        _ = try await runOldAgain.value
        #expect(followed["schedule"] == "every:1000")
        #expect(followed["schedule_since"] == String(newLoad))
        let next = try #require(Int64(followed["next_run_at"] ?? ""))
        let last = try #require(Int64(followed["last_run_slot"] ?? ""))
        #expect(next > last && (next - last) % 1000 == 0 && next - last < 60_000, "\(followed)")
        #expect(logs.lines.contains { $0.contains("following a newer catalog's schedule") })

        let slots = try await Self.runSlots(redis, keys)
        #expect(zip(slots, slots.dropFirst()).allSatisfy { $0 < $1 }, "run slots must strictly increase: \(slots)")
        // Every slot after the edit is on the new one-second grid, including the follower's.
        let grid = slots.dropFirst()
        #expect(zip(grid, grid.dropFirst()).allSatisfy { ($1 - $0) % 1000 == 0 }, "\(slots)")
    }
}
