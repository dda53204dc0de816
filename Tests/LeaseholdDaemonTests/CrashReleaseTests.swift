import Foundation
import Leasehold
import LeaseholdTesting
import RedisClient
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Crash release end to end: real `leaseholdd` processes and their guardians against a private
/// `redis-server`. A dead daemon's leases move within about a second; a stopped daemon (alive)
/// and a daemon whose guardian died too keep the TTL; no job process of the dead daemon writes
/// after the new leader started.
@Suite(.timeLimit(.minutes(2)))
struct CrashReleaseTests {
    /// A continuous shell job appending its token to `file` every 20 ms, which keeps writing
    /// for ~0.5 s after SIGTERM: a guardian that did not wait for it would let it overlap
    /// the new leader.
    static func writer(_ name: String, file: String) -> String {
        let script =
            #"w() { echo \"$LEASEHOLD_FENCING_TOKEN\" >> \#(file); }; trap 'for i in 1 2 3 4 5 6 7 8 9 10; do w; sleep 0.05; done; exit 0' TERM; while true; do w; sleep 0.02; done"#
        return
            #"  - { name: \#(name), handler: shell, schedule: continuous, config: { command: ["sh", "-c", "\#(script)"] } }"#
    }

    /// Lines the old leader's job wrote after the new leader's job had written its first line.
    static func staleWrites(_ path: String, old: UInt64, new: UInt64) -> Int {
        let lines = (try? String(contentsOfFile: path, encoding: .utf8))?.split(separator: "\n") ?? []
        guard let first = lines.firstIndex(of: Substring(String(new))) else { return 0 }
        return lines[first...].filter { $0 == Substring(String(old)) }.count
    }

    /// The pid of the guardian a daemon started last (from its log).
    static func guardianPIDs(_ daemon: DaemonProcess) -> [Int32] {
        daemon.lines.filter { $0.message == "guardian started" }.compactMap { $0.fields?["guardian_pid"] }
            .compactMap { Int32($0) }
    }

    @Test func killNineMovesEveryJobWellUnderTheTTLWithoutStaleWrites() async throws {
        let probe = try TempDirectory()
        let file = probe.path + "/writes"
        let fleet = try await DaemonFleet(
            catalog: """
                version: 1
                redis: { namespace: NAMESPACE }
                defaults: { lease: 10s, placement: any }
                jobs:
                \(Self.writer("loop", file: file))
                  - { name: beat, handler: log, schedule: { every: 1s } }
                """)
        let leader = try fleet.start("a")
        let firsts = try await eventually("a leads both jobs", within: .seconds(20), diagnostics: { leader.logTail() })
        {
            () async throws -> [String: LeaseValue]? in
            guard let loop = try await fleet.holder("loop"), let beat = try await fleet.holder("beat"),
                loop.owner.member == "a", beat.owner.member == "a", !Self.guardianPIDs(leader).isEmpty
            else { return nil }
            return ["loop": loop, "beat": beat]
        }
        let standby = try fleet.start("b")
        let diagnostics = { leader.logTail() + "\n" + standby.logTail() }
        try await standby.waitForLine("b sees a", within: .seconds(20)) {
            $0.message == "members changed" && ($0.fields?["members"] ?? "").contains("a")
        }
        // Well into its run, so its SIGTERM trap (0.5 s of further writes) is installed.
        try await eventually("loop writes for a while", within: .seconds(10)) {
            ((try? String(contentsOfFile: file, encoding: .utf8))?.split(separator: "\n").count ?? 0) >= 15 ? true : nil
        }

        let killedAt = ContinuousClock.now
        leader.signal(SIGKILL)
        let moved = try await eventually(
            "b leads both jobs", within: .seconds(9), every: .milliseconds(5), diagnostics: diagnostics
        ) {
            () async throws -> [String: LeaseValue]? in
            guard let loop = try await fleet.holder("loop"), let beat = try await fleet.holder("beat"),
                loop.owner.member == "b", beat.owner.member == "b"
            else { return nil }
            return ["loop": loop, "beat": beat]
        }
        let failover = ContinuousClock.now - killedAt
        #expect(try await leader.waitForExit() == 128 + SIGKILL)
        // Bounded well under the 10 s TTL: what matters is that it did not wait for it.
        #expect(failover < .seconds(5), "failover took \(failover)")
        for job in ["loop", "beat"] {
            let events = try await fleet.events(job)
            let taken = try #require(events.last { $0["member"] == "b" && $0["token"] == String(moved[job]!.token) })
            #expect(taken["type"] == "crash_release", "\(job): \(taken)")
            #expect(events.contains { $0["type"] == "crash_release" && $0["member"] == "a" })
        }
        // The new run writes; none of the old one's writes may follow its first.
        try await eventually("the new loop writes", within: .seconds(10), diagnostics: diagnostics) {
            let text = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
            return text.contains("\(moved["loop"]!.token)\n") ? true : nil
        }
        try await Task.sleep(for: .milliseconds(500))
        let stale = Self.staleWrites(file, old: firsts["loop"]!.token, new: moved["loop"]!.token)
        #expect(stale == 0, "the dead leader's job wrote \(stale) times after the new one started")
        let acquired = try await standby.waitForLine("b's acquired line") {
            $0.message == "acquired leadership" && $0.job == "loop"
        }
        #expect(acquired.fields?["reason"] == "crash_release")
        print("kill -9 with crash release: both jobs moved after \(failover) (TTL 10 s)")
        _ = await standby.stop()
    }

    @Test func aStoppedDaemonIsAliveAndKeepsItsLeasesUntilTheTTL() async throws {
        let probe = try TempDirectory()
        let file = probe.path + "/writes"
        let fleet = try await DaemonFleet(
            catalog: """
                version: 1
                redis: { namespace: NAMESPACE }
                defaults: { lease: 3s, placement: any }
                jobs:
                \(Self.writer("loop", file: file))
                """)
        let leader = try fleet.start("a")
        let first = try await eventually("a leads", within: .seconds(20), diagnostics: { leader.logTail() }) {
            () async throws -> LeaseValue? in
            guard let loop = try await fleet.holder("loop"), loop.owner.member == "a" else { return nil }
            return loop
        }
        let standby = try fleet.start("b")
        try await standby.waitForLine("b sees a", within: .seconds(20)) {
            $0.message == "members changed" && ($0.fields?["members"] ?? "").contains("a")
        }
        let stoppedAt = ContinuousClock.now
        leader.signal(SIGSTOP)
        defer { leader.signal(SIGCONT) }
        let next = try await eventually(
            "b takes over", within: .seconds(15), every: .milliseconds(10),
            diagnostics: { standby.logTail() }
        ) {
            () async throws -> LeaseValue? in
            guard let loop = try await fleet.holder("loop"), loop.owner.member == "b" else { return nil }
            return loop
        }
        let takeover = ContinuousClock.now - stoppedAt
        // The lease had up to 3 s left when the daemon stopped; renewals every second leave at
        // least ~2 s. An early release would show up in milliseconds.
        #expect(takeover > .milliseconds(1500), "took over after \(takeover): released early")
        let events = try await fleet.events("loop")
        #expect(!events.contains { $0["type"] == "crash_release" }, "\(events)")
        #expect(events.last { $0["token"] == String(next.token) }?["type"] == "expired_takeover")
        try await eventually("the new loop writes", within: .seconds(10)) {
            let text = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
            return text.contains("\(next.token)\n") ? true : nil
        }
        try await Task.sleep(for: .milliseconds(300))
        #expect(Self.staleWrites(file, old: first.token, new: next.token) == 0)
        leader.signal(SIGCONT)
        print("SIGSTOP leader: takeover after \(takeover) (TTL 3 s), no crash release")
        _ = await standby.stop()
        _ = await leader.stop()
    }

    @Test func aDeadGuardianIsReplacedAndWithBothDeadTheTTLApplies() async throws {
        let fleet = try await DaemonFleet(
            catalog: """
                version: 1
                redis: { namespace: NAMESPACE }
                defaults: { lease: 3s, placement: any }
                jobs:
                  - { name: beat, handler: log, schedule: { every: 1s } }
                """)
        let leader = try fleet.start("a")
        _ = try await eventually("a leads", within: .seconds(20), diagnostics: { leader.logTail() }) {
            () async throws -> LeaseValue? in
            guard let beat = try await fleet.holder("beat"), beat.owner.member == "a" else { return nil }
            return beat
        }
        let firstGuardian = try #require(Self.guardianPIDs(leader).first)
        kill(firstGuardian, SIGKILL)
        let secondGuardian = try await eventually(
            "a starts a new guardian", within: .seconds(10), diagnostics: { leader.logTail() }
        ) {
            Self.guardianPIDs(leader).last.flatMap { $0 != firstGuardian ? $0 : nil }
        }
        // The log line travels through the daemon's stderr pipe: it may arrive after the new
        // guardian is already visible in /proc.
        _ = try await leader.waitForLine("the guardian's replacement logged", within: .seconds(10)) {
            $0.message == "guardian exited; starting a new one"
        }
        let standby = try fleet.start("b")
        try await standby.waitForLine("b sees a", within: .seconds(20)) {
            $0.message == "members changed" && ($0.fields?["members"] ?? "").contains("a")
        }
        // Both die: stopped first, so the daemon cannot replace the guardian in between.
        leader.signal(SIGSTOP)
        let killedAt = ContinuousClock.now
        kill(secondGuardian, SIGKILL)
        leader.signal(SIGKILL)
        let next = try await eventually(
            "b takes over", within: .seconds(15), every: .milliseconds(10), diagnostics: { standby.logTail() }
        ) {
            () async throws -> LeaseValue? in
            guard let beat = try await fleet.holder("beat"), beat.owner.member == "b" else { return nil }
            return beat
        }
        let takeover = ContinuousClock.now - killedAt
        #expect(takeover > .milliseconds(1500), "took over after \(takeover)")
        let events = try await fleet.events("beat")
        #expect(events.last { $0["token"] == String(next.token) }?["type"] == "expired_takeover")
        print("guardian and daemon killed: TTL takeover after \(takeover) (TTL 3 s)")
        _ = await standby.stop()
    }

    @Test func aHandlerThatTrapsInAUserBuiltDaemonMovesItsJobFast() async throws {
        let binary = URL(fileURLWithPath: try DaemonBinary.path()).deletingLastPathComponent()
            .appendingPathComponent("TrappingHandlerExample").path
        let fleet = try await DaemonFleet(
            catalog: """
                version: 1
                redis: { namespace: NAMESPACE }
                defaults: { lease: 10s, placement: any }
                jobs:
                  - { name: fragile, handler: trap, schedule: { every: 1s } }
                """)
        let probe = try TempDirectory()
        let trapFile = probe.path + "/trap"
        func start(_ name: String, _ environment: [String: String]) throws -> DaemonProcess {
            try DaemonProcess(
                name: name,
                arguments: [
                    "--config", fleet.catalogPath, "--redis", fleet.redis.url, "--name", name, "--log-format", "json",
                ], environment: environment, executable: binary)
        }
        let leader = try start("a", ["LEASEHOLD_EXAMPLE_TRAP_FILE": trapFile])
        let first = try await eventually("a leads", within: .seconds(20), diagnostics: { leader.logTail() }) {
            () async throws -> LeaseValue? in
            guard let held = try await fleet.holder("fragile"), held.owner.member == "a",
                !Self.guardianPIDs(leader).isEmpty
            else { return nil }
            return held
        }
        let standby = try start("b", [:])
        try await standby.waitForLine("b sees a", within: .seconds(20)) {
            $0.message == "members changed" && ($0.fields?["members"] ?? "").contains("a")
        }
        _ = try probe.write("trap", "")
        let trappedAt = ContinuousClock.now
        let status = try await leader.waitForExit(within: .seconds(10))
        #expect(status > 128, "the trap should kill the daemon by a signal, got \(status)")
        let next = try await eventually(
            "b takes over", within: .seconds(9), every: .milliseconds(5), diagnostics: { standby.logTail() }
        ) {
            () async throws -> LeaseValue? in
            guard let held = try await fleet.holder("fragile"), held.owner.member == "b" else { return nil }
            return held
        }
        let takeover = ContinuousClock.now - trappedAt
        #expect(next.token > first.token)
        #expect(takeover < .seconds(5), "took over after \(takeover) (TTL 10 s)")
        let events = try await fleet.events("fragile")
        #expect(events.last { $0["token"] == String(next.token) }?["type"] == "crash_release")
        print("fatalError in a handler: takeover after \(takeover) (TTL 10 s)")
        _ = await standby.stop()
    }
}
