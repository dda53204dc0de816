import Foundation
import Leasehold
import LeaseholdTesting
import RedisClient
import Testing

@testable import LeaseholdCLI

/// The CLI over TLS: `--redis rediss://… --tls-ca-file` reads what members over TLS wrote, a
/// wrong CA is one line and exit 1, a TLS flag with a plain URL a usage error.
@Suite("leasehold CLI over TLS", .timeLimit(.minutes(1)))
struct CLITLSTests {
    @Test func statusOverTLSAndItsFailures() async throws {
        let certificates = try await TestCertificates.make()
        let server = try await RedisServerProcess(.init(tls: .init(certificates: certificates)))
        let ns = "tls"
        try await withMembers(
            ["m1"], redis: server.configuration(), jobs: [LeaseJob(name: "alpha", timing: cliTTL)],
            options: { cliMember($0, namespace: ns) }
        ) { members in
            _ = try await eventually("alpha led") { members[0].manager.currentGrants.isEmpty ? nil : true }
            let base = ["status", "--redis", server.url, "--namespace", ns, "--json"]
            let result = await cliRun(base + ["--tls-ca-file", certificates.caFile])
            #expect(result.code == 0, "\(result.err)")
            let rows = try #require(try cliJSON(result.out)["jobs"] as? [[String: Any]])
            let leader = try #require(rows.first { $0["name"] as? String == "alpha" }?["leader"] as? [String: Any])
            #expect(leader["member"] as? String == "m1")

            let wrong = await cliRun(base + ["--tls-ca-file", certificates.wrongCAFile])
            #expect(wrong.code == 1)
            #expect(wrong.err.contains("failed verification"), "\(wrong.err)")
            #expect(wrong.err.split(separator: "\n").count == 1, "\(wrong.err)")

            let plain = await cliRun(
                ["status", "--redis", "redis://127.0.0.1:\(server.port)/0", "--tls-ca-file", certificates.caFile])
            #expect(plain.code == 2)
            #expect(plain.err.contains("--tls-ca-file") && plain.err.contains("use a rediss:// URL"), "\(plain.err)")
        }
    }
}
