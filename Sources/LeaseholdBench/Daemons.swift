import Foundation
import LeaseholdTesting
import RedisClient

#if canImport(Glibc)
    import Glibc
#endif

/// The release `leaseholdd` next to this executable: the bench measures the release build.
var benchDaemonBinary: String { executableDirectory() + "/leaseholdd" }

/// Whether `make bench` built it.
func benchDaemonAvailable() -> Bool { FileManager.default.isExecutableFile(atPath: benchDaemonBinary) }

/// Starts one `leaseholdd` member of the bench (warnings and errors only).
func startDaemon(_ name: String, config: String, redisURL: String) throws -> DaemonProcess {
    try DaemonProcess(
        name: name, arguments: ["--config", config, "--redis", redisURL, "--name", name, "--log-level", "warning"],
        executable: benchDaemonBinary)
}

/// A catalog of `count` log jobs that run every hour (handlers almost never run).
func writeCatalog(
    directory: String, jobs count: Int, lease: String, placement: String, crashRelease: Bool = true
) throws -> String {
    var text = """
        version: 1
        redis:
          namespace: leasehold
        defaults:
          lease: \(lease)
          placement: \(placement)
          crash_release: \(crashRelease)
        jobs:

        """
    for i in 0..<count {
        text += "  - name: job-\(i)\n    handler: log\n    schedule: { every: 1h }\n    config: { message: \"run\" }\n"
    }
    let path = directory + "/jobs-\(count)-\(lease)-\(placement).yaml"
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}
