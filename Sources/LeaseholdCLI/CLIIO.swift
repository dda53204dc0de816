import Foundation
import Leasehold
import RedisClient
import Synchronization

/// Where a CLI run reads and writes: the real terminal, or a capture in tests.
package struct CLIIO: Sendable {
    /// Writes text to standard output exactly as given (callers add the newlines).
    package var out: @Sendable (String) -> Void
    /// Writes text to standard error exactly as given.
    package var err: @Sendable (String) -> Void
    /// The environment (`LEASEHOLD_REDIS_URL`).
    package var environment: [String: String]
    /// Whether standard output is a terminal.
    package var stdoutIsTerminal: Bool
    /// Whether standard input is a terminal (confirmation prompts need one).
    package var stdinIsTerminal: Bool
    /// Reads one line of standard input (confirmation answers); nil at end of input.
    package var readLine: @Sendable () -> String?

    /// Creates an IO description.
    package init(
        out: @escaping @Sendable (String) -> Void, err: @escaping @Sendable (String) -> Void,
        environment: [String: String] = [:], stdoutIsTerminal: Bool = false, stdinIsTerminal: Bool = false,
        readLine: @escaping @Sendable () -> String? = { nil }
    ) {
        self.out = out
        self.err = err
        self.environment = environment
        self.stdoutIsTerminal = stdoutIsTerminal
        self.stdinIsTerminal = stdinIsTerminal
        self.readLine = readLine
    }

    /// The process's real standard streams and environment.
    package static var standard: CLIIO {
        CLIIO(
            out: { text in FileHandle.standardOutput.write(Data(text.utf8)) },
            err: { text in FileHandle.standardError.write(Data(text.utf8)) },
            environment: ProcessInfo.processInfo.environment,
            stdoutIsTerminal: isatty(1) != 0,
            stdinIsTerminal: isatty(0) != 0,
            readLine: { Swift.readLine(strippingNewline: true) })
    }
}

/// Collects everything a CLI run writes (for tests and embedding).
package final class CLICapture: Sendable {
    private let state = Mutex<(out: String, err: String)>(("", ""))

    /// Creates an empty capture.
    package init() {}

    /// Everything written to standard output so far.
    package var stdout: String { state.withLock { $0.out } }
    /// Everything written to standard error so far.
    package var stderr: String { state.withLock { $0.err } }

    /// An IO that writes into this capture.
    package func io(
        environment: [String: String] = [:], stdinIsTerminal: Bool = false,
        readLine: @escaping @Sendable () -> String? = { nil }
    ) -> CLIIO {
        CLIIO(
            out: { text in self.state.withLock { $0.out += text } },
            err: { text in self.state.withLock { $0.err += text } },
            environment: environment, stdoutIsTerminal: false, stdinIsTerminal: stdinIsTerminal, readLine: readLine)
    }
}

/// The CLI's exit codes.
package enum CLIExitCode {
    /// Success.
    package static let ok: Int32 = 0
    /// A runtime failure: Redis unreachable, the job has no leader, ...
    package static let failure: Int32 = 1
    /// A usage or configuration error: bad flags, an invalid catalog, a refused confirmation.
    package static let usage: Int32 = 2
}

/// A failure that ends a command: an exit code and the lines printed on stderr.
package struct CLIFailure: Error, Sendable, CustomStringConvertible {
    /// The exit code.
    package var code: Int32
    /// The lines printed on stderr.
    package var lines: [String]

    /// Creates a failure.
    package init(code: Int32, lines: [String]) {
        self.code = code
        self.lines = lines
    }

    /// A runtime failure (exit 1) with one `leasehold: ...` line.
    package static func runtime(_ message: String) -> CLIFailure {
        CLIFailure(code: CLIExitCode.failure, lines: ["leasehold: " + message])
    }

    /// A usage or configuration failure (exit 2) with one `leasehold: ...` line.
    package static func usage(_ message: String) -> CLIFailure {
        CLIFailure(code: CLIExitCode.usage, lines: ["leasehold: " + message])
    }

    /// The lines joined.
    package var description: String { lines.joined(separator: "\n") }

    /// The one line for a Redis error. The endpoint's description never shows a password.
    package static func redis(_ error: RedisError, endpoint: RedisEndpoint) -> CLIFailure {
        let hint = "(set --redis or \(RedisURLSetting.environmentVariable))"
        let line: String
        switch error.kind {
        case .connectionRefused:
            line = "cannot reach Redis at \(endpoint): connection refused — is redis-server running? \(hint)"
        case .unreachable, .unavailable, .connectionClosed:
            line = "cannot reach Redis at \(endpoint): \(reason(error.message)) \(hint)"
        case .timeout:
            line = "Redis at \(endpoint) did not answer in time: \(reason(error.message)) \(hint)"
        default:
            line = oneLine(error.message)
        }
        return .runtime(line)
    }

    /// The client's message without its trailing hint (the CLI gives its own).
    private static func reason(_ message: String) -> String {
        var text = oneLine(message)
        if let dash = text.range(of: " — ") { text = String(text[..<dash.lowerBound]) }
        return text
    }

    static func oneLine(_ text: String) -> String {
        text.split(whereSeparator: \.isNewline).joined(separator: " ")
    }
}
