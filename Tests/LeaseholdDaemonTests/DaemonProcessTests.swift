import Foundation
import Leasehold
import LeaseholdTesting
import RedisClient
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Real `leaseholdd` processes against a private `redis-server` per test: the failure modes of
/// Docs/PROTOCOL.md §7 (edge cases) end to end. Every test has its own server and namespace, so they run in
/// parallel; timings are measured and printed, bounds are generous (shared, loaded CI cores).
@Suite(.timeLimit(.minutes(2)))
struct DaemonProcessTests {
    static let ttl = Duration.seconds(2)

    /// Which jobs each member believes it leads, folded from its leadership log lines.
    static func believedLeadership(_ daemon: DaemonProcess) -> [String: UInt64] {
        var leading: [String: UInt64] = [:]
        for line in daemon.lines {
            guard let job = line.job else { continue }
            switch line.message {
            case "acquired leadership": leading[job] = line.token
            case "lost leadership", "released leadership", "handed off leadership": leading[job] = nil
            default: break
            }
        }
        return leading
    }

    @Test func threeMembersLeadEachJobExactlyOnce() async throws {
        let jobs = ["alpha", "bravo", "charlie", "delta", "echo"]
        let fleet = try await DaemonFleet(
            catalog: """
                version: 1
                redis: { namespace: NAMESPACE }
                defaults: { lease: 2s, placement: spread }
                jobs:
                \(jobs.map { "  - { name: \($0), handler: log, schedule: { every: 1s } }" }.joined(separator: "\n"))
                """)
        let members = try ["m1", "m2", "m3"].map { try fleet.start($0) }
        let diagnostics = { members.map { $0.logTail(15) }.joined(separator: "\n") }

        // Placement may move jobs after start (first come, then the preferred member once it
        // has been live for the stability window, one lease): give it that time, then demand
        // that Redis and every member's own account agree, twice in a row a second apart.
        try await eventually("three live members", within: .seconds(20), diagnostics: diagnostics) {
            try await fleet.redis.command("ZCARD", fleet.keys.members).integer == 3 ? true : nil
        }
        let settled = ContinuousClock.now + Self.ttl * 3
        func agreedLeaders() async throws -> [String: LeaseValue]? {
            var holders: [String: LeaseValue] = [:]
            for job in jobs {
                guard let holder = try await fleet.holder(job) else { return nil }
                let believers = members.filter { Self.believedLeadership($0)[job] != nil }
                guard believers.map(\.name) == [holder.owner.member],
                    Self.believedLeadership(believers[0])[job] == holder.token
                else { return nil }
                holders[job] = holder
            }
            return holders
        }
        var previous: [String: LeaseValue]?
        let holders = try await eventually(
            "one agreed, stable leader per job", within: .seconds(40), every: .seconds(1), diagnostics: diagnostics
        ) {
            () async throws -> [String: LeaseValue]? in
            guard ContinuousClock.now >= settled, let current = try await agreedLeaders() else { return nil }
            defer { previous = current }
            return current == previous ? current : nil
        }
        print("three members: leaders \(holders.mapValues(\.owner.member).sorted { $0.key < $1.key })")
        // Rendezvous placement over fixed names is deterministic: the jobs are spread.
        #expect(Set(holders.values.map(\.owner.member)).count >= 2)
        for member in members { #expect(member.isRunning, "\(member.name) died:\n\(member.logTail())") }
    }

    @Test func killNineFailsOverWithinTheTTLWithALargerToken() async throws {
        let fleet = try await DaemonFleet(
            catalog: """
                version: 1
                redis: { namespace: NAMESPACE }
                defaults: { lease: 2s, placement: any, crash_release: false }
                jobs:
                  - { name: tick, handler: log, schedule: { every: 1s } }
                """)
        let members = try ["a", "b"].map { try fleet.start($0) }
        let first = try await eventually(
            "a leader", within: .seconds(20), diagnostics: { members.map { $0.logTail() }.joined() }
        ) {
            try await fleet.holder("tick")
        }
        let leader = try #require(members.first { $0.name == first.owner.member })
        let survivor = try #require(members.first { $0.name != first.owner.member })
        try await eventually("a run by the first leader", within: .seconds(20)) {
            try await fleet.runs("tick").contains { $0.member == first.owner.member } ? true : nil
        }

        let killedAt = ContinuousClock.now
        leader.signal(SIGKILL)
        #expect(try await leader.waitForExit() == 128 + SIGKILL)
        let next = try await eventually(
            "a new holder", within: Self.ttl + .seconds(10), every: .milliseconds(10),
            diagnostics: { survivor.logTail() }
        ) {
            () async throws -> LeaseValue? in
            guard let holder = try await fleet.holder("tick"), holder.owner.member == survivor.name else { return nil }
            return holder
        }
        let failover = ContinuousClock.now - killedAt
        let run = try await eventually(
            "a run by the survivor", within: .seconds(10), diagnostics: { survivor.logTail() }
        ) {
            try await fleet.runs("tick").first { $0.member == survivor.name }
        }
        let firstRun = ContinuousClock.now - killedAt
        print(
            "kill -9 failover: new holder after \(milliseconds(failover)) ms (TTL \(milliseconds(Self.ttl)) ms), first run after \(milliseconds(firstRun)) ms; token \(first.token) -> \(next.token)"
        )
        #expect(next.token > first.token)
        #expect(run.token == next.token)
        #expect(failover < Self.ttl + .seconds(5))
        // Without crash release (CrashReleaseTests has it on) the survivor took over an
        // expired lease, it was not handed one.
        let acquired = try await survivor.waitForLine("acquired leadership") {
            $0.message == "acquired leadership" && $0.job == "tick"
        }
        #expect(acquired.fields?["reason"] == "expired_takeover")
    }

    @Test func sigtermHandsOverWellUnderTheTTL() async throws {
        let fleet = try await DaemonFleet(
            catalog: """
                version: 1
                redis: { namespace: NAMESPACE }
                defaults: { lease: 2s, placement: any }
                jobs:
                  - { name: report, handler: log, schedule: { every: 1s } }
                """)
        let members = try ["a", "b"].map { try fleet.start($0) }
        let first = try await eventually(
            "a leader", within: .seconds(20), diagnostics: { members.map { $0.logTail() }.joined() }
        ) {
            try await fleet.holder("report")
        }
        let leader = try #require(members.first { $0.name == first.owner.member })
        let standby = try #require(members.first { $0.name != first.owner.member })
        // The standby must be up and waiting (it has seen the lease held) before the handover.
        try await eventually("both members registered", within: .seconds(20)) {
            try await fleet.redis.command("ZCARD", fleet.keys.members).integer == 2 ? true : nil
        }

        let termAt = ContinuousClock.now
        leader.signal(SIGTERM)
        let next = try await eventually(
            "the standby to hold the lease", within: .seconds(10), every: .milliseconds(5),
            diagnostics: { standby.logTail() + leader.logTail() }
        ) {
            () async throws -> LeaseValue? in
            guard let holder = try await fleet.holder("report"), holder.owner.member == standby.name else { return nil }
            return holder
        }
        let handover = ContinuousClock.now - termAt
        let code = try await leader.waitForExit()
        print(
            "SIGTERM handover: \(milliseconds(handover)) ms (TTL \(milliseconds(Self.ttl)) ms); token \(first.token) -> \(next.token)"
        )
        #expect(code == 0, "exit code \(code)\n\(leader.logTail())")
        #expect(handover < Self.ttl, "handover took \(handover): as long as a crash failover")
        #expect(next.token > first.token)
        #expect(leader.lines.contains { $0.message == "released leadership" && $0.job == "report" })
        let acquired = try await standby.waitForLine("acquired leadership") {
            $0.message == "acquired leadership" && $0.job == "report"
        }
        #expect(acquired.fields?["reason"] == "acquired")
    }

    @Test func everyScheduleKeepsItsRhythmAcrossAFailover() async throws {
        let fleet = try await DaemonFleet(
            catalog: """
                version: 1
                redis: { namespace: NAMESPACE }
                defaults: { lease: 2s, placement: any }
                jobs:
                  - { name: beat, handler: log, schedule: { every: 2s } }
                """)
        let members = try ["a", "b"].map { try fleet.start($0) }
        let diagnostics = { members.map { $0.logTail(20) }.joined(separator: "\n") }
        let first = try await eventually("three runs", within: .seconds(30), diagnostics: diagnostics) {
            () async throws -> LeaseValue? in
            guard try await fleet.runs("beat").count >= 3 else { return nil }
            return try await fleet.holder("beat")
        }
        let leader = try #require(members.first { $0.name == first.owner.member })
        let survivor = try #require(members.first { $0.name != first.owner.member })
        leader.signal(SIGKILL)
        _ = try await leader.waitForExit()
        try await eventually("three runs by the survivor", within: .seconds(30), diagnostics: diagnostics) {
            try await fleet.runs("beat").filter { $0.member == survivor.name }.count >= 3 ? true : nil
        }

        let runs = try await fleet.runs("beat")
        let slots = runs.compactMap(\.slot)
        #expect(slots.count == runs.count, "every scheduled run records its slot: \(runs)")
        #expect(Set(slots).count == slots.count, "a slot ran twice: \(runs)")
        #expect(zip(slots, slots.dropFirst()).allSatisfy { $0 < $1 }, "slots not strictly increasing: \(runs)")
        let gaps = zip(slots, slots.dropFirst()).map { $1 - $0 }
        // Each gap is whole intervals; only the one across the crash may coalesce missed slots.
        #expect(gaps.allSatisfy { $0 % 2000 == 0 }, "slots off the 2 s grid: \(gaps)")
        #expect(gaps.filter { $0 != 2000 }.count <= 1, "rhythm broken more than once: \(gaps)")
        let tokens = runs.compactMap(\.token)
        #expect(zip(tokens, tokens.dropFirst()).allSatisfy { $0 <= $1 }, "token went backwards: \(runs)")
        print("every 2s across kill -9: slot gaps (ms) \(gaps), members \(runs.compactMap(\.member))")
    }

    @Test func pausedShellLeaderIsKilledBeforeTheNewRunAndStaysFenced() async throws {
        // The command records pid (= its process group), token and member, and whether the
        // previous run's process group was still alive at the moment it started.
        let script = #"""
            prev=$(tail -n 1 DIR/worker.log 2>/dev/null | cut -d' ' -f1); st=first; \
            if [ -n "$prev" ]; then if /bin/kill -0 -- "-$prev" 2>/dev/null; then st=alive; else st=gone; fi; fi; \
            sleep 600 & echo "$$ $LEASEHOLD_FENCING_TOKEN $LEASEHOLD_MEMBER $st" >> DIR/worker.log; exec sleep 600
            """#.replacingOccurrences(of: "\\\n", with: "")
        let fleet = try await DaemonFleet(
            catalog: """
                version: 1
                redis: { namespace: NAMESPACE }
                defaults: { lease: 2s, placement: any }
                jobs:
                  - name: worker
                    handler: shell
                    schedule: continuous
                    config:
                      kill_grace: 300ms
                      command: ["sh", "-c", \(Self.yamlQuoted(script))]
                """)
        let members = try ["a", "b"].map { try fleet.start($0) }
        let diagnostics = { members.map { $0.logTail(20) }.joined(separator: "\n") }
        defer { for member in members { member.signal(SIGCONT) } }
        func runLines() -> [[String]] {
            (fleet.directory.read("worker.log") ?? "").split(separator: "\n").map {
                $0.split(separator: " ").map(String.init)
            }
        }
        let firstRun = try await eventually("the first run", within: .seconds(20), diagnostics: diagnostics) {
            runLines().first
        }
        let oldPgid = try #require(Int32(firstRun[0]))
        let oldToken = try #require(UInt64(firstRun[1]))
        let leader = try #require(members.first { $0.name == firstRun[2] })
        let standby = try #require(members.first { $0.name != firstRun[2] })
        #expect(processGroupAlive(oldPgid))
        let oldLease = try #require(try await fleet.holder("worker"))
        #expect(oldLease.token == oldToken && oldLease.owner.member == leader.name)

        let stoppedAt = ContinuousClock.now
        leader.signal(SIGSTOP)
        var groupGoneAfter: Duration?
        let secondRun = try await eventually(
            "the standby's run", within: Self.ttl + .seconds(15), every: .milliseconds(10), diagnostics: diagnostics
        ) {
            () -> [String]? in
            if groupGoneAfter == nil, !processGroupAlive(oldPgid) { groupGoneAfter = ContinuousClock.now - stoppedAt }
            return runLines().first { $0.count == 4 && $0[2] == standby.name }
        }
        let newRunAfter = ContinuousClock.now - stoppedAt
        #expect(
            secondRun[3] == "gone",
            "the paused leader's process group was still alive when the new run started: \(secondRun)")
        #expect(!processGroupAlive(oldPgid))
        let newToken = try #require(UInt64(secondRun[1]))
        #expect(newToken > oldToken)
        print(
            "SIGSTOP leader: old group gone after \(groupGoneAfter.map { "\(milliseconds($0)) ms" } ?? "? (seen only at the end)"), new run seen after \(milliseconds(newRunAfter)) ms (TTL \(milliseconds(Self.ttl)) ms)"
        )
        if let groupGoneAfter { #expect(groupGoneAfter <= newRunAfter) }

        // Wake the old leader: it must step down on its own clock and never act on its token.
        leader.signal(SIGCONT)
        try await leader.waitForLine("lost leadership after SIGCONT", within: .seconds(15)) {
            $0.message == "lost leadership" && $0.job == "worker" && $0.token == oldToken
        }
        let holder = try await fleet.holder("worker")
        #expect(holder?.owner.member == standby.name && holder?.token == newToken)
        // A write fenced with the stale token is refused by Redis.
        let refused = try await fleet.redis.command(
            "EVAL", LeaseScripts.fencedSet.source, "2", fleet.keys.lease("worker"), "\(fleet.namespace):resource",
            oldLease.description, "stale")
        #expect(refused.integer == 0, "stale fenced write was accepted: \(refused)")
        #expect(
            runLines().filter { $0.count == 4 && $0[2] == leader.name }.count == 1,
            "the woken member ran again: \(runLines())")
        #expect(leader.isRunning, "\(leader.logTail())")
    }

    @Test func onLostLeadershipExitExitsWithCode3() async throws {
        let fleet = try await DaemonFleet(
            catalog: """
                version: 1
                redis: { namespace: NAMESPACE }
                defaults: { lease: 2s, placement: any }
                jobs:
                  - name: strict
                    handler: shell
                    schedule: continuous
                    on_lost_leadership: exit
                    config: { command: ["sleep", "600"], kill_grace: 300ms }
                """)
        let member = try fleet.start("solo")
        let acquired = try await member.waitForLine("acquired leadership") {
            $0.message == "acquired leadership" && $0.job == "strict"
        }
        // Let the handler start, then take the lease away behind the member's back (as an
        // expiry plus another member's acquire would): its next renewal finds it gone.
        try await eventually("the run to start", within: .seconds(10)) {
            try await fleet.runs("strict").isEmpty ? nil : true
        }
        _ = try await fleet.redis.command(
            "SET", fleet.keys.lease("strict"), "intruder@x:\((acquired.token ?? 0) + 1_000_000)", "PX", "60000")
        let code = try await member.waitForExit(within: .seconds(20))
        #expect(code == 3, "exit code \(code)\n\(member.logTail())")
        #expect(member.lines.contains { $0.message == "lost leadership" && $0.job == "strict" })
    }

    @Test func shellJobWithDefaultKillGraceSurvivesAShortLease() async throws {
        // kill_grace defaults to 5 s, longer than a 2 s lease's validity: the run must still
        // live on across renewals instead of being SIGTERMed as it starts.
        let fleet = try await DaemonFleet(
            catalog: """
                version: 1
                redis: { namespace: NAMESPACE }
                defaults: { lease: 2s }
                jobs:
                  - name: long
                    handler: shell
                    schedule: continuous
                    config: { command: ["sh", "-c", "echo $$ >> DIR/long.log; exec sleep 600"] }
                """)
        let member = try fleet.start("only")
        let pid = try await eventually("the run to start", within: .seconds(20), diagnostics: { member.logTail() }) {
            fleet.directory.read("long.log").flatMap { Int32($0.split(separator: "\n").first ?? "") }
        }
        // Several renewals later the same run is still alive and was never restarted.
        let until = ContinuousClock.now + Self.ttl * 2
        while ContinuousClock.now < until {
            #expect(processGroupAlive(pid), "the run died:\n\(member.logTail())")
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(
            fleet.directory.read("long.log")?.split(separator: "\n").count == 1,
            "the run was restarted:\n\(member.logTail())")
        member.signal(SIGTERM)
        #expect(try await member.waitForExit() == 0)
        #expect(!processGroupAlive(pid), "SIGTERM left the job's process group behind")
    }

    // MARK: - Bad input and Redis trouble

    @Test func brokenCatalogExits2WithLocatedErrorAndNoRedisTraffic() async throws {
        let redis = try await RedisServerProcess()
        let directory = try TempDirectory()
        let path = try directory.write(
            "broken.yaml",
            """
            version: 1
            jobs:
              - name: a
                handler: log
                schedule: { every: 1s }
                lease: 2 parsecs
            """)
        let connectionsBefore = try await Self.connectionsReceived(redis)
        let daemon = try DaemonProcess(name: "broken", arguments: ["--config", path, "--redis", redis.url])
        let code = try await daemon.waitForExit()
        let lines = daemon.lines.map(\.raw).filter { !$0.isEmpty }
        #expect(code == 2, "exit code \(code): \(lines)")
        #expect(
            lines.contains {
                $0.contains("broken.yaml:6:")
                    && $0.range(of: #"broken\.yaml:6:\d+: "#, options: .regularExpression) != nil
            },
            "no located error: \(lines)")
        // One connection more: our own INFO call, none from the daemon.
        #expect(try await Self.connectionsReceived(redis) == connectionsBefore + 1)
    }

    @Test func badRedisURLExits2WithOneLine() async throws {
        let directory = try TempDirectory()
        let path = try directory.write(
            "jobs.yaml",
            """
            version: 1
            jobs:
              - { name: a, handler: log, schedule: { every: 1s } }
            """)
        let daemon = try DaemonProcess(name: "badurl", arguments: ["--config", path, "--redis", "http://127.0.0.1:1"])
        let code = try await daemon.waitForExit()
        let lines = daemon.lines.map(\.raw).filter { !$0.isEmpty }
        #expect(code == 2)
        #expect(lines.count == 1, "expected one line: \(lines)")
        #expect(lines.first?.contains("invalid Redis URL") == true, "\(lines)")
    }

    @Test func unreachableRedisLogsOnceKeepsRetryingThenAcquires() async throws {
        let fleet = try await DaemonFleet(
            catalog: """
                version: 1
                redis: { namespace: NAMESPACE }
                defaults: { lease: 2s }
                jobs:
                  - { name: later, handler: log, schedule: { every: 1s } }
                """)
        // Keep the port (and nothing listening on it) for the first part of the test.
        await fleet.redis.stop()
        let member = try fleet.start("patient")
        try await member.waitForLine("redis unreachable") { $0.message?.hasPrefix("redis unreachable") == true }
        // An observation window: it must keep retrying quietly, not crash or log per retry.
        let window = ContinuousClock.now + .seconds(4)
        while ContinuousClock.now < window {
            #expect(member.isRunning, "\(member.logTail())")
            try await Task.sleep(for: .milliseconds(200))
        }
        let unreachableLines = member.lines.filter { $0.message?.hasPrefix("redis unreachable") == true }
        #expect(unreachableLines.count == 1, "logged per retry: \(unreachableLines)")
        let errors = member.lines.filter { $0.level == "error" || $0.level == "critical" }
        #expect(errors.count <= 2, "noisy errors while Redis is down: \(errors)")

        try await fleet.redis.restart()
        try await member.waitForLine("redis reachable", within: .seconds(20)) { $0.message == "redis reachable" }
        try await member.waitForLine("acquired leadership", within: .seconds(20)) {
            $0.message == "acquired leadership" && $0.job == "later"
        }
        #expect(try await fleet.holder("later")?.owner.member == "patient")
    }

    @Test func jsonLogsAndHTTPEndpoints() async throws {
        let fleet = try await DaemonFleet(
            catalog: """
                version: 1
                redis: { namespace: NAMESPACE }
                defaults: { lease: 2s }
                jobs:
                  - { name: solo-job, handler: log, schedule: { every: 1s } }
                """)
        let port = FreePort.next()
        let member = try fleet.start("web", extra: ["--http", "127.0.0.1:\(port)"])
        try await member.waitForLine("acquired leadership") { $0.message == "acquired leadership" }

        let health = try await eventually("/healthz", within: .seconds(10), diagnostics: { member.logTail() }) {
            httpGet(port: port, path: "/healthz")
        }
        #expect(health.status == 200)
        let ready = try await eventually("/readyz 200", within: .seconds(10)) { () -> HTTPResult? in
            let result = httpGet(port: port, path: "/readyz")
            return result?.status == 200 ? result : nil
        }
        #expect(ready.body.contains("ready"))
        let metrics = try await eventually("leader gauge in /metrics", within: .seconds(10)) { () -> String? in
            guard let result = httpGet(port: port, path: "/metrics"), result.status == 200,
                result.body.contains(#"leasehold_leader{job="solo-job"} 1"#)
            else { return nil }
            return result.body
        }
        #expect(metrics.contains("# TYPE leasehold_leader gauge"))

        // Redis gone: not ready any more (the process itself stays healthy).
        await fleet.redis.kill()
        try await eventually("/readyz 503", within: .seconds(15)) {
            httpGet(port: port, path: "/readyz")?.status == 503 ? true : nil
        }
        #expect(httpGet(port: port, path: "/healthz")?.status == 200)

        member.signal(SIGTERM)
        #expect(try await member.waitForExit() == 0)
        // Every stderr line is one JSON object with level and message; leadership lines
        // carry job and token.
        for line in member.lines where !line.raw.isEmpty {
            #expect(line.fields != nil, "not JSON: \(line.raw)")
            #expect(line.level != nil && line.message != nil, "no level/message: \(line.raw)")
            if let message = line.message, message.contains("leadership"), !message.contains("handing") {
                #expect(line.job != nil && line.token != nil, "leadership line without job/token: \(line.raw)")
            }
        }
    }

    // MARK: - Helpers

    static func yamlQuoted(_ text: String) -> String {
        "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }

    static func connectionsReceived(_ redis: RedisServerProcess) async throws -> Int {
        let info = try await redis.command("INFO", "stats").string ?? ""
        let line = info.split(whereSeparator: \.isNewline).first { $0.hasPrefix("total_connections_received:") }
        return line.flatMap { Int($0.split(separator: ":")[1]) } ?? -1
    }
}
