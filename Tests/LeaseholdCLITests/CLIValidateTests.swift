import Foundation
import Leasehold
import LeaseholdTesting
import Testing

@testable import LeaseholdCLI

/// Writes `text` to a fresh temporary file and returns its path.
func cliTempFile(_ text: String, name: String = "jobs.yaml") throws -> String {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("leasehold-cli-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    let path = directory.appendingPathComponent(name).path
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

/// Runs the CLI in-process; returns the exit code and what it printed.
func cliRun(_ arguments: [String], environment: [String: String] = [:]) async -> (code: Int32, out: String, err: String)
{
    let capture = CLICapture()
    let code = await LeaseholdTool.run(arguments, io: capture.io(environment: environment))
    return (code, capture.stdout, capture.stderr)
}

@Suite("leasehold validate and settings")
struct CLIValidateTests {
    static let good = """
        version: 1
        redis:
          url: redis://127.0.0.1:6399/3
          namespace: staging
        jobs:
          - name: a
            handler: log
            schedule: { every: 5s }
          - name: b
            handler: shell
            schedule: { cron: "*/5 * * * *" }
            config: { command: ["true"] }
          - name: c
            handler: log
            schedule: continuous
        """

    @Test func goodCatalogPrintsOneLineSummary() async throws {
        let path = try cliTempFile(Self.good)
        let result = await cliRun(["validate", path])
        #expect(result.code == 0)
        #expect(result.out == "\(path): ok — 3 jobs (1 every, 1 cron, 1 continuous), namespace staging\n")
        #expect(result.err == "")
        // --config is used when no PATH is given.
        let viaConfig = await cliRun(["validate", "--config", path])
        #expect(viaConfig.code == 0)
        #expect(viaConfig.out == result.out)
    }

    @Test func badCatalogPrintsLocatedErrorsOnStderr() async throws {
        let path = try cliTempFile(
            """
            version: 1
            jobs:
              - name: a
                handler: nope
                schedule: { every: 5 }
              - name: a
                handler: log
                schedule: { every: 5s }
            """)
        let result = await cliRun(["validate", path])
        #expect(result.code == 2)
        #expect(result.out == "")
        let lines = result.err.split(separator: "\n").map(String.init)
        #expect(lines.count >= 3)
        #expect(lines.allSatisfy { $0.hasPrefix(path + ":") })
        #expect(
            lines.contains { $0.hasPrefix("\(path):4:") && $0.contains("unknown handler 'nope' (known: log, shell)") })
        #expect(lines.contains { $0.hasPrefix("\(path):5:") && $0.contains("invalid duration '5'") })
        // Same messages as the daemon's loader.
        let daemon = cliDaemonCatalogLines(path)
        #expect(lines == daemon)
    }

    @Test func missingCatalogFile() async {
        let result = await cliRun(["validate", "/nonexistent/jobs.yaml"])
        #expect(result.code == 2)
        #expect(result.err.hasPrefix("/nonexistent/jobs.yaml: cannot read catalog file"))
    }

    /// Catalogs come through pull requests: a FIFO, a directory, a device or a huge file in the
    /// catalog's place is one line and exit code 2, not a hang or an unbounded read.
    @Test func hostileCatalogFilesAreOneLine() async throws {
        let path = try cliTempFile(Self.good)
        let dir = String(path[..<path.lastIndex(of: "/")!])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fifo = dir + "/fifo.yaml"
        #expect(mkfifo(fifo, 0o600) == 0)
        for target in [fifo, dir, "/dev/zero"] {
            let result = await cliRun(["validate", target])
            #expect(result.code == 2)
            #expect(result.out == "")
            #expect(result.err == "\(target): cannot read catalog file: not a regular file\n")
        }
        let big = dir + "/big.yaml"
        try (Self.good + "\n#" + String(repeating: "x", count: 4 << 20)).write(
            toFile: big, atomically: true, encoding: .utf8)
        let result = await cliRun(["validate", big])
        #expect(result.code == 2)
        #expect(result.err == "\(big): catalog too large: more than 4194304 bytes (4 MiB)\n")
    }

    @Test func settingsPrecedence() async throws {
        let path = try cliTempFile(Self.good)
        let fromFile = try CLISettings.resolve(config: path, redis: nil, namespace: nil, environment: [:])
        #expect(fromFile.endpoint.description == "redis://127.0.0.1:6399/3")
        #expect(fromFile.namespace == "staging")
        let env = ["LEASEHOLD_REDIS_URL": "redis://10.0.0.1:6380/1"]
        let fromEnv = try CLISettings.resolve(config: path, redis: nil, namespace: nil, environment: env)
        #expect(fromEnv.endpoint.description == "redis://10.0.0.1:6380/1")
        let fromFlags = try CLISettings.resolve(
            config: path, redis: "redis://10.0.0.2:6381/2", namespace: "ns2", environment: env)
        #expect(fromFlags.endpoint.description == "redis://10.0.0.2:6381/2")
        #expect(fromFlags.namespace == "ns2")
        #expect(fromFlags.catalog?.jobs.map(\.name) == ["a", "b", "c"])
        // An explicit --config that does not exist is an error; a missing default is fine with --redis.
        #expect(throws: CLIFailure.self) {
            try CLISettings.resolve(config: "/nonexistent.yaml", redis: "redis://x", namespace: nil, environment: [:])
        }
        let noFile = try CLISettings.resolve(
            config: nil, redis: "redis://127.0.0.1:1/0", namespace: nil, environment: [:])
        if !FileManager.default.fileExists(atPath: CLISettings.defaultConfigPath) {
            #expect(noFile.catalog == nil)
            #expect(noFile.namespace == "leasehold")
        }
    }

    @Test func badURLIsUsageErrorWithoutPassword() async throws {
        let path = try cliTempFile(Self.good)
        let result = await cliRun(["status", "--config", path, "--redis", "http://user:hunter2@host/0"])
        #expect(result.code == 2)
        #expect(!result.err.contains("hunter2"))
        #expect(result.err.hasPrefix("leasehold: invalid Redis URL"))
    }

    @Test func usageErrorsExitTwo() async {
        #expect(await cliRun(["history"]).code == 2)
        #expect(await cliRun(["frobnicate"]).code == 2)
        #expect(await cliRun(["watch", "--interval", "soon", "--redis", "redis://127.0.0.1:1/0"]).code == 2)
        let help = await cliRun(["--help"])
        #expect(help.code == 0)
        #expect(help.out.contains("SUBCOMMANDS"))
        // A subcommand's help shows its own flags, however it is asked for.
        for arguments in [["prune", "--help"], ["prune", "-h"], ["help", "prune"]] {
            let prune = await cliRun(arguments)
            #expect(prune.code == 0, "\(arguments)")
            #expect(prune.out.contains("USAGE: leasehold prune"), "\(arguments): \(prune.out)")
            #expect(prune.out.contains("--dry-run") && prune.out.contains("--yes"), "\(arguments)")
        }
    }
}

/// The lines the daemon's loader produces for a catalog.
func cliDaemonCatalogLines(_ path: String) -> [String] {
    do {
        _ = try HandlerRegistry.builtIn.loadCatalog(path: path)
        return []
    } catch {
        return error.errors.map(\.description)
    }
}
