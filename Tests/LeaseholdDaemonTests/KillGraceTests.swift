import Foundation
import LeaseholdTesting
import RedisClient
import Testing

@testable import Leasehold

/// When a shell job gets SIGTERM with time for its trap, and when SIGKILL at once: a real
/// `leaseholdd` leading a shell job whose TERM trap needs half a second to finish.
@Suite(.timeLimit(.minutes(2)))
struct KillGraceTests {
    /// 10 s lease: the leader steps down 1 s (its grace) before its validity ends.
    static let catalog = """
        version: 1
        redis: { namespace: NAMESPACE }
        defaults: { lease: 10s, placement: any }
        jobs:
          - name: trapper
            handler: shell
            schedule: continuous
            config:
              kill_grace: 5s
              command: ["sh", "-c", "echo started >> DIR/trap.log; trap 'sleep 0.5; echo term >> DIR/trap.log; exit 0' TERM; while :; do sleep 0.1; done"]
        """

    static func started(_ fleet: DaemonFleet, _ member: DaemonProcess) async throws {
        try await eventually("the job to start", within: .seconds(20), diagnostics: { member.logTail() }) {
            fleet.directory.read("trap.log")?.contains("started") == true
        }
    }

    @Test func aStepDownOnTheValidityTimerSendsSIGTERMAndWaitsWithinTheValidityLeft() async throws {
        let fleet = try await DaemonFleet(catalog: Self.catalog)
        let member = try fleet.start("m1")
        try await Self.started(fleet, member)
        // Redis stops answering: no renewal succeeds, the member steps down on its own clock
        // with about a second of validity left, and the job's trap gets to run in it.
        fleet.redis.suspend()
        defer { fleet.redis.resume() }
        try await eventually("the step-down", within: .seconds(30), diagnostics: { member.logTail() }) {
            member.lines.contains { $0.message == "lost leadership" && $0.fields?["reason"] == "stepped_down" }
        }
        try await eventually("the trap to finish", within: .seconds(10), diagnostics: { member.logTail() }) {
            fleet.directory.read("trap.log")?.contains("term") == true
        }
        fleet.redis.resume()
        #expect(await member.stop() == 0)
    }

    @Test func aLeaseSeenDeletedKillsTheJobAtOnce() async throws {
        let fleet = try await DaemonFleet(catalog: Self.catalog)
        let member = try fleet.start("m1")
        try await Self.started(fleet, member)
        // Someone else may lead as soon as the lease is gone: no time for the trap.
        _ = try await fleet.redis.command("DEL", fleet.keys.lease("trapper"))
        try await eventually("the loss", within: .seconds(20), diagnostics: { member.logTail() }) {
            member.lines.contains { $0.message == "lost leadership" && $0.fields?["reason"] == "expired" }
        }
        try await eventually("the run to end", within: .seconds(10), diagnostics: { member.logTail() }) {
            member.lines.contains { $0.message == "run ended" }
        }
        try await Task.sleep(for: .seconds(1))  // the trap would have written by now
        #expect(fleet.directory.read("trap.log")?.contains("term") != true, "\(member.logTail())")
        #expect(await member.stop() == 0)
    }
}
