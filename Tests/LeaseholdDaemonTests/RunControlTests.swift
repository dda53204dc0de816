import Foundation
import Leasehold
import LeaseholdTesting
import RedisClient
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Operators steering schedules, with real `leaseholdd` members and redis-server: pause,
/// resume and trigger written straight into the state hash and announced on the control
/// channel (as the CLI does), a retry left pending by a crashed leader, and slots missed
/// beyond their starting deadline. Assertions read the runs and events streams.
@Suite(.timeLimit(.minutes(3)))
struct RunControlTests {
    static let loop =
        #"handler: shell, schedule: continuous, config: { command: [sh, -c, "while true; do sleep 0.2; done"], kill_grace: 1s }"#

    /// Redis time in ms: run records carry it, so "after the pause" is exact.
    static func redisNow(_ fleet: DaemonFleet) async throws -> Int64 {
        let parts = try await fleet.redis.command("TIME").array?.compactMap { $0.string.flatMap { Int64($0) } } ?? []
        guard parts.count == 2 else { throw TestSupportError("unexpected TIME reply") }
        return parts[0] * 1000 + parts[1] / 1000
    }

    /// Writes control fields and publishes the job on the control channel, as the CLI does.
    static func control(_ fleet: DaemonFleet, _ job: String, _ fields: [String]) async throws {
        _ = try await fleet.redis.command(["HSET", fleet.keys.state(job)] + fields)
        _ = try await fleet.redis.command("PUBLISH", fleet.keys.controlChannel, job)
    }

    /// Run starts of `job` after Redis time `ms`.
    static func starts(_ fleet: DaemonFleet, _ job: String, after ms: Int64) async throws -> [RunRecord] {
        try await fleet.runs(job).filter { ($0.started ?? 0) > ms }
    }

    /// `GET /metrics`, off the cooperative pool.
    static func metrics(port: Int) async -> String? {
        await httpGetOffPool(port: port, path: "/metrics")?.body
    }

    @Test func pauseStopsRunsOnEveryMemberAcrossAFailoverAndResumeRestartsThem() async throws {
        let fleet = try await DaemonFleet(
            catalog: """
                version: 1
                redis: { namespace: NAMESPACE }
                defaults: { lease: 2s, placement: any }
                jobs:
                  - { name: loop, \(Self.loop) }
                  - { name: tick, handler: log, schedule: { every: 1s } }
                """)
        var members = ["m1": try fleet.start("m1"), "m2": try fleet.start("m2")]
        let diagnostics = { members.values.map { $0.logTail(20) }.joined(separator: "\n") }
        try await eventually("both jobs run", within: .seconds(20), diagnostics: diagnostics) {
            let loopRuns = try await fleet.runs("loop").count
            let tickRuns = try await fleet.runs("tick").count
            return loopRuns >= 1 && tickRuns >= 2
        }
        let loopHolder = try #require(try await fleet.holder("loop"))
        try await Self.control(fleet, "loop", ["paused", "1", "paused_by", "test@host", "paused_reason", "test"])
        try await Self.control(fleet, "tick", ["paused", "1", "paused_by", "test@host", "paused_reason", "test"])
        let pausedAt = try await Self.redisNow(fleet)
        // The continuous handler is stopped at once, and its leader keeps the lease.
        try await eventually("the loop handler stops", within: .seconds(10), diagnostics: diagnostics) {
            try await fleet.allRunEntries("loop").contains { $0.type == "finished" && $0.result == "cancelled" }
        }
        #expect(try await fleet.holder("loop") == loopHolder)
        // Kill both leaders: the new ones must not start anything while paused.
        let tickHolder = try #require(try await fleet.holder("tick"))
        for name in Set([loopHolder.owner.member, tickHolder.owner.member]) {
            members[name]?.signal(SIGKILL)
            _ = try await members[name]?.waitForExit()
        }
        members["m3"] = try fleet.start("m3")
        try await eventually("new leaders take over", within: .seconds(20), diagnostics: diagnostics) {
            guard let loop = try await fleet.holder("loop"), let tick = try await fleet.holder("tick") else {
                return false
            }
            return loop.token != loopHolder.token && tick.token != tickHolder.token
        }
        // Three renew intervals and more under the new leaders: no start, on any member.
        let takenOver = ContinuousClock.now
        while ContinuousClock.now < takenOver + .seconds(3) {
            #expect(try await Self.starts(fleet, "loop", after: pausedAt).isEmpty)
            #expect(try await Self.starts(fleet, "tick", after: pausedAt).isEmpty)
            try await Task.sleep(for: .milliseconds(250))
        }
        // Resume: both run again at once (a message, not a poll).
        let resumedAt = try await Self.redisNow(fleet)
        try await Self.control(fleet, "loop", ["paused", "0"])
        try await Self.control(fleet, "tick", ["paused", "0"])
        try await eventually("runs resume", within: .seconds(10), diagnostics: diagnostics) {
            let loopRuns = try await Self.starts(fleet, "loop", after: resumedAt).count
            let tickRuns = try await Self.starts(fleet, "tick", after: resumedAt).count
            return loopRuns >= 1 && tickRuns >= 1
        }
        for member in members.values where member.isRunning { _ = await member.stop() }
    }

    @Test func aTriggerRunsOnceAtOnceAndOnlyAForcedOneWhilePaused() async throws {
        let fleet = try await DaemonFleet(
            catalog: """
                version: 1
                redis: { namespace: NAMESPACE }
                defaults: { lease: 3s, placement: any }
                jobs:
                  - name: hourly
                    handler: shell
                    schedule: { every: 1h }
                    config: { command: [sh, -c, "echo trigger=$LEASEHOLD_TRIGGER attempt=$LEASEHOLD_ATTEMPT"] }
                """)
        let members = [try fleet.start("m1"), try fleet.start("m2")]
        let diagnostics = { members.map { $0.logTail(20) }.joined(separator: "\n") }
        // The first slot of `every` is now.
        try await eventually("the first slot runs", within: .seconds(20), diagnostics: diagnostics) {
            try await fleet.runs("hourly").count == 1
        }
        try await Self.control(
            fleet, "hourly", ["trigger_requested", String(try await Self.redisNow(fleet)), "trigger_by", "t@h"])
        let triggered = ContinuousClock.now
        try await eventually("the manual run", within: .seconds(10), diagnostics: diagnostics) {
            try await fleet.runs("hourly").count == 2
        }
        // Well within a renew interval (1 s): the message woke the leader.
        #expect(ContinuousClock.now - triggered < .seconds(3))
        let manual = try #require(try await fleet.runs("hourly").last)
        #expect(manual.trigger == "manual")
        #expect(manual.attempt == 1)
        #expect(try await fleet.state("hourly")["trigger_requested"] == nil)
        try await eventually("the handler saw its trigger", within: .seconds(10), diagnostics: diagnostics) {
            members.contains { $0.lines.contains { $0.message == "trigger=manual attempt=1" } }
        }
        // Paused: a trigger waits; a forced one runs (once), and the pause stays.
        try await Self.control(fleet, "hourly", ["paused", "1", "trigger_requested", "1", "trigger_by", "t@h"])
        let waitFrom = ContinuousClock.now
        while ContinuousClock.now < waitFrom + .seconds(2.5) {
            #expect(try await fleet.runs("hourly").count == 2)
            try await Task.sleep(for: .milliseconds(250))
        }
        try await Self.control(fleet, "hourly", ["trigger_forced", "1"])
        try await eventually("the forced run", within: .seconds(10), diagnostics: diagnostics) {
            try await fleet.runs("hourly").count == 3
        }
        let state = try await fleet.state("hourly")
        #expect(state["paused"] == "1")
        #expect(state["trigger_requested"] == nil && state["trigger_forced"] == nil)
        for member in members { _ = await member.stop() }
        #expect(try await fleet.runs("hourly").count == 3)
    }

    @Test func aRetryPendingAtACrashRunsOnceOnTheNewLeader() async throws {
        let fleet = try await DaemonFleet(
            catalog: """
                version: 1
                redis: { namespace: NAMESPACE }
                defaults: { lease: 2s, placement: any }
                jobs:
                  - name: flaky
                    handler: shell
                    schedule: { every: 1h }
                    retry: { attempts: 3, backoff: 5s }
                    config: { command: [sh, -c, "test \\"$LEASEHOLD_ATTEMPT\\" -ge 2"] }
                """)
        let members = ["m1": try fleet.start("m1"), "m2": try fleet.start("m2")]
        let diagnostics = { members.values.map { $0.logTail(20) }.joined(separator: "\n") }
        let pending = try await eventually("a retry pending", within: .seconds(20), diagnostics: diagnostics) {
            () async throws -> [String: String]? in
            let state = try await fleet.state("flaky")
            return state["retry_attempt"] == "2" ? state : nil
        }
        let first = try #require(try await fleet.runs("flaky").first)
        #expect(first.attempt == 1)
        #expect(pending["retry_slot"] == first.fields["slot"])
        let leader = try #require(first.member)
        members[leader]?.signal(SIGKILL)
        _ = try await members[leader]?.waitForExit()
        let other = leader == "m1" ? "m2" : "m1"
        try await eventually("the retry runs on the new leader", within: .seconds(25), diagnostics: diagnostics) {
            try await fleet.allRunEntries("flaky").contains { $0.type == "finished" && $0.attempt == 2 }
        }
        let retry = try #require(try await fleet.runs("flaky").first { $0.attempt == 2 })
        #expect(retry.member == other)
        #expect(retry.trigger == "retry")
        #expect(retry.slot == first.slot)
        #expect((retry.started ?? 0) >= Int64(pending["retry_at"] ?? "") ?? .max)
        #expect(try await fleet.allRunEntries("flaky").last { $0.attempt == 2 }?.result == "success")
        // Run once: stopping the survivor leaves exactly two starts, and no retry pending.
        _ = await members[other]?.stop()
        #expect(try await fleet.runs("flaky").map(\.attempt) == [1, 2])
        #expect(try await fleet.state("flaky")["retry_attempt"] == nil)
        #expect(try await fleet.state("flaky")["last_success_at"] != nil)
    }

    @Test func aSlotMissedWhilePausedBeyondItsDeadlineIsSkippedAndCounted() async throws {
        let fleet = try await DaemonFleet(
            catalog: """
                version: 1
                redis: { namespace: NAMESPACE }
                defaults: { lease: 3s }
                jobs:
                  - { name: tick, handler: log, schedule: { every: 2s }, starting_deadline: 800ms }
                """)
        let port = FreePort.next()
        let member = try fleet.start("m1", extra: ["--http", "127.0.0.1:\(port)"])
        let diagnostics = { member.logTail(30) }
        try await eventually("a run", within: .seconds(20), diagnostics: diagnostics) {
            try await !fleet.runs("tick").isEmpty
        }
        try await Self.control(fleet, "tick", ["paused", "1"])
        let pausedAt = try await Self.redisNow(fleet)
        // Paused across at least one slot, well past its deadline.
        try await eventually("a slot passes while paused", within: .seconds(10), diagnostics: diagnostics) {
            guard let next = try await fleet.state("tick")["next_run_at"].flatMap({ Int64($0) }) else { return false }
            return try await Self.redisNow(fleet) > next + 1500
        }
        let missedSlot = try #require(try await fleet.state("tick")["next_run_at"].flatMap { Int64($0) })
        try await Self.control(fleet, "tick", ["paused", "0"])
        try await eventually("the missed slot is recorded", within: .seconds(10), diagnostics: diagnostics) {
            try await fleet.events("tick").contains { $0["type"] == "missed_slot" && $0["slot"] == String(missedSlot) }
        }
        let event = try #require(try await fleet.events("tick").first { $0["type"] == "missed_slot" })
        #expect(event["deadline_ms"] == "800")
        #expect(event["member"] == "m1")
        try await eventually("runs continue", within: .seconds(10), diagnostics: diagnostics) {
            try await !Self.starts(fleet, "tick", after: pausedAt).isEmpty
        }
        // The missed slot never ran, late or otherwise.
        #expect(try await !fleet.runs("tick").contains { $0.slot == missedSlot })
        let scraped = try await eventually("the metrics", within: .seconds(10), diagnostics: diagnostics) {
            () async -> String? in
            guard let body = await Self.metrics(port: port), body.contains("leasehold_job_missed_slots_total") else {
                return nil
            }
            return body
        }
        let line = scraped.split(separator: "\n").first {
            $0.hasPrefix("leasehold_job_missed_slots_total{") && $0.contains("job=\"tick\"")
        }
        #expect((line?.split(separator: " ").last.flatMap { Double($0) } ?? 0) >= 1)
        #expect(scraped.contains("leasehold_job_paused{job=\"tick\"} 0"))
        #expect(scraped.contains("leasehold_job_next_run_timestamp_seconds{job=\"tick\"}"))
        #expect(scraped.contains("leasehold_job_last_success_timestamp_seconds{job=\"tick\"}"))
        _ = await member.stop()
    }
}
