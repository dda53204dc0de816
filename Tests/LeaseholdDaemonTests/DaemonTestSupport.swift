import Foundation
import Leasehold
import LeaseholdTestSupport
import RedisClient
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A failure of the daemon test support, with enough context to debug it from CI output.
struct DaemonTestError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

// MARK: - Locating the binary

enum DaemonBinary {
    /// The `leaseholdd` the tests run: `$LEASEHOLDD_PATH`, else next to the test bundle, else
    /// `<package>/.build/debug/leaseholdd`.
    ///
    /// `swift build --build-tests` builds it, and so does `swift test` (SwiftPM 6.3 builds every
    /// target of the package before testing: verified by deleting the binary and running
    /// `swift test --filter DaemonProcessTests`, which relinked it), so `make test` needs no extra step.
    static func path(filePath: String = #filePath) throws -> String {
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
        throw DaemonTestError(
            "leaseholdd not found (looked at \(candidates.joined(separator: ", "))): run `swift build` (or `make test`) before `swift test`")
    }
}

// MARK: - Polling

@discardableResult
/// Polls `probe` until it returns a value or `timeout` passes; never a bare sleep.
func eventually<T>(
    _ what: @autoclosure () -> String, within timeout: Duration, every interval: Duration = .milliseconds(25),
    diagnostics: () -> String = { "" }, _ probe: () async throws -> T?
) async throws -> T {
    let deadline = ContinuousClock.now + timeout
    while true {
        if let value = try await probe() { return value }
        if ContinuousClock.now >= deadline {
            throw DaemonTestError("timed out after \(timeout) waiting for \(what())\n\(diagnostics())")
        }
        try await Task.sleep(for: interval)
    }
}

func milliseconds(_ duration: Duration) -> Int { Int(duration.wholeMilliseconds) }

// MARK: - Log lines

/// One stderr line of a daemon started with `--log-format json`.
struct DaemonLogLine: Sendable, CustomStringConvertible {
    var raw: String
    var at: ContinuousClock.Instant
    /// The parsed object, nil if the line is not JSON.
    var fields: [String: String]?

    init(raw: String, at: ContinuousClock.Instant) {
        self.raw = raw
        self.at = at
        if let data = raw.data(using: .utf8),
           let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] {
            fields = object.mapValues { "\($0)" }
        }
    }

    var message: String? { fields?["message"] }
    var level: String? { fields?["level"] }
    var job: String? { fields?["job"] }
    var token: UInt64? { fields?["token"].flatMap { UInt64($0) } }
    var description: String { raw }
}

// MARK: - A leaseholdd process

/// A real `leaseholdd` child process: its stderr (and stdout) lines are collected so tests
/// can poll them; it is SIGKILLed on deinit if still running, so no test leaves one behind.
final class DaemonProcess: Sendable {
    let name: String
    let pid: Int32
    private let process: Process
    private let output = LockedLines<DaemonLogLine>()
    private let stdoutLines = LockedLines<String>()

    /// Starts `leaseholdd arguments…` with extra `environment`.
    init(name: String, arguments: [String], environment: [String: String] = [:]) throws {
        self.name = name
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try DaemonBinary.path())
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
        Self.pump(errPipe.fileHandleForReading) { [output] line in
            output.append(DaemonLogLine(raw: line, at: .now))
        }
        Self.pump(outPipe.fileHandleForReading) { [stdoutLines] line in
            stdoutLines.append(line)
        }
    }

    /// Reads `handle` line by line on its own thread until EOF.
    private static func pump(_ handle: FileHandle, _ onLine: @escaping @Sendable (String) -> Void) {
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
        }
    }

    deinit {
        if process.isRunning {
            Glibc.kill(pid, SIGKILL)
            process.waitUntilExit()
        }
    }

    /// Every stderr line so far.
    var lines: [DaemonLogLine] { output.all }
    /// Every stdout line so far.
    var stdout: [String] { stdoutLines.all }

    /// The last lines, for failure messages.
    func logTail(_ count: Int = 40) -> String {
        "--- \(name) (pid \(pid)) stderr tail ---\n" + lines.suffix(count).map(\.raw).joined(separator: "\n")
    }

    var isRunning: Bool { process.isRunning }

    func signal(_ signal: Int32) { Glibc.kill(pid, signal) }

    /// Waits for a stderr line matching `predicate` and returns it.
    @discardableResult
    func waitForLine(
        _ what: String, within timeout: Duration = .seconds(20), where predicate: @escaping (DaemonLogLine) -> Bool
    ) async throws -> DaemonLogLine {
        try await eventually("\(name): \(what)", within: timeout, diagnostics: { self.logTail() }) {
            lines.first(where: predicate)
        }
    }

    /// Waits for the process to exit; returns its exit status (128 + n when killed by signal n).
    func waitForExit(within timeout: Duration = .seconds(20)) async throws -> Int32 {
        try await eventually("\(name) to exit", within: timeout, every: .milliseconds(10), diagnostics: { self.logTail() }) {
            process.isRunning ? nil : true
        }
        switch process.terminationReason {
        case .exit: return process.terminationStatus
        case .uncaughtSignal: return 128 + process.terminationStatus
        @unknown default: return process.terminationStatus
        }
    }
}

/// Lines appended by a reader thread and read by the test.
final class LockedLines<Line: Sendable>: Sendable {
    private let storage = Mutex<[Line]>([])
    func append(_ line: Line) { storage.withLock { $0.append(line) } }
    var all: [Line] { storage.withLock { $0 } }
}

// MARK: - Temporary files

/// A temporary directory removed on deinit; holds catalogs and handler output files.
final class TempDirectory: Sendable {
    let path: String

    init() throws {
        var template = Array("/tmp/leasehold-daemon-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw DaemonTestError("mkdtemp failed: errno \(errno)") }
        path = String(cString: made)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// Writes `text` to `name` inside the directory and returns the full path.
    @discardableResult
    func write(_ name: String, _ text: String) throws -> String {
        let file = path + "/" + name
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        return file
    }

    func read(_ name: String) -> String? {
        FileManager.default.contents(atPath: path + "/" + name).map { String(decoding: $0, as: UTF8.self) }
    }
}

// MARK: - A little fleet on one private Redis

/// One private `redis-server`, one catalog, and the members started on them.
final class DaemonFleet: Sendable {
    let redis: RedisServerProcess
    let directory: TempDirectory
    let namespace: String
    let catalogPath: String
    let keys: LeaseKeys

    /// Starts a private Redis and writes `catalog` (YAML; `NAMESPACE` is replaced by a fresh
    /// namespace, `DIR` by the temp directory).
    init(catalog: String) async throws {
        redis = try await RedisServerProcess()
        directory = try TempDirectory()
        namespace = "t\(UInt32.random(in: 0 ... .max))"
        keys = LeaseKeys(namespace: namespace)
        let text = catalog.replacingOccurrences(of: "NAMESPACE", with: namespace)
            .replacingOccurrences(of: "DIR", with: directory.path)
        catalogPath = try directory.write("jobs.yaml", text)
    }

    /// Starts one member with JSON logs.
    func start(_ name: String, extra: [String] = []) throws -> DaemonProcess {
        try DaemonProcess(
            name: name,
            arguments: ["--config", catalogPath, "--redis", redis.url, "--name", name, "--log-format", "json"] + extra)
    }

    /// The current holder of `job`'s lease, parsed from `member@incarnation:token`.
    func holder(_ job: String) async throws -> LeaseHolder? {
        let reply = try await redis.command("GET", keys.lease(job))
        return reply.string.flatMap(LeaseHolder.init(value:))
    }

    /// The run records of `job`, oldest first.
    func runs(_ job: String) async throws -> [RunRecord] {
        let reply = try await redis.command("XRANGE", keys.runs(job), "-", "+")
        return (reply.array ?? []).compactMap { entry in
            guard let parts = entry.array, parts.count == 2, let flat = parts[1].array else { return nil }
            var fields: [String: String] = [:]
            var index = 0
            while index + 1 < flat.count {
                if let key = flat[index].string { fields[key] = flat[index + 1].string ?? "" }
                index += 2
            }
            return RunRecord(fields: fields)
        }
    }
}

/// Who holds a lease right now.
struct LeaseHolder: Sendable, Equatable, CustomStringConvertible {
    var member: String
    var instance: String
    var token: UInt64
    var value: String

    init?(value: String) {
        guard let colon = value.lastIndex(of: ":"), let token = UInt64(value[value.index(after: colon)...]) else { return nil }
        let instance = String(value[..<colon])
        guard let at = instance.firstIndex(of: "@") else { return nil }
        self.member = String(instance[..<at])
        self.instance = instance
        self.token = token
        self.value = value
    }

    var description: String { value }
}

/// One entry of `ns:{job}:runs`.
struct RunRecord: Sendable, CustomStringConvertible {
    var fields: [String: String]
    var slot: Int64? { fields["slot"].flatMap { Int64($0) } }
    var token: UInt64? { fields["token"].flatMap { UInt64($0) } }
    var member: String? { fields["member"] }
    var started: Int64? { fields["started"].flatMap { Int64($0) } }
    var description: String { "slot=\(fields["slot"] ?? "-") token=\(fields["token"] ?? "-") member=\(member ?? "-") started=\(fields["started"] ?? "-")" }
}

// MARK: - Tiny HTTP client (GET over a blocking socket, for the status endpoint)

struct HTTPResult: Sendable {
    var status: Int
    var body: String
}

/// `GET path` on 127.0.0.1:`port`; nil if nothing answers (yet).
func httpGet(port: Int, path: String) -> HTTPResult? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 5, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { return nil }
    let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8)
    guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == request.count else { return nil }
    var response: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 16384)
    while true {
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if count <= 0 { break }
        response += buffer[0..<count]
    }
    let text = String(decoding: response, as: UTF8.self)
    guard let statusLine = text.split(separator: "\r\n", maxSplits: 1).first else { return nil }
    let parts = statusLine.split(separator: " ")
    guard parts.count >= 2, let status = Int(parts[1]) else { return nil }
    let body = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? ""
    return HTTPResult(status: status, body: body)
}

/// Whether any process of process group `pgid` is alive.
func processGroupAlive(_ pgid: Int32) -> Bool {
    Glibc.kill(-pgid, 0) == 0 || errno == EPERM
}
