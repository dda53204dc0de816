import Foundation
import LeaseholdTesting
import RedisClient
import Testing

@testable import Leasehold

/// A job's output is the job's bytes, not the daemon's: a real `leaseholdd` runs a shell job
/// that tries to forge a daemon log line and to clear the terminal.
@Suite(.timeLimit(.minutes(2)))
struct JobOutputLogTests {
    @Test(arguments: ["text", "json"])
    func aJobCannotForgeDaemonLinesOrSendTerminalEscapes(_ format: String) async throws {
        let redis = try await RedisServerProcess()
        let directory = try TempDirectory()
        // printf turns \r, \n and \033 into the real bytes.
        let script =
            #"printf 'before\r\n2026-01-01T00:00:00.000Z info    acquired leadership job=forged\033[2J after\n'"#
        let config = try directory.write(
            "jobs.yaml",
            """
            version: 1
            defaults: { lease: 2s }
            jobs:
              - name: noisy
                handler: shell
                schedule: { every: 1h }
                config: { command: ["/bin/sh", "-c", \(Self.quoted(script))] }
            """)
        let daemon = try DaemonProcess(
            name: "m1", arguments: ["--config", config, "--redis", redis.url, "--name", "m1", "--log-format", format])
        // The reader splits output at line feeds, so the job's text arrives as two lines, each
        // behind the daemon's own time and level; the CR and the escape byte arrive escaped.
        func text(_ line: DaemonLogLine) -> String { format == "json" ? line.message ?? "" : line.raw }
        let first = try await daemon.waitForLine("the job's first output line") { text($0).contains("before") }
        let second = try await daemon.waitForLine("the job's second output line") { text($0).contains("after") }
        print("\(format):\n\(first.raw)\n\(second.raw)")
        #expect(text(first).contains(#"before\r"#), "\(first.raw)")
        #expect(text(second).contains(#"job=forged\x1b[2J after"#), "\(second.raw)")
        #expect(!second.raw.hasPrefix("2026-01-01"), "\(second.raw)")
        #expect(second.job == nil || second.job == "noisy")
        #expect(!daemon.lines.contains { $0.raw.unicodeScalars.contains { $0.value == 0x1B || $0 == "\r" } })
        _ = await daemon.stop()
    }

    static func quoted(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: "''") + "'"
    }
}
