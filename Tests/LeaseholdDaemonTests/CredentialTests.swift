import Foundation
import LeaseholdTesting
import RedisClient
import Testing

@testable import Leasehold

/// The Redis password stays out of jobs and out of `ps`: real `leaseholdd` processes against a
/// `redis-server` with `requirepass`.
@Suite(.timeLimit(.minutes(2)))
struct CredentialTests {
    static let password = "s3cret-Pa55"

    static func catalog(_ directory: TempDirectory, extra: String = "", job: String) throws -> String {
        try directory.write(
            "jobs.yaml",
            """
            version: 1
            redis:
              namespace: creds
            \(extra)
            defaults: { lease: 2s }
            jobs:
            \(job)
            """)
    }

    static func start(
        _ name: String, config: String, arguments: [String] = [], environment: [String: String] = [:]
    ) throws -> DaemonProcess {
        try DaemonProcess(
            name: name, arguments: ["--config", config, "--name", name, "--log-format", "json"] + arguments,
            environment: environment)
    }

    @Test func shellJobsInheritNeitherTheRedisURLNorThePasswordFile() async throws {
        let redis = try await RedisServerProcess(.init(password: Self.password))
        let directory = try TempDirectory()
        let passwordFile = try directory.write("redis-password", Self.password + "\n")
        chmod(passwordFile, 0o600)
        let envFile = directory.path + "/env.txt"
        let config = try Self.catalog(
            directory,
            job: """
                  - name: dump-env
                    handler: shell
                    schedule: { every: 1h }
                    config: { command: ["/bin/sh", "-c", "env > \(envFile)"] }
                """)
        let daemon = try Self.start(
            "m1", config: config,
            environment: [
                "LEASEHOLD_REDIS_URL": "redis://127.0.0.1:\(redis.port)/0",
                "LEASEHOLD_REDIS_PASSWORD_FILE": passwordFile,
                "KEEP_ME": "kept",
            ])
        let text = try await eventually(
            "the job's environment dump", within: .seconds(20), diagnostics: { daemon.logTail() }
        ) {
            directory.read("env.txt").flatMap { $0.contains("LEASEHOLD_FENCING_TOKEN=") ? $0 : nil }
        }
        let names = Set(text.split(separator: "\n").compactMap { $0.split(separator: "=").first.map(String.init) })
        #expect(
            names.isSuperset(of: ["KEEP_ME", "LEASEHOLD_JOB", "LEASEHOLD_FENCING_TOKEN", "LEASEHOLD_MEMBER", "PATH"]))
        #expect(!names.contains("LEASEHOLD_REDIS_URL"), "\(names.sorted())")
        #expect(!names.contains("LEASEHOLD_REDIS_PASSWORD_FILE"), "\(names.sorted())")
        #expect(!text.contains(Self.password))
        // Authenticated through the file (the URL has no password), and it said nothing about it.
        #expect(try await redis.lease("dump-env", keys: LeaseKeys(namespace: "creds"))?.owner.member == "m1")
        #expect(!daemon.lines.contains { $0.raw.contains(Self.password) })
        #expect(!daemon.lines.contains { $0.level == "warning" && $0.raw.contains("password") }, "\(daemon.logTail())")
        _ = await daemon.stop()
    }

    @Test func aPasswordOnTheCommandLineOrInALooseFileIsWarnedAbout() async throws {
        let redis = try await RedisServerProcess(.init(password: Self.password))
        let directory = try TempDirectory()
        let loose = try directory.write("loose-password", Self.password)
        chmod(loose, 0o644)
        let config = try Self.catalog(directory, job: "  - { name: a, handler: log, schedule: { every: 1h } }")

        let inURL = try Self.start("url", config: config, arguments: ["--redis", redis.url])
        let urlWarning = try await inURL.waitForLine("the ps warning") { line in
            line.level == "warning" && line.message?.contains("ps") == true
        }
        #expect(urlWarning.message?.contains("--redis-password-file") == true)
        _ = try await inURL.waitForLine("a leadership") { $0.message == "acquired leadership" }
        #expect(!inURL.lines.contains { $0.raw.contains(Self.password) })
        _ = await inURL.stop()

        let inFile = try Self.start(
            "file", config: config,
            arguments: ["--redis", "redis://127.0.0.1:\(redis.port)", "--redis-password-file", loose])
        let modeWarning = try await inFile.waitForLine("the mode warning") { line in
            line.level == "warning" && line.message?.contains("chmod 600") == true
        }
        #expect(modeWarning.message?.contains("0644") == true, "\(modeWarning.raw)")
        _ = try await inFile.waitForLine("a leadership") { $0.message == "acquired leadership" }
        #expect(!inFile.lines.contains { $0.level == "warning" && $0.message?.contains(" ps") == true })
        _ = await inFile.stop()
    }

    @Test func theCatalogsPasswordFileIsRelativeToTheCatalog() async throws {
        let redis = try await RedisServerProcess(.init(password: Self.password))
        let directory = try TempDirectory()
        chmod(try directory.write("pw", Self.password + "\r\n"), 0o600)
        let config = try Self.catalog(
            directory, extra: "  password_file: pw\n  url: redis://127.0.0.1:\(redis.port)/0",
            job: "  - { name: a, handler: log, schedule: { every: 1h } }")
        let daemon = try Self.start("cat", config: config)
        _ = try await daemon.waitForLine("a leadership") { $0.message == "acquired leadership" }
        _ = await daemon.stop()
    }

    @Test func anUnusablePasswordFileExits2WithOneLineAndNoHang() async throws {
        let directory = try TempDirectory()
        let config = try Self.catalog(directory, job: "  - { name: a, handler: log, schedule: { every: 1h } }")
        let fifo = directory.path + "/fifo"
        #expect(mkfifo(fifo, 0o600) == 0)
        let empty = try directory.write("empty", "\n")
        for (file, reason) in [
            (fifo, "not a regular file"), (empty, "empty"), (directory.path + "/missing", "No such file"),
        ] {
            let daemon = try Self.start(
                "bad", config: config,
                arguments: ["--redis", "redis://127.0.0.1:1", "--redis-password-file", file])
            let code = try await daemon.waitForExit(within: .seconds(10))
            let lines = daemon.lines.map(\.raw).filter { !$0.isEmpty }
            #expect(code == 2, "\(file): \(lines)")
            #expect(lines.count == 1, "\(file): \(lines)")
            #expect(lines.first?.contains(file) == true && lines.first?.contains(reason) == true, "\(lines)")
        }
    }
}
