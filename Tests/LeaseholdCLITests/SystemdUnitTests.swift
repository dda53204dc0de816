import Foundation
import Testing

/// The shipped systemd unit, checked by systemd's own parser where it is installed.
@Suite("Docs/systemd/leaseholdd.service")
struct SystemdUnitTests {
    static let root = ExternalTool.repositoryRoot
    static let unit = root.appendingPathComponent("Docs/systemd/leaseholdd.service")
    static let installedBinary = "/usr/local/bin/leaseholdd"

    /// `systemd-analyze` on this machine, if any. It parses units without a running systemd,
    /// so it works in containers too.
    static let analyze = ExternalTool("systemd-analyze")

    /// The unit's `Key=value` lines of one section.
    static func settings(_ text: String, section: String) -> [(key: String, value: String)] {
        var current = ""
        var out: [(String, String)] = []
        for line in text.split(separator: "\n").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            if line.hasPrefix("[") {
                current = line
            } else if current == "[\(section)]", !line.hasPrefix("#"), let eq = line.firstIndex(of: "=") {
                out.append((String(line[..<eq]), String(line[line.index(after: eq)...])))
            }
        }
        return out
    }

    @Test func theUnitSaysHowToStartReloadAndStopTheDaemon() throws {
        let text = try String(contentsOf: Self.unit, encoding: .utf8)
        let service = Dictionary(Self.settings(text, section: "Service"), uniquingKeysWith: { first, _ in first })
        #expect(service["ExecStart"] == "\(Self.installedBinary) --config /etc/leasehold/jobs.yaml")
        #expect(service["ExecReload"] == "/bin/kill -HUP $MAINPID")
        #expect(service["KillSignal"] == "SIGTERM")
        #expect(service["Restart"] == "on-failure")
        // Death by SIGHUP (an older leaseholdd told to reload) is a "clean" exit to systemd,
        // which on-failure alone would leave dead.
        #expect(service["RestartForceExitStatus"]?.split(separator: " ").contains("SIGHUP") == true)
        // Only the daemon gets SIGTERM: it stops its shell jobs itself before releasing leases.
        #expect(service["KillMode"] == "mixed")
        #expect(["simple", "exec"].contains(service["Type"] ?? ""))
        #expect(service["User"].map { !$0.isEmpty && $0 != "root" } == true)
        #expect(service["NoNewPrivileges"] == "yes")
        // The stop timeout must outlast the default kill_grace (5 s) plus the shutdown timeout
        // (10 s), or systemd SIGKILLs a member before it released its leases.
        let timeout = try #require(service["TimeoutStopSec"])
        let seconds = try #require(Int(timeout.hasSuffix("s") ? String(timeout.dropLast()) : timeout))
        #expect(seconds >= 5 + 10 + 5)
        #expect(text.contains("kill_grace"), "the unit explains how to size TimeoutStopSec")
    }

    /// `systemd-analyze verify` on a copy whose ExecStart names a binary that exists (the one
    /// built in .build when there is one, else /bin/true): verify rejects a missing binary,
    /// and /usr/local/bin/leaseholdd is not installed on a build machine. Every other line
    /// is verified as shipped.
    @Test(.enabled(if: analyze != nil, "systemd-analyze is not installed"))
    func systemdAnalyzeVerifyAcceptsTheUnit() async throws {
        let text = try String(contentsOf: Self.unit, encoding: .utf8)
        let built = Self.root.appendingPathComponent(".build/debug/leaseholdd").path
        let binary = FileManager.default.isExecutableFile(atPath: built) ? built : "/bin/true"
        let copy = text.replacingOccurrences(
            of: "ExecStart=\(Self.installedBinary) ", with: "ExecStart=\(binary) ")
        #expect(copy != text)
        let result = try await Self.verify(copy)
        #expect(result.status == 0, "\(result.output)")
        #expect(!result.output.contains("leaseholdd.service"), "systemd-analyze complained:\n\(result.output)")

        // The check can fail: a misspelt key is reported against the unit.
        let broken = try await Self.verify(copy.replacingOccurrences(of: "KillMode=", with: "KilMode="))
        #expect(broken.output.contains("leaseholdd.service"), "\(broken.output)")
    }

    static func verify(_ unitText: String) async throws -> (status: Int32, output: String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "leasehold-unit-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("leaseholdd.service")
        try unitText.write(to: path, atomically: true, encoding: .utf8)
        let result = try await #require(analyze).run(["verify", "--man=no", path.path])
        return (result.code, result.output)
    }
}
