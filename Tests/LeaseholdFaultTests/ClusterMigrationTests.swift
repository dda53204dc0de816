import Foundation
import Leasehold
import LeaseholdTesting
import RedisClient
import Testing

/// Three real `leaseholdd` members over a three-primary Redis Cluster: the slot of the
/// namespace's hash tag is migrated to another node (IMPORTING/MIGRATING, the keys
/// MIGRATEd, SETSLOT NODE) while they renew. The jobs write to a separate fenced resource
/// with their tokens, which records every write.
@Suite(.serialized, .enabled(if: HeavyTests.enabled, Comment(rawValue: HeavyTests.skipReason)))
struct ClusterMigrationTests {
    static let jobs = ["c1", "c2", "c3"]

    @Test(.timeLimit(.minutes(3)))
    func namespaceSlotMigratedWhileThreeMembersLeadNoTwoLeadersAndEveryJobStaysLed() async throws {
        try await withRedisCluster { cluster in
            let resource = try await RedisServerProcess()
            let directory = try TempDirectory()
            try directory.write("fence.lua", FencedResource.lua)
            try directory.write("write.sh", FencedResource.script(directory: directory.path, port: resource.port))
            let namespace = "t\(UInt32.random(in: 0 ... .max))"
            // Every key of the namespace carries the hash tag {namespace}: one slot.
            let slot = RedisCluster.slot(of: LeaseKeys(namespace: namespace).members)
            #expect(slot == RedisCluster.slot(of: namespace))
            let catalog = try directory.write(
                "jobs.yaml",
                """
                version: 1
                redis: { namespace: \(namespace) }
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
                        "--config", catalog, "--redis", cluster.url, "--name", name, "--log-format", "json",
                    ])
            }
            func diagnostics() -> String { members.map { "\($0.name):\n\($0.logTail(15))" }.joined(separator: "\n") }
            func writes(_ job: String) async throws -> (
                accepted: [FencedResource.Write], rejected: [FencedResource.Write]
            ) { try await FencedResource.writes(job, on: resource) }
            func nowUs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1_000_000) }
            try await eventually("every job led and writing", within: .seconds(30), diagnostics: diagnostics) {
                for job in Self.jobs where try await writes(job).accepted.isEmpty { return false }
                return true
            }
            // Placement settled (spread hands jobs over once members join): every job's
            // current leadership is 3 s old, so a later change of token comes from the migration.
            try await eventually("placement settled", within: .seconds(40), diagnostics: diagnostics) {
                for job in Self.jobs {
                    let accepted = try await writes(job).accepted
                    guard let last = accepted.last, last.atUs > nowUs() - 1_000_000,
                        let first = accepted.first(where: { $0.token == last.token }), first.atUs < nowUs() - 3_000_000
                    else { return false }
                }
                return true
            }
            try await Task.sleep(for: .seconds(1))
            let source = try await cluster.owner(of: slot)
            let keysBefore = try await source.command("CLUSTER", "COUNTKEYSINSLOT", String(slot)).integer ?? 0
            let startedAt = ContinuousClock.now
            // The slot goes round all three nodes, one step a second, each step as a reshard
            // does it (IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE back to back): members
            // renewing meanwhile meet MOVED, ASK and TRYAGAIN (retried by the client).
            var moved = 0
            var target = source
            var steps: [Duration] = []
            for _ in cluster.servers {
                let from = target
                target = cluster.servers[(cluster.servers.firstIndex { $0 === from }! + 1) % cluster.servers.count]
                let stepStart = ContinuousClock.now
                try await cluster.beginMigration(slot: slot, from: from, to: target)
                moved += try await cluster.moveKeys(slot: slot, from: from, to: target)
                try await cluster.finishMigration(slot: slot, from: from, to: target)
                steps.append(ContinuousClock.now - stepStart)
                #expect(try await cluster.owner(of: slot).port == target.port)
                try await Task.sleep(for: .seconds(1))
            }
            // Once more to a node other than the first, so the keys end up elsewhere.
            let last = target
            target = cluster.servers[(cluster.servers.firstIndex { $0 === last }! + 1) % cluster.servers.count]
            try await cluster.migrate(slot: slot, to: target)
            let finishedAt = ContinuousClock.now
            let finishedAtUs = nowUs()
            #expect(try await cluster.owner(of: slot).port == target.port)
            #expect(moved >= 3 && keysBefore >= 1, "\(moved) keys moved of \(keysBefore)")
            // Every job still led, on the new node: a write accepted after the migration
            // finished, within TTL + slack.
            try await eventually(
                "every job led after the migration", within: .seconds(2) + .seconds(15), diagnostics: diagnostics
            ) {
                for job in Self.jobs {
                    guard let last = try await writes(job).accepted.last, last.atUs > finishedAtUs else { return false }
                }
                return true
            }
            // The leases now live on the target only.
            #expect(try await target.command("CLUSTER", "COUNTKEYSINSLOT", String(slot)).integer ?? 0 >= 1)
            #expect(try await last.command("CLUSTER", "COUNTKEYSINSLOT", String(slot)).integer == 0)
            try await Task.sleep(for: .seconds(3))
            var leaderships: [String: Int] = [:]
            let migrationStartUs = finishedAtUs - Int64((finishedAt - startedAt) / .microseconds(1))
            for job in Self.jobs {
                let (accepted, rejected) = try await writes(job)
                // A write refused by the fence means an older leader acted after a newer one.
                #expect(rejected.isEmpty, "\(job): stale writes \(rejected)\n\(diagnostics())")
                var instances: [UInt64: Set<String>] = [:]
                for write in accepted { instances[write.token, default: []].insert(write.instance) }
                for (token, writers) in instances {
                    #expect(writers.count == 1, "\(job): token \(token) used by \(writers)\n\(diagnostics())")
                }
                let ordered = accepted.sorted { $0.atUs < $1.atUs }
                for (earlier, later) in zip(ordered, ordered.dropFirst()) {
                    #expect(earlier.token <= later.token, "\(job): \(earlier) then \(later)")
                    // Brief step-downs are allowed, but never longer than the TTL (2 s) + slack.
                    if later.atUs > migrationStartUs {
                        #expect(
                            later.atUs - earlier.atUs < 6_000_000, "\(job): no writes between \(earlier) and \(later)")
                    }
                }
                leaderships[job] = Set(accepted.filter { $0.atUs > migrationStartUs }.map(\.token)).count
                // The leases were renewed through the migration: the same leadership throughout.
                #expect(leaderships[job] == 1, "\(job): leaderships during and after the migration\n\(diagnostics())")
            }
            print(
                "cluster migration: slot \(slot) (\(keysBefore) keys) moved 4 times, steps \(steps), \(finishedAt - startedAt) in all; leaderships per job during and after: \(leaderships)"
            )
            for member in members { #expect(member.isRunning, "\(member.name) exited:\n\(member.logTail())") }
            for member in members { await member.stop() }
            await resource.kill()
        }
    }
}
