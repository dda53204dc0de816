import Foundation
import Leasehold
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Collects output lines per stream; the reader thread appends, the test reads.
private final class Lines: Sendable {
    private let storage = Mutex<[(ProcessOutputStream, String)]>([])

    var sink: @Sendable (ProcessOutputStream, String) -> Void {
        { stream, line in self.storage.withLock { $0.append((stream, line)) } }
    }

    func of(_ stream: ProcessOutputStream) -> [String] {
        storage.withLock { $0.filter { $0.0 == stream }.map(\.1) }
    }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes (generous: never a tight bound).
private func eventually(
    timeout: Duration = .seconds(15), _ condition: () -> Bool
) async throws -> Bool {
    let end = ContinuousClock.now + timeout
    while ContinuousClock.now < end {
        if condition() { return true }
        try await Task.sleep(for: .milliseconds(20))
    }
    return condition()
}

/// True once `pid` is gone or a zombie (a zombie cannot run; reaping it is its parent's job).
private func isDead(_ pid: Int32) -> Bool {
    if kill(pid, 0) != 0 && errno == ESRCH { return true }
    let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
    guard let close = stat.lastIndex(of: ")") else { return true }
    return stat[stat.index(close, offsetBy: 2)] == "Z"
}

private let far = ContinuousClock.now + .seconds(3600)

private func spawn(
    _ command: [String], lines: Lines, deadline: ContinuousClock.Instant = far,
    grace: Duration = .seconds(10), environment: [String: String] = [:], cwd: String? = nil
) throws -> SupervisedProcess {
    try SupervisedProcess.spawn(
        ProcessSpec(command: command, environment: environment, workingDirectory: cwd, killGrace: grace),
        deadline: deadline, onOutputLine: lines.sink)
}

@Suite(.timeLimit(.minutes(2)))
struct ProcessSupervisorTests {
    @Test func exitCodePassesThrough() async throws {
        let process = try spawn(["sh", "-c", "exit 7"], lines: Lines())
        let outcome = await process.waitForExit()
        #expect(outcome == ProcessOutcome(status: .exited(7), cause: .ownExit, escalatedToKill: false))
    }

    @Test func outputLinesArriveInOrderPerStream() async throws {
        let lines = Lines()
        let script = "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done; printf tail"
        let outcome = try await spawn(["sh", "-c", script], lines: lines).waitForExit()
        #expect(outcome.status == .exited(0))
        // Delivered before waitForExit returns, unterminated last line included.
        #expect(lines.of(.stdout) == ["out1", "out2", "out3", "out4", "out5", "tail"])
        #expect(lines.of(.stderr) == ["err1", "err2", "err3", "err4", "err5"])
    }

    @Test func environmentAndWorkingDirectoryAreApplied() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lh-proc-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let lines = Lines()
        let process = try spawn(
            ["sh", "-c", "echo \"$LEASEHOLD_JOB|$LEASEHOLD_FENCING_TOKEN|$EXTRA\"; pwd -P"], lines: lines,
            environment: ["LEASEHOLD_JOB": "backup", "LEASEHOLD_FENCING_TOKEN": "42", "EXTRA": "a b"],
            cwd: dir.path)
        #expect(await process.waitForExit().status == .exited(0))
        let real = URL(fileURLWithPath: dir.path).resolvingSymlinksInPath().path
        #expect(lines.of(.stdout) == ["backup|42|a b", real])
    }

    @Test func daemonEnvironmentIsInheritedUnlessOverridden() async throws {
        let lines = Lines()
        let process = try spawn(["sh", "-c", "echo \"$PATH\""], lines: lines, environment: [:])
        _ = await process.waitForExit()
        #expect(lines.of(.stdout) == [ProcessInfo.processInfo.environment["PATH"] ?? ""])
    }

    @Test func missingCommandIsAClearError() throws {
        let error = #expect(throws: ProcessSpawnError.self) {
            try spawn(["leasehold-no-such-command-xyz", "arg"], lines: Lines())
        }
        #expect(error?.kind == .commandNotFound)
        #expect(error?.description == "command not found in PATH: leasehold-no-such-command-xyz")
        let byPath = #expect(throws: ProcessSpawnError.self) { try spawn(["/nonexistent/tool"], lines: Lines()) }
        #expect(byPath?.kind == .commandNotFound)
    }

    @Test func nonExecutableAndMissingDirectoryAreClearErrors() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("lh-noexec-\(UUID().uuidString)")
        try "echo hi\n".write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let notExec = #expect(throws: ProcessSpawnError.self) { try spawn([file.path], lines: Lines()) }
        #expect(notExec?.kind == .notExecutable)
        let noDir = #expect(throws: ProcessSpawnError.self) {
            try spawn(["true"], lines: Lines(), cwd: "/nonexistent/leasehold-dir")
        }
        #expect(noDir?.kind == .workingDirectoryMissing)
        #expect(noDir?.description == "working directory does not exist: /nonexistent/leasehold-dir")
        let empty = #expect(throws: ProcessSpawnError.self) { try spawn([], lines: Lines()) }
        #expect(empty?.kind == .invalidSpec)
    }

    @Test func processGroupsAreSeparate() async throws {
        let lines = Lines()
        let process = try spawn(["sh", "-c", "echo ready; sleep 60"], lines: lines)
        #expect(try await eventually { lines.of(.stdout) == ["ready"] })
        // Job leads its own group; the supervisor leads another; neither is ours.
        #expect(getpgid(process.processGroupID) == process.processGroupID)
        #expect(getpgid(process.supervisorPID) == process.supervisorPID)
        #expect(process.processGroupID != getpgrp())
        #expect(process.supervisorPID != getpgrp())
        process.terminate()
        #expect(await process.waitForExit().cause == .terminated)
    }

    @Test func terminateSendsSIGTERMThatAJobCanHandle() async throws {
        let lines = Lines()
        let script = "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.1; done"
        let process = try spawn(["sh", "-c", script], lines: lines, grace: .seconds(30))
        #expect(try await eventually { lines.of(.stdout).contains("ready") })
        process.terminate()
        let outcome = await process.waitForExit()
        #expect(outcome == ProcessOutcome(status: .exited(3), cause: .terminated, escalatedToKill: false))
        #expect(lines.of(.stdout) == ["ready", "got-term"])
    }

    @Test func jobIgnoringSIGTERMIsKilledAfterGrace() async throws {
        let lines = Lines()
        let process = try spawn(
            ["sh", "-c", "trap '' TERM; echo ready; sleep 60"], lines: lines, grace: .milliseconds(500))
        #expect(try await eventually { lines.of(.stdout) == ["ready"] })
        let start = ContinuousClock.now
        process.terminate()
        let outcome = await process.waitForExit()
        let elapsed = ContinuousClock.now - start
        #expect(outcome == ProcessOutcome(status: .signalled(SIGKILL), cause: .terminated, escalatedToKill: true))
        #expect(elapsed >= .milliseconds(400))  // the grace was given
        #expect(elapsed < .seconds(20))
    }

    @Test func grandchildIsKilledOnTerminate() async throws {
        let lines = Lines()
        let process = try spawn(["sh", "-c", "sleep 60 & echo $!; wait"], lines: lines, grace: .seconds(5))
        #expect(try await eventually { lines.of(.stdout).count == 1 })
        let grandchild = try #require(Int32(lines.of(.stdout)[0]))
        #expect(!isDead(grandchild))
        process.terminate()
        let outcome = await process.waitForExit()
        #expect(outcome.cause == .terminated)
        #expect(try await eventually { isDead(grandchild) })
    }

    @Test func leftoverGrandchildIsKilledWhenTheJobExitsByItself() async throws {
        let lines = Lines()
        let process = try spawn(["sh", "-c", "sleep 60 & echo $!"], lines: lines)
        let outcome = await process.waitForExit()
        #expect(outcome == ProcessOutcome(status: .exited(0), cause: .ownExit, escalatedToKill: false))
        let grandchild = try #require(Int32(lines.of(.stdout).first ?? ""))
        #expect(try await eventually { isDead(grandchild) })
    }

    @Test func deadlineWithoutExtensionKillsTheGroup() async throws {
        let lines = Lines()
        let start = ContinuousClock.now
        let process = try spawn(
            ["sh", "-c", "echo $$; sleep 60"], lines: lines,
            deadline: start + .seconds(1), grace: .milliseconds(300))
        let outcome = await process.waitForExit()
        let elapsed = ContinuousClock.now - start
        #expect(outcome.cause == .deadlinePassed)
        #expect(outcome.status == .signalled(SIGTERM))
        #expect(elapsed >= .milliseconds(600))  // SIGTERM goes out `grace` before the deadline
        #expect(elapsed < .seconds(20))
        #expect(isDead(process.processGroupID))
    }

    @Test func deadlineKillsByTheDeadlineEvenIfSIGTERMIsIgnored() async throws {
        let lines = Lines()
        let start = ContinuousClock.now
        let process = try spawn(
            ["sh", "-c", "trap '' TERM; sleep 60"], lines: lines,
            deadline: start + .seconds(2), grace: .seconds(1))
        let outcome = await process.waitForExit()
        #expect(outcome == ProcessOutcome(status: .signalled(SIGKILL), cause: .deadlinePassed, escalatedToKill: true))
        #expect(ContinuousClock.now - start >= .milliseconds(1900))
    }

    @Test func extendingTheDeadlineKeepsTheJobAlive() async throws {
        let lines = Lines()
        let process = try spawn(
            ["sleep", "60"], lines: lines, deadline: .now + .seconds(2), grace: .milliseconds(200))
        let until = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < until {
            // Each extension reaches 10 s ahead while we feed every 200 ms: a machine loaded by
            // parallel builds has delayed a feed by over 2 s, which must not fail the test.
            process.extendDeadline(to: .now + .seconds(10))
            try await Task.sleep(for: .milliseconds(200))
        }
        // Well past the original deadline, it still runs.
        #expect(process.outcome == nil)
        #expect(kill(process.processGroupID, 0) == 0)
        process.terminate()
        #expect(await process.waitForExit().cause == .terminated)
    }

    @Test func closingTheFeedOrphansAndKillsTheGroup() async throws {
        let lines = Lines()
        let process = try spawn(["sh", "-c", "echo ready; sleep 60"], lines: lines, grace: .seconds(1))
        #expect(try await eventually { lines.of(.stdout) == ["ready"] })
        let start = ContinuousClock.now
        process.abandon()
        let outcome = await process.waitForExit()
        #expect(outcome.cause == .orphaned)
        #expect(outcome.status == .signalled(SIGTERM))
        #expect(ContinuousClock.now - start < .seconds(20))
        #expect(isDead(process.processGroupID))
    }

    @Test func anotherSupervisorDoesNotKeepAFeedOpen() async throws {
        // Supervisors fork without exec; if B inherited A's feed end, A would never see EOF.
        let first = try spawn(["sleep", "60"], lines: Lines())
        let second = try spawn(["sleep", "60"], lines: Lines())
        first.abandon()
        #expect(await first.waitForExit().cause == .orphaned)
        #expect(second.outcome == nil)
        second.terminate()
        #expect(await second.waitForExit().cause == .terminated)
    }

    @Test func sigtermToTheSupervisorStopsTheJobGracefully() async throws {
        let lines = Lines()
        let process = try spawn(["sh", "-c", "echo ready; sleep 60"], lines: lines)
        #expect(try await eventually { lines.of(.stdout) == ["ready"] })
        #expect(kill(process.supervisorPID, SIGTERM) == 0)
        let outcome = await process.waitForExit()
        #expect(outcome == ProcessOutcome(status: .signalled(SIGTERM), cause: .terminated, escalatedToKill: false))
    }

    @Test func killedSupervisorMakesTheDaemonKillTheGroup() async throws {
        let lines = Lines()
        let process = try spawn(["sh", "-c", "echo ready; sleep 60"], lines: lines)
        #expect(try await eventually { lines.of(.stdout) == ["ready"] })
        #expect(kill(process.supervisorPID, SIGKILL) == 0)
        let outcome = await process.waitForExit()
        #expect(outcome.cause == .supervisorLost)
        #expect(try await eventually { isDead(process.processGroupID) })
    }
}
