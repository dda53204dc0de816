import Foundation
import LeaseholdTesting
import Testing

/// Three real `leaseholdd` members over Sentinel with `min_replicas: 1` (one primary, two
/// replicas, three sentinels): the primary is SIGKILLed while they lead. The jobs write to a
/// separate fenced resource with their tokens, which records every write.
@Suite(.serialized, .enabled(if: HeavyTests.enabled, Comment(rawValue: HeavyTests.skipReason)))
struct SentinelFailoverTests {
    static let jobs = ["s1", "s2", "s3"]

    @Test(.timeLimit(.minutes(3)))
    func primaryKilledWhileThreeMembersLeadNoTwoLeadersAndEveryJobLedAgain() async throws {
        try await withSentinelTopology { topology in
            let resource = try await RedisServerProcess()
            let directory = try TempDirectory()
            try directory.write("fence.lua", FencedResource.lua)
            try directory.write("write.sh", FencedResource.script(directory: directory.path, port: resource.port))
            let namespace = "t\(UInt32.random(in: 0 ... .max))"
            let catalog = try directory.write(
                "jobs.yaml",
                """
                version: 1
                redis: { namespace: \(namespace), min_replicas: 1 }
                defaults: { lease: 2s, renew_every: 500ms, placement: spread }
                jobs:
                """
                    + Self.jobs.map {
                        """

                          - name: \($0)
                            handler: shell
                            schedule: continuous
                            config: { command: ["sh", "\(directory.path)/write.sh", "loop"], kill_grace: 300ms }
                        """
                    }.joined())
            let members = try ["m1", "m2", "m3"].map { name in
                try DaemonProcess(
                    name: name,
                    arguments: [
                        "--config", catalog, "--redis", topology.url, "--name", name, "--log-format", "json",
                    ])
            }
            func diagnostics() -> String { members.map { "\($0.name):\n\($0.logTail(15))" }.joined(separator: "\n") }
            func writes(_ job: String) async throws -> (
                accepted: [FencedResource.Write], rejected: [FencedResource.Write]
            ) { try await FencedResource.writes(job, on: resource) }
            try await eventually("every job led and writing", within: .seconds(30), diagnostics: diagnostics) {
                for job in Self.jobs where try await writes(job).accepted.isEmpty { return false }
                return true
            }
            let primary = try await topology.primary()
            let killedAt = ContinuousClock.now
            let killedAtUs = Int64(Date().timeIntervalSince1970 * 1_000_000)
            await primary.kill()
            _ = try await topology.waitForNewPrimary(other: primary.port, within: .seconds(30))
            let failedOverAfter = ContinuousClock.now - killedAt
            // Every job led again: a write accepted after the kill (well after: a write sent
            // just before it may be recorded just after), within failover time + TTL + slack.
            let bound = failedOverAfter + .seconds(2) + .seconds(15)
            try await eventually("every job led again after the failover", within: bound, diagnostics: diagnostics) {
                for job in Self.jobs {
                    let accepted = try await writes(job).accepted
                    guard let last = accepted.last, last.atUs > killedAtUs + Int64(failedOverAfter / .microseconds(1))
                    else { return false }
                }
                return true
            }
            print(
                "sentinel failover: new primary named \(failedOverAfter) after the SIGKILL, every job led again \(ContinuousClock.now - killedAt) after it"
            )
            // A few more seconds of leadership on the new primary, then the verdict.
            try await Task.sleep(for: .seconds(3))
            for job in Self.jobs {
                let (accepted, rejected) = try await writes(job)
                // A write refused by the fence means an older leader acted after a newer one.
                #expect(rejected.isEmpty, "\(job): stale writes \(rejected)\n\(diagnostics())")
                // One leadership, one member: a token reused after a failover that lost the
                // grant would show two instances behind one token.
                var instances: [UInt64: Set<String>] = [:]
                for write in accepted { instances[write.token, default: []].insert(write.instance) }
                for (token, writers) in instances {
                    #expect(writers.count == 1, "\(job): token \(token) used by \(writers)\n\(diagnostics())")
                }
                // Leaderships never interleave: the last write of each token precedes the
                // first of the next.
                let ordered = accepted.sorted { $0.atUs < $1.atUs }
                for (earlier, later) in zip(ordered, ordered.dropFirst()) {
                    #expect(earlier.token <= later.token, "\(job): \(earlier) then \(later)")
                }
            }
            for member in members { #expect(member.isRunning, "\(member.name) exited:\n\(member.logTail())") }
            for member in members { await member.stop() }
            await resource.kill()
        }
    }
}
