import Foundation
import LeaseholdElection
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Where the `leaseholdd` executable that tests and the bench start is.
public enum DaemonBinary {
    /// The `leaseholdd` to run: `$LEASEHOLDD_PATH`, else next to the running test bundle or
    /// bench (so the bench's release build finds the release daemon), else
    /// `<package>/.build/debug/leaseholdd`.
    ///
    /// `swift build --build-tests` builds it, and so does `swift test` (SwiftPM 6.3 builds every
    /// target of the package before testing: verified by deleting the binary and running
    /// `swift test --filter DaemonProcessTests`, which relinked it), so `make test` needs no extra step.
    public static func path(filePath: String = #filePath) throws -> String {
        var candidates: [String] = []
        if let override = ProcessInfo.processInfo.environment["LEASEHOLDD_PATH"] { candidates.append(override) }
        // The test runner lives in `.build/<triple>/debug/`; so do the package's executables.
        var bundleDirectory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<4 where !bundleDirectory.path.hasSuffix("/debug") && !bundleDirectory.path.hasSuffix("/release") {
            bundleDirectory.deleteLastPathComponent()
        }
        candidates.append(bundleDirectory.appendingPathComponent("leaseholdd").path)
        let packageRoot = URL(fileURLWithPath: filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        candidates.append(packageRoot.appendingPathComponent(".build/debug/leaseholdd").path)
        for candidate in candidates where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        throw TestSupportError(
            "leaseholdd not found (looked at \(candidates.joined(separator: ", "))): run `swift build` (or `make test`) before `swift test`"
        )
    }
}

/// One stderr line of a daemon started with `--log-format json`.
public struct DaemonLogLine: Sendable, CustomStringConvertible {
    /// The line as written.
    public var raw: String
    /// When it was read.
    public var at: ContinuousClock.Instant
    /// The parsed object, nil if the line is not JSON.
    public var fields: [String: String]?

    /// Parses `raw` (JSON or not).
    public init(raw: String, at: ContinuousClock.Instant) {
        self.raw = raw
        self.at = at
        if let data = raw.data(using: .utf8),
            let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
        {
            fields = object.mapValues { "\($0)" }
        }
    }

    /// The `message` field.
    public var message: String? { fields?["message"] }
    /// The `level` field.
    public var level: String? { fields?["level"] }
    /// The `job` field.
    public var job: String? { fields?["job"] }
    /// The `token` field, as a number.
    public var token: UInt64? { fields?["token"].flatMap { UInt64($0) } }
    /// The raw line.
    public var description: String { raw }
}

// MARK: - A leaseholdd process

/// A real `leaseholdd` child process: its stderr (and stdout) lines are collected so tests
/// can poll them; it is SIGKILLed on deinit if still running, so no test leaves one behind.
public final class DaemonProcess: Sendable {
    /// A label for failure messages (usually the member name).
    public let name: String
    /// Its process id.
    public let pid: Int32
    private let process: Process
    private let output = LockedLines<DaemonLogLine>()
    private let stdoutLines = LockedLines<String>()
    /// Output pipes not yet at EOF (the reader threads lag behind the exit a little).
    private let openPipes = PipeCount()

    /// Starts `leaseholdd arguments…` with extra `environment`; `executable` overrides
    /// ``DaemonBinary/path(filePath:)`` (the bench insists on its release build).
    public init(name: String, arguments: [String], environment: [String: String] = [:], executable: String? = nil)
        throws
    {
        self.name = name
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try executable ?? DaemonBinary.path())
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "LEASEHOLD_REDIS_URL")
        env.merge(environment) { $1 }
        process.environment = env
        process.standardInput = FileHandle.nullDevice
        let errPipe = Pipe()
        let outPipe = Pipe()
        process.standardError = errPipe
        process.standardOutput = outPipe
        try process.runWithDefaultSignalMask()
        self.process = process
        self.pid = process.processIdentifier
        Self.pump(errPipe.fileHandleForReading, atEOF: { [openPipes] in openPipes.closed() }) { [output] line in
            output.append(DaemonLogLine(raw: line, at: .now))
        }
        Self.pump(outPipe.fileHandleForReading, atEOF: { [openPipes] in openPipes.closed() }) { [stdoutLines] line in
            stdoutLines.append(line)
        }
    }

    /// Reads `handle` line by line on its own thread until EOF.
    private static func pump(
        _ handle: FileHandle, atEOF: @escaping @Sendable () -> Void, _ onLine: @escaping @Sendable (String) -> Void
    ) {
        Thread.detachNewThread {
            var pending = Data()
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                pending.append(chunk)
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    onLine(String(decoding: pending[pending.startIndex..<newline], as: UTF8.self))
                    pending.removeSubrange(pending.startIndex...newline)
                }
            }
            if !pending.isEmpty { onLine(String(decoding: pending, as: UTF8.self)) }
            atEOF()
        }
    }

    deinit {
        if process.isRunning {
            Glibc.kill(pid, SIGKILL)
            process.waitUntilExit()
        }
    }

    /// Every stderr line so far.
    public var lines: [DaemonLogLine] { output.all }
    /// Every stdout line so far.
    public var stdout: [String] { stdoutLines.all }

    /// The last lines, for failure messages.
    public func logTail(_ count: Int = 40) -> String {
        "--- \(name) (pid \(pid)) stderr tail ---\n" + lines.suffix(count).map(\.raw).joined(separator: "\n")
    }

    /// Whether it still runs.
    public var isRunning: Bool { process.isRunning }

    /// Sends `signal` to it.
    public func signal(_ signal: Int32) { Glibc.kill(pid, signal) }

    /// Waits for a stderr line matching `predicate` and returns it.
    @discardableResult
    public func waitForLine(
        _ what: String, within timeout: Duration = .seconds(20), where predicate: @escaping (DaemonLogLine) -> Bool
    ) async throws -> DaemonLogLine {
        try await eventually("\(name): \(what)", within: timeout, diagnostics: { self.logTail() }) {
            lines.first(where: predicate)
        }
    }

    /// Waits for the process to exit; returns its exit status (128 + n when killed by signal n).
    public func waitForExit(within timeout: Duration = .seconds(20)) async throws -> Int32 {
        try await eventually(
            "\(name) to exit", within: timeout, every: .milliseconds(10), diagnostics: { self.logTail() }
        ) {
            process.isRunning ? nil : true
        }
        // Its last lines may still be in the pipes. A grandchild that inherited them (a job's
        // supervisor outliving a killed daemon) can keep them open: wait briefly, not forever.
        _ = try? await eventually("\(name)'s output to drain", within: .seconds(2), every: .milliseconds(5)) {
            openPipes.allClosed
        }
        switch process.terminationReason {
        case .exit: return process.terminationStatus
        case .uncaughtSignal: return 128 + process.terminationStatus
        @unknown default: return process.terminationStatus
        }
    }

    /// Graceful stop as an init system does it: SIGTERM, wait up to `timeout`, then SIGKILL.
    /// Returns the exit status, nil when it had to be killed.
    @discardableResult
    public func stop(within timeout: Duration = .seconds(20)) async -> Int32? {
        signal(SIGTERM)
        if let status = try? await waitForExit(within: timeout) { return status }
        signal(SIGKILL)
        process.waitUntilExit()
        return nil
    }
}

/// How many of a process's output pipes are still open (a box, so the reader threads do not
/// keep the process object, whose deinit kills a leftover daemon, alive).
final class PipeCount: Sendable {
    private let open = Atomic<Int>(2)
    func closed() { open.subtract(1, ordering: .sequentiallyConsistent) }
    var allClosed: Bool { open.load(ordering: .sequentiallyConsistent) <= 0 }
}

/// Lines appended by a reader thread and read by the test.
final class LockedLines<Line: Sendable>: Sendable {
    private let storage = Mutex<[Line]>([])
    func append(_ line: Line) { storage.withLock { $0.append(line) } }
    var all: [Line] { storage.withLock { $0 } }
}

// MARK: - Temporary files

/// A temporary directory removed on deinit; holds catalogs and handler output files.
public final class TempDirectory: Sendable {
    /// Its path.
    public let path: String

    /// Creates a fresh directory under /tmp.
    public init() throws {
        var template = Array("/tmp/leasehold-daemon-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw TestSupportError("mkdtemp failed: errno \(errno)") }
        path = String(cString: made)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Writes `text` to `name` inside the directory and returns the full path.
    @discardableResult
    public func write(_ name: String, _ text: String) throws -> String {
        let file = path + "/" + name
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        return file
    }

    /// The contents of `name` inside the directory, if it exists.
    public func read(_ name: String) -> String? {
        FileManager.default.contents(atPath: path + "/" + name).map { String(decoding: $0, as: UTF8.self) }
    }
}
