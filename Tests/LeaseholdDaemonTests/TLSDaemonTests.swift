import Foundation
import Leasehold
import LeaseholdTesting
import RedisClient
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A fleet of real `leaseholdd` processes runs unchanged over TLS: a TLS-only `redis-server`
/// that requires client certificates, the CA in the catalog's `redis.tls`, the client
/// certificate from flags.
@Suite(.timeLimit(.minutes(2)))
struct TLSDaemonTests {
    @Test func threeMembersLeadEachJobOnceOverTLSAndFailOver() async throws {
        let certificates = try await TestCertificates.make()
        let jobs = ["alpha", "bravo", "charlie", "delta"]
        let fleet = try await DaemonFleet(
            catalog: """
                version: 1
                redis:
                  namespace: NAMESPACE
                  tls: { ca_file: \(certificates.caFile) }
                defaults: { lease: 2s, placement: spread }
                jobs:
                \(jobs.map { "  - { name: \($0), handler: log, schedule: { every: 1s } }" }.joined(separator: "\n"))
                """,
            redis: .init(tls: .init(certificates: certificates, requireClientCertificates: true)))
        #expect(fleet.redis.url.hasPrefix("rediss://"))
        let flags = ["--tls-cert-file", certificates.clientCertFile, "--tls-key-file", certificates.clientKeyFile]
        var members = try ["m1", "m2"].map { try fleet.start($0, extra: flags) }
        // The third member skips verification: it works, and says so once.
        members.append(try fleet.start("m3", extra: flags + ["--tls-insecure"]))
        let diagnostics = { members.map { $0.logTail(15) }.joined(separator: "\n") }

        func agreedLeaders(_ running: [DaemonProcess]) async throws -> [String: String]? {
            var leaders: [String: String] = [:]
            for job in jobs {
                guard let holder = try await fleet.holder(job) else { return nil }
                let believers = running.filter { DaemonProcessTests.believedLeadership($0)[job] != nil }
                guard believers.map(\.name) == [holder.owner.member] else { return nil }
                leaders[job] = holder.owner.member
            }
            return leaders
        }
        try await eventually("three live members", within: .seconds(20), diagnostics: diagnostics) {
            try await fleet.redis.command("ZCARD", fleet.keys.members).integer == 3 ? true : nil
        }
        let leaders = try await eventually(
            "one leader per job over TLS", within: .seconds(30), every: .milliseconds(200), diagnostics: diagnostics
        ) { try await agreedLeaders(members) }
        let insecureWarnings = members[2].lines.filter { $0.raw.contains("TLS certificate verification is off") }
        #expect(insecureWarnings.count == 1)
        #expect(!members[0].lines.contains { $0.raw.contains("verification is off") })

        // Stop the leader of alpha: its jobs move to the others, still one leader each.
        let stopped = try #require(members.first { $0.name == leaders["alpha"] })
        #expect(await stopped.stop() == 0)
        let survivors = members.filter { $0.name != stopped.name }
        let after = try await eventually(
            "jobs led again after \(stopped.name) stopped", within: .seconds(30), every: .milliseconds(200),
            diagnostics: diagnostics
        ) { () async throws -> [String: String]? in
            guard let current = try await agreedLeaders(survivors), !current.values.contains(stopped.name) else {
                return nil
            }
            return current
        }
        print("TLS fleet: leaders \(leaders.sorted { $0.key < $1.key }) then \(after.sorted { $0.key < $1.key })")
        for member in survivors { #expect(member.isRunning, "\(member.name) died:\n\(member.logTail())") }
    }

    @Test func missingCAFileExits2NamingTheCatalogLocation() async throws {
        let fleet = try await DaemonFleet(
            catalog: """
                version: 1
                redis:
                  namespace: NAMESPACE
                  tls: { ca_file: missing-ca.pem }
                jobs:
                  - { name: a, handler: log, schedule: continuous }
                """)
        let member = try fleet.start("m1", extra: ["--redis", "rediss://127.0.0.1:\(fleet.redis.port)/0"])
        #expect(try await member.waitForExit() == 2)
        let text = member.lines.map(\.raw).joined(separator: "\n")
        #expect(
            text.contains(
                "\(fleet.catalogPath):4:19: redis.tls.ca_file: cannot use '\(fleet.directory.path)/missing-ca.pem'"),
            "\(text)")
        #expect(text.contains("No such file or directory"))
    }
}
