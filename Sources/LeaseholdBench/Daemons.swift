import Foundation
import LeaseholdTestSupport
import RedisClient

#if canImport(Glibc)
import Glibc
#endif

/// A `leaseholdd` child process (release build, next to this executable).
final class DaemonProcess: @unchecked Sendable {
    // @unchecked: `Process` is used from one task at a time (start, signal, wait).
    let name: String
    let process: Process

    static var binary: String { executableDirectory() + "/leaseholdd" }

    static func available() -> Bool { FileManager.default.isExecutableFile(atPath: binary) }

    init(name: String, config: String, redisURL: String, logFile: String?) throws {
        self.name = name
        process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = ["--config", config, "--redis", redisURL, "--name", name, "--log-level", "warning"]
        if let logFile {
            _ = FileManager.default.createFile(atPath: logFile, contents: nil)
            let handle = FileHandle(forWritingAtPath: logFile)
            handle?.seekToEndOfFile()
            process.standardOutput = handle
            process.standardError = handle
        } else {
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
        }
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }

    func signal(_ signal: Int32) { kill(pid, signal) }

    /// Waits for exit (bounded), then SIGKILLs.
    func waitForExit(timeout: Duration = .seconds(15)) async {
        let deadline = benchClock.now + timeout
        while process.isRunning && benchClock.now < deadline { try? await Task.sleep(for: .milliseconds(5)) }
        if process.isRunning {
            kill(pid, SIGKILL)
            process.waitUntilExit()
        }
    }
}

/// A catalog of `count` log jobs that run every hour (handlers almost never run).
func writeCatalog(directory: String, jobs count: Int, lease: String, placement: String) throws -> String {
    var text = """
        version: 1
        redis:
          namespace: leasehold
        defaults:
          lease: \(lease)
          placement: \(placement)
        jobs:

        """
    for i in 0..<count {
        text += "  - name: job-\(i)\n    handler: log\n    schedule: { every: 1h }\n    config: { message: \"run\" }\n"
    }
    let path = directory + "/jobs-\(count)-\(lease)-\(placement).yaml"
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

func makeTempDirectory() -> String {
    var template = Array("/tmp/leasehold-bench-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { return "/tmp" }
    return String(cString: made)
}
