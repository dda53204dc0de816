import Foundation
import RedisClient
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A private `redis-server` on 127.0.0.1 (and optionally a unix socket) for tests.
///
/// Each instance has its own free port and temp directory (parallel-safe); the directory is
/// the server's `dir`, so an AOF or RDB written there survives ``restart()``. The instance
/// SIGKILLs its server and removes the directory when deinitialised.
public final class RedisServerProcess: Sendable {
    public struct Options: Sendable {
        public enum Persistence: Sendable {
            /// `--save '' --appendonly no` (an explicit SAVE still writes dump.rdb, loaded on restart).
            case none
            /// `--appendonly yes --appendfsync <always|everysec>`.
            case appendOnly(fsyncAlways: Bool)
        }
        public var password: String?
        public var enableDebugCommand: Bool
        public var unixSocket: Bool
        public var persistence: Persistence
        public var extraArguments: [String]
        /// Serve TLS only (`--port 0 --tls-port`), with these certificates.
        public var tls: TLS?

        /// TLS settings of the server.
        public struct TLS: Sendable {
            /// The PKI (server certificate, CA that clients must be signed by).
            public var certificates: TestCertificates
            /// `--tls-auth-clients yes`: a client certificate from the CA is required.
            public var requireClientCertificates: Bool

            public init(certificates: TestCertificates, requireClientCertificates: Bool = false) {
                self.certificates = certificates
                self.requireClientCertificates = requireClientCertificates
            }
        }
        /// Set to run `redis-server sentinel.conf --sentinel` with these lines in its own
        /// writable config file (sentinels rewrite it); persistence options are then left out.
        public var sentinelConfig: [String]?

        public init(
            password: String? = nil, enableDebugCommand: Bool = false, unixSocket: Bool = false,
            persistence: Persistence = .none, extraArguments: [String] = [], tls: TLS? = nil
        ) {
            self.password = password
            self.enableDebugCommand = enableDebugCommand
            self.unixSocket = unixSocket
            self.persistence = persistence
            self.extraArguments = extraArguments
            self.tls = tls
            self.sentinelConfig = nil
        }
    }

    public let options: Options
    /// The server's working directory (temporary, removed on deinit).
    public let directory: String
    private struct State {
        var port: Int
        var process: Process?
    }
    private let state: Mutex<State>

    public static let startTimeout: Duration = .seconds(10)

    /// Starts the server and waits (bounded) until it answers PING.
    public init(_ options: Options = Options()) async throws {
        self.options = options
        var template = Array("/tmp/leasehold-redis-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw TestSupportError("mkdtemp failed: errno \(errno)") }
        directory = String(cString: made)
        state = Mutex(State(port: FreePort.next(), process: nil))
        var lastError: (any Error)?
        for _ in 0..<5 {
            do {
                try await launch()
                return
            } catch let error as PortInUse {
                lastError = error
                state.withLock { $0.port = FreePort.next() }
            }
        }
        throw lastError ?? TestSupportError("could not start redis-server")
    }

    deinit {
        let process = state.withLock { $0.process }
        if let process, process.isRunning {
            Glibc.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    // MARK: Addresses

    public var port: Int { state.withLock { $0.port } }
    public var pid: Int32? { state.withLock { $0.process.flatMap { $0.isRunning ? $0.processIdentifier : nil } } }
    public var isRunning: Bool { pid != nil }
    public var unixSocketPath: String? { options.unixSocket ? directory + "/redis.sock" : nil }

    /// `redis://[:password@]127.0.0.1:<port>/<database>` (`rediss://` for a TLS server).
    public func url(database: Int = 0) -> String {
        let auth = options.password.map { ":\($0)@" } ?? ""
        return "\(options.tls == nil ? "redis" : "rediss")://\(auth)127.0.0.1:\(port)/\(database)"
    }
    public var url: String { url() }

    /// The endpoint; for a TLS server it trusts the test CA and presents the client
    /// certificate when the server requires one.
    public var endpoint: RedisEndpoint {
        RedisEndpoint(address: .tcp(host: "127.0.0.1", port: port), password: options.password, tls: clientTLS)
    }

    /// The client TLS settings that work against this server (nil for a plain server).
    public var clientTLS: RedisTLSConfiguration? {
        guard let tls = options.tls else { return nil }
        let certificates = tls.certificates
        return RedisTLSConfiguration(
            caFile: certificates.caFile,
            certFile: tls.requireClientCertificates ? certificates.clientCertFile : nil,
            keyFile: tls.requireClientCertificates ? certificates.clientKeyFile : nil)
    }

    /// The unix-socket endpoint (requires `Options.unixSocket`).
    public var unixEndpoint: RedisEndpoint? {
        unixSocketPath.map { RedisEndpoint(address: .unix(path: $0), password: options.password) }
    }

    public func configuration(
        database: Int = 0, commandTimeout: Duration = .seconds(2), connectTimeout: Duration = .seconds(2)
    ) -> RedisConfiguration {
        var endpoint = self.endpoint
        endpoint.database = database
        return RedisConfiguration(endpoint: endpoint, connectTimeout: connectTimeout, commandTimeout: commandTimeout)
    }

    // MARK: Lifecycle

    /// SIGTERM, wait up to 5 s, then SIGKILL. Keeps the directory (and any AOF/RDB) for ``restart()``.
    public func stop() async {
        guard let process = state.withLock({ $0.process }) else { return }
        if process.isRunning { process.terminate() }
        if await !Self.waitForExit(process, within: .seconds(5)) {
            Glibc.kill(process.processIdentifier, SIGKILL)
            _ = await Self.waitForExit(process, within: .seconds(5))
        }
    }

    /// SIGKILL (a crash: no final AOF rewrite or RDB save), and wait for the exit.
    public func kill() async {
        guard let process = state.withLock({ $0.process }) else { return }
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
        _ = await Self.waitForExit(process, within: .seconds(5))
    }

    /// SIGSTOP: the server keeps its sockets but answers nothing.
    public func suspend() { if let pid { Glibc.kill(pid, SIGSTOP) } }
    /// SIGCONT after ``suspend()``.
    public func resume() { if let pid { Glibc.kill(pid, SIGCONT) } }

    /// Stops the server if running and starts it again on the same port and directory.
    public func restart() async throws {
        await stop()
        // The port was ours a moment ago; retry briefly in case of TIME_WAIT-style races.
        var lastError: (any Error)?
        for _ in 0..<20 {
            do {
                try await launch()
                return
            } catch let error as PortInUse {
                lastError = error
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        throw lastError ?? TestSupportError("could not restart redis-server")
    }

    private struct PortInUse: Error {}

    private func arguments(port: Int) -> [String] {
        if let lines = options.sentinelConfig {
            let file = directory + "/sentinel.conf"
            _ = FileManager.default.createFile(
                atPath: file, contents: Data((lines.joined(separator: "\n") + "\n").utf8))
            return [
                file, "--sentinel", "--port", String(port), "--bind", "127.0.0.1", "--dir", directory,
                "--daemonize", "no", "--logfile", directory + "/redis.log",
            ] + options.extraArguments
        }
        var arguments = [
            "--bind", "127.0.0.1", "--dir", directory, "--daemonize", "no",
            "--logfile", directory + "/redis.log", "--save", "",
        ]
        if let tls = options.tls {
            let certificates = tls.certificates
            arguments += [
                "--port", "0", "--tls-port", String(port), "--tls-cert-file", certificates.serverCertFile,
                "--tls-key-file", certificates.serverKeyFile, "--tls-ca-cert-file", certificates.caFile,
                "--tls-auth-clients", tls.requireClientCertificates ? "yes" : "no",
            ]
        } else {
            arguments += ["--port", String(port)]
        }
        switch options.persistence {
        case .none: arguments += ["--appendonly", "no"]
        case .appendOnly(let always):
            arguments += ["--appendonly", "yes", "--appendfsync", always ? "always" : "everysec"]
        }
        if let password = options.password { arguments += ["--requirepass", password] }
        if options.enableDebugCommand { arguments += ["--enable-debug-command", "yes"] }
        if let path = unixSocketPath { arguments += ["--unixsocket", path, "--unixsocketperm", "700"] }
        return arguments + options.extraArguments
    }

    private func launch() async throws {
        let port = self.port
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.redisServerPath)
        process.arguments = arguments(port: port)
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.runWithDefaultSignalMask()
        state.withLock { $0.process = process }

        let deadline = ContinuousClock.now + Self.startTimeout
        var lastProblem = "no answer yet"
        while ContinuousClock.now < deadline {
            if !process.isRunning {
                let log = logTail()
                if log.contains("Address already in use") { throw PortInUse() }
                throw TestSupportError("redis-server exited at start (status \(process.terminationStatus)): \(log)")
            }
            let connection = RedisConnection(
                configuration: RedisConfiguration(
                    endpoint: endpoint, connectTimeout: .milliseconds(500), commandTimeout: .seconds(1)))
            do {
                let reply = try await connection.send(["INFO", "server"])
                // INFO answers while an AOF or RDB is still loading; PING says -LOADING until
                // the data is back, and a test reading keys right after a restart needs them.
                let ping = try await connection.send(["PING"])
                await connection.close()
                // Make sure the server answering is ours, not another test's on a reused port.
                guard let info = reply.string,
                    let line = info.split(whereSeparator: \.isNewline)
                        .first(where: { $0.hasPrefix("process_id:") }),
                    Int32(line.dropFirst("process_id:".count)) == process.processIdentifier
                else {
                    Glibc.kill(process.processIdentifier, SIGKILL)
                    _ = await Self.waitForExit(process, within: .seconds(5))
                    throw PortInUse()
                }
                if case .error(let text) = ping {
                    lastProblem = text
                } else {
                    return
                }
            } catch let error as RedisError {
                lastProblem = error.message
                await connection.close()
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        Glibc.kill(process.processIdentifier, SIGKILL)
        throw TestSupportError(
            "redis-server did not answer within \(Self.startTimeout): \(lastProblem); log: \(logTail())")
    }

    private static func waitForExit(_ process: Process, within timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return true
    }

    static let redisServerPath: String = {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") + ["/usr/bin", "/usr/local/bin"] {
            let candidate = "\(directory)/redis-server"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return "/usr/bin/redis-server"
    }()

    /// The last 2,000 characters of the server log.
    public func logTail() -> String {
        guard let data = FileManager.default.contents(atPath: directory + "/redis.log") else { return "" }
        return String(String(decoding: data, as: UTF8.self).suffix(2000))
    }

    // MARK: Commands

    /// Runs one command on a fresh connection (authenticated, db 0) and returns the reply.
    public func command(_ arguments: String...) async throws(RedisError) -> RedisReply {
        try await command(arguments)
    }

    public func command(_ arguments: [String]) async throws(RedisError) -> RedisReply {
        // A fresh connection per call: no reconnect backoff to trip over after a restart.
        try await RedisConnection(configuration: configuration()).send(arguments)
    }

    /// Runs `redis-cli` against this server and returns its trimmed output (synchronous).
    public func cli(_ arguments: String...) -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        var argv = ["redis-cli", "-h", "127.0.0.1", "-p", String(port)]
        if let tls = clientTLS {
            argv += ["--tls", "--cacert", tls.caFile ?? ""]
            if let cert = tls.certFile, let key = tls.keyFile { argv += ["--cert", cert, "--key", key] }
        }
        if let password = options.password { argv += ["-a", password, "--no-auth-warning"] }
        process.arguments = argv + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch { return "redis-cli failed to start: \(error)" }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Calls of `name` (e.g. "evalsha") so far, from `INFO commandstats` (0 if never called).
    /// Redis 7.0 also counts commands run inside scripts here.
    public func commandCount(_ name: String) async throws -> Int {
        let info = try await command("INFO", "commandstats").string ?? ""
        let prefix = "cmdstat_\(name.lowercased()):calls="
        for line in info.split(whereSeparator: \.isNewline) where line.hasPrefix(prefix) {
            let digits = line.dropFirst(prefix.count).prefix(while: \.isNumber)
            return Int(digits) ?? 0
        }
        return 0
    }
}
