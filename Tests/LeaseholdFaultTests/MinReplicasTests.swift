import Foundation
import LeaseholdTesting
import Testing

/// `min_replicas: 1` with no replica to acknowledge: nothing is granted, and the member says
/// why; once a replica is back the job is led.
@Suite(.timeLimit(.minutes(2)))
struct MinReplicasTests {
    @Test func noLeaseIsGrantedWhileNoReplicaAcknowledges() async throws {
        try await withSentinelTopology(replicas: 1, sentinels: 0) { topology in
            let primary = topology.servers[0]
            let replica = topology.servers[1]
            await replica.kill()
            let directory = try TempDirectory()
            let namespace = "t\(UInt32.random(in: 0 ... .max))"
            let catalog = try directory.write(
                "jobs.yaml",
                """
                version: 1
                redis: { namespace: \(namespace), min_replicas: 1 }
                defaults: { lease: 2s, renew_every: 500ms }
                jobs:
                  - { name: j, handler: shell, schedule: continuous, config: { command: ["sleep", "60"] } }
                """)
            let member = try DaemonProcess(
                name: "m1",
                arguments: ["--config", catalog, "--redis", primary.url, "--name", "m1", "--log-format", "json"])
            try await member.waitForLine("the reason no lease counts", within: .seconds(20)) {
                $0.fields?["error"]?.contains("only 0 of 1 replicas acknowledged") == true
            }
            // Attempts went on meanwhile (the lease key may exist on the primary), but none counted.
            #expect(!member.lines.contains { $0.message == "acquired leadership" }, "\(member.logTail())")
            try await replica.restart()
            try await member.waitForLine("leadership once a replica acknowledges", within: .seconds(40)) {
                $0.message == "acquired leadership"
            }
            await member.stop()
        }
    }
}
