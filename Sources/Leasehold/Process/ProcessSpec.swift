/// What to run for one shell-job run: argv (no shell), extra environment, directory, grace.
public struct ProcessSpec: Sendable, Hashable {
    /// argv; `command[0]` is looked up in `PATH` unless it contains a `/`. No shell is involved.
    public var command: [String]
    /// Variables added to (or overriding) the daemon's environment, e.g. `LEASEHOLD_JOB`.
    public var environment: [String: String]
    /// Directory the job starts in; `nil` keeps the daemon's current directory.
    public var workingDirectory: String?
    /// Time between SIGTERM and SIGKILL of the job's process group.
    public var killGrace: Duration
    /// Variables of the daemon's environment the job does not inherit (`environment` may still
    /// set them explicitly).
    public var withheldEnvironment: Set<String>

    /// The variables the daemon and the CLI read their own settings from. They may carry the
    /// Redis password, so no job inherits them by default.
    public static let daemonSettingsVariables: Set<String> = ["LEASEHOLD_REDIS_URL", "LEASEHOLD_REDIS_PASSWORD_FILE"]

    /// Creates a spec; the defaults match the `shell` handler's defaults.
    public init(
        command: [String],
        environment: [String: String] = [:],
        workingDirectory: String? = nil,
        killGrace: Duration = .seconds(10),
        withheldEnvironment: Set<String> = ProcessSpec.daemonSettingsVariables
    ) {
        self.command = command
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.killGrace = killGrace
        self.withheldEnvironment = withheldEnvironment
    }
}

/// How the job's leader process ended (what `waitpid` said).
public enum ProcessEndReason: Sendable, Hashable {
    /// Exited with this code.
    case exited(Int32)
    /// Killed by this signal number.
    case signalled(Int32)
    /// Unknown: the supervisor vanished before reporting (the daemon then SIGKILLed the group itself).
    case unknown
}

/// Why the run ended: on its own, or which trigger made the supervisor stop it.
public enum ProcessEndCause: Sendable, Hashable {
    /// The job's leader exited by itself (leftovers of its group are SIGKILLed).
    case ownExit
    /// The granted deadline passed without an extension (e.g. the daemon stalled).
    case deadlinePassed
    /// The daemon's end of the feed closed (daemon died, or `abandon()`).
    case orphaned
    /// `terminate()` was called (or the supervisor itself received SIGTERM).
    case terminated
    /// The supervisor died without reporting; the daemon SIGKILLed the group as a fallback.
    case supervisorLost
}

/// The result of one supervised run.
public struct ProcessOutcome: Sendable, Hashable {
    /// How the job's leader ended.
    public var status: ProcessEndReason
    /// Why it ended.
    public var cause: ProcessEndCause
    /// True when the group outlived SIGTERM + grace (or the deadline) and had to be SIGKILLed.
    public var escalatedToKill: Bool

    /// Creates an outcome (public for handlers and tests that fake runs).
    public init(status: ProcessEndReason, cause: ProcessEndCause, escalatedToKill: Bool) {
        self.status = status
        self.cause = cause
        self.escalatedToKill = escalatedToKill
    }
}

/// Which output stream a line came from.
public enum ProcessOutputStream: Sendable, Hashable {
    /// The job's standard output.
    case stdout
    /// The job's standard error.
    case stderr
}

/// Why a job could not be started; `description` is one line fit for the daemon log.
public struct ProcessSpawnError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The broad category, for callers that react differently (e.g. config error vs transient).
    ///
    /// A struct rather than an enum so that a new kind is not a breaking change: compare with
    /// `==` or match with `case .commandNotFound:`, and keep a `default:` branch.
    public struct Kind: Sendable, Hashable, CustomStringConvertible {
        private enum Code: String, Sendable, Hashable {
            case invalidSpec, commandNotFound, notExecutable, workingDirectoryMissing, systemError
        }

        private let code: Code
        private init(_ code: Code) { self.code = code }

        /// The spec cannot be run as given (empty command, NUL byte, `=` in a variable name).
        public static let invalidSpec = Kind(.invalidSpec)
        /// `command[0]` was not found (in `PATH`, or at the given path).
        public static let commandNotFound = Kind(.commandNotFound)
        /// Found, but not an executable regular file (or exec was refused).
        public static let notExecutable = Kind(.notExecutable)
        /// `workingDirectory` does not exist or is not a directory.
        public static let workingDirectoryMissing = Kind(.workingDirectoryMissing)
        /// The operating system refused (fork, pipes, descriptors...).
        public static let systemError = Kind(.systemError)

        /// The kind's name, e.g. `commandNotFound`.
        public var description: String { code.rawValue }
    }

    /// The category.
    public var kind: Kind
    /// The one-line message.
    public var message: String

    /// Creates an error.
    public init(kind: Kind, message: String) {
        self.kind = kind
        self.message = message
    }

    /// The one-line message.
    public var description: String { message }
}
