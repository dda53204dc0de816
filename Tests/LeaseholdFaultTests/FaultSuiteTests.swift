import Foundation
import Leasehold
import LeaseholdTesting
import RedisClient
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The multi-process fault suite (Docs/TESTING.md, "Multi-process fault suite"): three real `leaseholdd` members,
/// a seeded schedule of real faults, then a checker over fenced writes, leaderless gaps and
/// process exits.
///
/// CI profile: `swift test --filter FaultSuiteTests` (60 s of faults, at least one of each kind).
/// Long profile: `LEASEHOLD_FAULT_SECONDS=1800 swift test --filter FaultSuiteTests`.
/// Replay: `LEASEHOLD_FAULT_SEED=<printed seed>`; restrict: `LEASEHOLD_FAULT_KINDS=kill-9,sigstop`.
@Suite(.serialized, .enabled(if: HeavyTests.enabled, Comment(rawValue: HeavyTests.skipReason)))
struct FaultSuiteTests {
    @Test(.timeLimit(.minutes(FaultProfile.timeLimitMinutes)))
    func seededFaultScheduleKeepsFencingLivenessAndCleanExits() async throws {
        let seed = FaultProfile.seed
        let seconds = FaultProfile.seconds
        faultLog(
            "fault suite: seed \(seed) (replay with LEASEHOLD_FAULT_SEED=\(seed)), \(seconds) s of faults, kinds \(FaultProfile.kinds.map(\.rawValue))"
        )
        let fleet = try await FaultFleet()
        defer {
            fleet.setProxies(.pass)
            for process in fleet.allProcesses { process.signal(SIGCONT) }
        }
        let diagnostics = { fleet.currentMembers.map { $0.logTail(15) }.joined(separator: "\n") }

        // Warm up: every job led and written to once.
        try await eventually(
            "every job led and written", within: .seconds(60), every: .milliseconds(200), diagnostics: diagnostics
        ) {
            () async throws -> Bool? in
            guard try await fleet.leaseValues().values.allSatisfy({ $0 != nil }) else { return nil }
            for job in FaultFleet.jobs where try await fleet.writes(job).accepted.isEmpty { return nil }
            return true
        }

        let monitor = LeaseMonitor()
        let monitorTask = Task { await monitor.run(fleet) }
        var injector = FaultInjector(fleet: fleet, seed: seed, kinds: FaultProfile.kinds)
        let faultStart = ContinuousClock.now
        let deadline = faultStart + .seconds(seconds)
        // Until the time is up and the current round (every kind once) is complete.
        while ContinuousClock.now < deadline || !injector.roundComplete {
            await injector.settle()
            try await injector.inject(injector.nextKind())
        }
        let quietStart = ContinuousClock.now
        let quietStartUs = wallMicros()
        faultLog(
            "fault suite: \(fleet.faults.count) faults in \(milliseconds(quietStart - faultStart) / 1000) s; quiet period \(FaultProfile.quiet)"
        )
        // An observation window, not a synchronisation: the monitor samples throughout.
        try await Task.sleep(for: FaultProfile.quiet)
        monitor.stop()
        await monitorTask.value

        let checker = FaultChecker(fleet: fleet, monitor: monitor, quietStart: quietStart, quietStartUs: quietStartUs)
        let summary = try await checker.run()
        let byKind = Dictionary(grouping: fleet.faults, by: \.kind).mapValues(\.count)
        let samples = monitor.samples
        faultLog(
            """
            ===== fault suite summary (seed \(seed)) =====
            faults: \(fleet.faults.count) — \(FaultKind.allCases.map { "\($0.rawValue) \(byKind[$0] ?? 0)" }.joined(separator: ", "))
            grants: \(summary.grants)
            writes: accepted \(summary.accepted), rejected \(summary.rejected) (writer had already logged its loss: \(summary.rejectedAfterWriterKnew); had not yet: \(summary.rejectedBeforeWriterKnew)); stale accepted on wake of a frozen member: \(summary.staleAcceptedOnWake)
            max leaderless gap: during faults \(summary.maxGapDuringFaults.map { "\($0.length) (\($0.job))" } ?? "none seen"), after faults \(summary.maxGapQuiet.map { "\($0.length) (\($0.job))" } ?? "none seen") (bound \(FaultChecker.leaderlessBound))
            monitor samples: \(samples.read) read, \(samples.unreadable) unreadable; proxy connections accepted: \(fleet.proxies.values.map(\.acceptedConnections).reduce(0, +))
            notes: \(fleet.notes.isEmpty ? "none" : fleet.notes.joined(separator: "; "))
            violations: \(fleet.violations.count)
            ==============================================
            """)
        #expect(fleet.violations.isEmpty, "seed \(seed): \(fleet.violations.joined(separator: "\n"))")
        #expect(byKind.count == FaultProfile.kinds.count, "not every fault kind was injected: \(byKind)")
        for member in fleet.currentMembers {
            member.signal(SIGTERM)
            #expect(try await member.waitForExit(within: .seconds(30)) == 0, "\(member.logTail(20))")
        }
    }
}

/// The proxy on its own: each mode does what the suite relies on.
@Suite(.timeLimit(.minutes(2)))
struct FaultProxyTests {
    @Test func passDelayDropAndBlackHole() async throws {
        signal(SIGPIPE, SIG_IGN)  // hiredis writes to connections the proxy resets
        let redis = try await RedisServerProcess()
        let proxy = try FaultProxy(targetPort: redis.port)
        func connection(_ timeout: Duration = .seconds(2)) -> RedisConnection {
            RedisConnection(
                configuration: RedisConfiguration(
                    endpoint: RedisEndpoint(address: .tcp(host: "127.0.0.1", port: proxy.port)),
                    connectTimeout: timeout, commandTimeout: timeout))
        }
        // pass
        let pass = connection()
        #expect(try await pass.send(["SET", "k", "v"]).isError == false)
        #expect(try await pass.send(["GET", "k"]).string == "v")

        // delay: a round trip takes at least twice the delay (one chunk each way).
        proxy.set(.delay(milliseconds: 150))
        let before = ContinuousClock.now
        #expect(try await pass.send(["GET", "k"]).string == "v")
        let roundTrip = ContinuousClock.now - before
        #expect(roundTrip >= .milliseconds(300), "round trip \(roundTrip)")
        proxy.set(.pass)

        // drop: the open connection fails; new ones fail too; after pass, a new one works.
        proxy.set(.drop)
        await #expect(throws: RedisError.self) { try await pass.send(["GET", "k"]) }
        await #expect(throws: RedisError.self) { try await connection().send(["GET", "k"]) }
        proxy.set(.pass)
        #expect(try await connection().send(["GET", "k"]).string == "v")

        // black hole: the client times out; the held command is executed once the path heals
        // (a timed-out call is an unknown outcome, not a failure).
        let victim = connection(.milliseconds(500))
        #expect(try await victim.send(["PING"]).string == "PONG")
        proxy.set(.blackHole)
        await #expect(throws: RedisError.self) { try await victim.send(["SET", "late", "1"]) }
        #expect(try await redis.command("EXISTS", "late").integer == 0)
        proxy.set(.pass)
        try await eventually("the held SET to arrive late", within: .seconds(10)) {
            try await redis.command("EXISTS", "late").integer == 1 ? true : nil
        }
        #expect(try await connection().send(["GET", "k"]).string == "v")
        proxy.stop()
    }
}
