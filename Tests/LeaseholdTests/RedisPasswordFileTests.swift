import Glibc
import LeaseholdTesting
import RedisClient
import Testing

@testable import Leasehold

/// Reading the Redis password from a file: once, strictly, with a warning about loose modes and
/// never the password in a message.
struct RedisPasswordFileTests {
    static func load(_ path: String) -> Result<RedisPasswordFile.Loaded, PasswordFileError> {
        RedisPasswordFile.load(path: path, source: "--redis-password-file")
    }

    @Test func oneTrailingLineBreakIsNotPartOfThePassword() throws {
        let directory = try TempDirectory()
        for (content, expected) in [("pw\n", "pw"), ("pw\r\n", "pw"), ("pw", "pw"), (" pw \n", " pw ")] {
            let path = try directory.write("f", content)
            chmod(path, 0o600)
            let loaded = try Self.load(path).get()
            #expect(loaded.password == expected)
            #expect(loaded.warning == nil)
        }
    }

    @Test func aGroupOrWorldReadableFileIsUsedWithAWarning() throws {
        let directory = try TempDirectory()
        let path = try directory.write("f", "pw\n")
        chmod(path, 0o640)
        let group = try Self.load(path).get()
        #expect(group.warning?.contains("readable by its group (mode 0640)") == true, "\(group.warning ?? "")")
        chmod(path, 0o604)
        #expect(try Self.load(path).get().warning?.contains("every user") == true)
        #expect(group.warning?.contains("pw\n") == false)
    }

    @Test func unusableFilesAreOneLineErrorsWithoutThePassword() throws {
        let directory = try TempDirectory()
        let fifo = directory.path + "/fifo"
        #expect(mkfifo(fifo, 0o600) == 0)
        let cases: [(String, String)] = [
            (try directory.write("empty", ""), "empty"),
            (try directory.write("two-lines", "hunter2\nmore\n"), "more than one line"),
            (try directory.write("big", String(repeating: "x", count: 5000)), "larger than 4096 bytes"),
            (fifo, "not a regular file"),
            (directory.path, "not a regular file"),
            (directory.path + "/missing", "No such file or directory"),
        ]
        for (path, reason) in cases {
            let started = ContinuousClock.now
            guard case .failure(let error) = Self.load(path) else {
                Issue.record("\(path) was accepted")
                continue
            }
            #expect(ContinuousClock.now - started < .seconds(5), "\(path) must not block")
            #expect(error.message.contains(reason) && error.message.contains(path), "\(error.message)")
            #expect(error.message.contains("--redis-password-file"))
            #expect(!error.message.contains("hunter2") && !error.message.contains("\n"))
        }
    }

    @Test func theFlagBeatsTheEnvironmentWhichBeatsTheCatalogAndTheFileBeatsTheURL() throws {
        let directory = try TempDirectory()
        let fromFlag = try directory.write("flag", "from-flag")
        let fromEnvironment = try directory.write("env", "from-env")
        var catalog = Catalog(jobs: [], path: directory.path + "/jobs.yaml")
        catalog.redisPasswordFile = try directory.write("catalog", "from-catalog")
        let environment = [RedisPasswordFile.environmentVariable: fromEnvironment]
        for (flag, environment, expected) in [
            (fromFlag, environment, "from-flag"), (nil, environment, "from-env"), (nil, [:], "from-catalog"),
        ] {
            var endpoint = try RedisEndpoint(url: "redis://app:in-url@127.0.0.1:6379")
            _ = try RedisPasswordFile.apply(to: &endpoint, flag: flag, environment: environment, catalog: catalog)
            #expect(endpoint.password == expected)
            #expect(endpoint.username == "app")
        }
        var untouched = try RedisEndpoint(url: "redis://:in-url@127.0.0.1:6379")
        #expect(try RedisPasswordFile.apply(to: &untouched, flag: nil, environment: [:], catalog: nil) == nil)
        #expect(untouched.password == "in-url")
    }

    @Test func theVariablesTheDaemonReadsAreWithheldFromJobs() {
        #expect(
            ProcessSpec.daemonSettingsVariables == [
                RedisURLSetting.environmentVariable, RedisPasswordFile.environmentVariable,
            ])
        #expect(ProcessSpec(command: ["true"]).withheldEnvironment == ProcessSpec.daemonSettingsVariables)
    }
}
