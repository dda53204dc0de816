import Logging
import Synchronization

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// Built-in handler `shell`: runs a command (argv, no shell unless you write `sh -c`) under a
/// per-run supervisor process that kills the command's whole process group once the
/// validity it was last granted passes — even if this daemon is killed or stalls.
///
/// Config: `command` (list of strings, required), `env` (mapping), `cwd` (string),
/// `kill_grace` (duration, default 5s: SIGTERM, then SIGKILL after it). The command sees
/// `LEASEHOLD_JOB`, `LEASEHOLD_FENCING_TOKEN`, `LEASEHOLD_MEMBER`, `LEASEHOLD_INSTANCE`,
/// `LEASEHOLD_ATTEMPT` (1 for a first try), `LEASEHOLD_TRIGGER` (schedule, retry, manual) and,
/// for scheduled jobs, `LEASEHOLD_SCHEDULED_AT` (ms since the epoch). Its output lines go to
/// the daemon log tagged with the job; a non-zero exit fails the run.
public struct ShellHandler: JobHandler {
    /// `handler: shell`.
    public static let kind = "shell"
    /// The argv.
    public let command: [String]
    /// Extra environment.
    public let environment: [String: String]
    /// Working directory.
    public let workingDirectory: String?
    /// Time between SIGTERM and SIGKILL.
    public let killGrace: Duration
    private let clampWarning = OnceFlag()

    /// Reads the config section; every problem names its YAML location.
    public init(config: HandlerConfig) throws {
        try config.checkKeys(allowed: ["command", "env", "cwd", "kill_grace"], handler: Self.kind)
        let node = try config.required("command", handler: Self.kind)
        command = try config.stringList(node, key: "command")
        guard let first = command.first, !first.isEmpty else {
            throw ConfigError(
                location: node.location,
                message: "'command' must name a program, e.g. [\"/usr/local/bin/report\", \"--since\", \"24h\"]")
        }
        environment = try config.stringMap("env") ?? [:]
        workingDirectory = try config.string("cwd")
        killGrace = try config.duration("kill_grace") ?? .seconds(5)
    }

    /// Runs the command once; returns on exit 0, throws otherwise.
    public func run(_ context: LeaseContext) async throws {
        try context.checkLeadership()
        var env = environment
        env["LEASEHOLD_JOB"] = context.job
        env["LEASEHOLD_FENCING_TOKEN"] = String(context.token)
        env["LEASEHOLD_MEMBER"] = context.member
        env["LEASEHOLD_INSTANCE"] = context.instance
        env["LEASEHOLD_ATTEMPT"] = String(context.attempt)
        env["LEASEHOLD_TRIGGER"] = context.trigger.rawValue
        if let slot = context.scheduledAt {
            env["LEASEHOLD_SCHEDULED_AT"] = String(Int64((slot.timeIntervalSince1970 * 1000).rounded()))
        }
        // The supervisor sends SIGTERM at `deadline − kill_grace`. Right after a renewal the
        // deadline is only about one validity window ahead (about 2/3 of it just before the
        // next renewal), so a kill_grace that is not clearly shorter (the 5 s default with a
        // 2 s lease) SIGTERMs every run the moment it starts. Cap it at half the validity
        // left now; the run is still stopped by the deadline, just with a shorter grace.
        let window = context.validUntil - ContinuousClock.now
        let grace = window > .zero ? min(killGrace, window / 2) : killGrace
        if grace < killGrace, clampWarning.first() {
            context.logger.warning(
                "kill_grace is too long for this lease: using a shorter one",
                metadata: [
                    "kill_grace": "\(CatalogValue.text(killGrace))", "used": "\(CatalogValue.text(grace))",
                ])
        }
        let spec = ProcessSpec(command: command, environment: env, workingDirectory: workingDirectory, killGrace: grace)
        let logger = context.logger
        let process = try SupervisedProcess.spawn(spec, deadline: context.validUntil) { stream, line in
            switch stream {
            // The job's bytes, not ours: no CR, LF or escape sequence reaches the log as such.
            case .stdout: logger.info("\(LogText.escaped(line))", metadata: ["stream": "stdout"])
            case .stderr: logger.warning("\(LogText.escaped(line))", metadata: ["stream": "stderr"])
            }
        }
        // Keep feeding the supervisor the validity as renewals extend it; if this process
        // dies or stalls, the feed stops and the supervisor kills the group on its own.
        let outcome = await withDiscardingTaskGroup { group in
            group.addTask {
                while !Task.isCancelled {
                    // Not `validUntil`, which drops to now at any loss: the deadline must never
                    // shrink below the validity a step-down on the timer leaves.
                    process.extendDeadline(to: context.processDeadline)
                    try? await Task.sleep(for: .milliseconds(200))
                }
            }
            let outcome = await withTaskCancellationHandler {
                await process.waitForExit()
            } onCancel: {
                // Stopping: SIGTERM now, SIGKILL after kill_grace or at the deadline, whichever
                // comes first. The deadline is the validity left after a step-down on the timer
                // (the job gets its grace within it), but now when the lease was seen deleted or
                // taken: someone else may already lead, so the job is killed at once.
                process.extendDeadline(to: context.processDeadline)
                process.terminate()
            }
            group.cancelAll()
            return outcome
        }
        switch (outcome.status, outcome.cause) {
        case (.exited(0), .ownExit):
            return
        case (_, .ownExit):
            throw ShellRunError(command: command[0], outcome: outcome)
        default:
            if Task.isCancelled { throw CancellationError() }
            throw ShellRunError(command: command[0], outcome: outcome)
        }
    }
}

/// True the first time only (one warning per job, not per run).
private final class OnceFlag: Sendable {
    private let used = Mutex(false)
    func first() -> Bool {
        used.withLock { was in
            defer { was = true }
            return !was
        }
    }
}

/// A shell run that did not exit 0.
public struct ShellRunError: Error, Sendable, CustomStringConvertible {
    /// The program.
    public var command: String
    /// How it ended.
    public var outcome: ProcessOutcome

    /// One line for logs.
    public var description: String {
        let status: String
        switch outcome.status {
        case .exited(let code): status = "exited with status \(code)"
        case .signalled(let signal): status = "killed by signal \(signal)"
        case .unknown: status = "ended in an unknown way (its supervisor vanished)"
        }
        switch outcome.cause {
        case .ownExit: return "\(command) \(status)"
        case .deadlinePassed: return "\(command) \(status): its lease validity ran out"
        case .orphaned: return "\(command) \(status): the daemon went away"
        case .terminated: return "\(command) \(status) after being told to stop"
        case .supervisorLost: return "\(command) \(status)"
        }
    }
}
