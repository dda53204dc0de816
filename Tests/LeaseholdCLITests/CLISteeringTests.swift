import Foundation
import Leasehold
import LeaseholdTesting
import RedisClient
import Synchronization
import Testing

@testable import LeaseholdCLI

/// Collects what is published on some channels, from a real subscriber connection.
final class ChannelRecorder: Sendable {
    /// What the reading task has seen (shared with it before `self` exists).
    final class Seen: Sendable {
        let state = Mutex<(subscribed: Bool, payloads: [String])>((false, []))
    }
    let subscriber: RedisSubscriber
    private let seen = Seen()
    private let task: Task<Void, Never>

    /// Subscribes and returns once Redis confirmed the subscription, so nothing published
    /// afterwards is missed.
    init(server: RedisServerProcess, channels: [String]) async throws {
        let subscriber = RedisSubscriber(configuration: server.configuration(), channels: channels)
        self.subscriber = subscriber
        let seen = self.seen
        task = Task {
            for await message in subscriber.messages {
                switch message {
                case .subscribed: seen.state.withLock { $0.subscribed = true }
                case .message: seen.state.withLock { $0.payloads.append(message.payloadString ?? "?") }
                case .disconnected: break
                }
            }
        }
        try await eventually("subscribed to \(channels)") { seen.state.withLock { $0.subscribed } }
    }

    /// Every payload received so far, in order.
    var payloads: [String] { seen.state.withLock { $0.payloads } }

    /// Publishes `marker` itself and waits for it: every message published before it has
    /// arrived by then, so `payloads` is complete up to here.
    func settle(server: RedisServerProcess, channel: String, marker: String) async throws -> [String] {
        _ = try await server.command("PUBLISH", channel, marker)
        return try await eventually("\(marker) received") { () -> [String]? in
            let payloads = self.payloads
            return payloads.last == marker ? payloads : nil
        }
    }

    func stop() async {
        await subscriber.stop()
        await task.value
    }
}

/// A state hash as a dictionary.
func cliStateHash(_ server: RedisServerProcess, _ key: String) async throws -> [String: String] {
    SnapshotReader.hash(try await server.command("HGETALL", key))
}

/// A stream's entries' fields, oldest first.
func cliStream(_ server: RedisServerProcess, _ key: String) async throws -> [[String: String]] {
    (try await server.command("XRANGE", key, "-", "+").array ?? []).compactMap { entry in
        entry.array.flatMap { $0.count == 2 ? SnapshotReader.hash($0[1]) : nil }
    }
}

@Suite("leasehold pause/resume/trigger/runs against redis-server", .serialized, .timeLimit(.minutes(2)))
struct CLISteeringTests {
    @Test func pauseTriggerResumeWriteStateAuditAndControlChannel() async throws {
        let server = try await RedisServerProcess()
        let ns = "steer"
        let config = try cliCatalog(server: server, namespace: ns, jobs: ["nightly", "other"])
        let keys = LeaseKeys(namespace: ns)
        let state = keys.state("nightly")
        let channel = keys.controlChannel
        #expect(channel == "{steer}:control")
        let env = ["USER": "alice"]
        let by = Steering.by(environment: env)
        #expect(by.hasPrefix("alice@") && by.count > "alice@".count)
        let recorder = try await ChannelRecorder(server: server, channels: [channel])

        // Pause: the four fields, one audit event, one message carrying the job name.
        let paused = await cliRun(["pause", "nightly", "--reason", "disk full", "--config", config], environment: env)
        #expect(paused.code == 0, "\(paused.err)")
        #expect(paused.out.hasPrefix("paused nightly (disk full): "), "\(paused.out)")
        var hash = try await cliStateHash(server, state)
        #expect(hash["paused"] == "1")
        #expect(hash["paused_reason"] == "disk full")
        #expect(hash["paused_by"] == by)
        let pausedAt = try #require(hash["paused_at"].flatMap { Int64($0) })
        let redisNow = try #require(SnapshotReader.timeMs(try await server.command("TIME")))
        #expect(pausedAt <= redisNow && pausedAt > redisNow - 10_000)
        var events = try await cliStream(server, keys.events("nightly"))
        #expect(events == [["type": "paused", "by": by, "reason": "disk full", "at": String(pausedAt)]])
        try await eventually("the pause is published") { recorder.payloads == ["nightly"] }
        // The other job is untouched.
        #expect(try await server.command("EXISTS", keys.state("other")).integer == 0)

        // Pausing again changes nothing: no field, no event, no message.
        let again = await cliRun(["pause", "nightly", "--reason", "other", "--config", config, "--json"])
        #expect(again.code == 0, "\(again.err)")
        let againJSON = try cliJSON(again.out)
        #expect(againJSON["changed"] as? Bool == false)
        #expect(againJSON["paused"] as? Bool == true)
        #expect(againJSON["paused_reason"] as? String == "disk full")
        #expect((againJSON["paused_at"] as? NSNumber)?.int64Value == pausedAt)
        #expect(try await cliStateHash(server, state)["paused_reason"] == "disk full")

        // status shows it.
        let status = try cliJSON(await cliRun(["status", "--config", config, "--json"]).out)
        let row = try #require((status["jobs"] as? [[String: Any]])?.first { $0["name"] as? String == "nightly" })
        #expect(row["paused"] as? Bool == true)
        #expect(row["paused_reason"] as? String == "disk full")
        let table = await cliRun(["status", "--config", config])
        #expect(table.out.contains("paused: nightly by \(by) "), "\(table.out)")

        // A paused job is not triggered without --force: exit 1, nothing written.
        let refused = await cliRun(["trigger", "nightly", "--config", config], environment: env)
        #expect(refused.code == 1)
        #expect(refused.out == "")
        #expect(
            refused.err.hasPrefix("leasehold: job 'nightly' is paused (by \(by) ")
                && refused.err.hasSuffix(
                    ": disk full): not triggered; pass --force to run it once anyway, or resume it\n"),
            "\(refused.err)")
        #expect(try await cliStateHash(server, state)["trigger_requested"] == nil)
        #expect(try await server.command("XLEN", keys.events("nightly")).integer == 1)
        #expect(try await recorder.settle(server: server, channel: channel, marker: "m1") == ["nightly", "m1"])

        // --force runs it once: the trigger is marked forced, the pause stays.
        let forced = await cliRun(["trigger", "nightly", "--force", "--config", config, "--json"], environment: env)
        #expect(forced.code == 0, "\(forced.err)")
        let forcedJSON = try cliJSON(forced.out)
        #expect(forcedJSON["forced"] as? Bool == true)
        #expect(forcedJSON["paused"] as? Bool == true)
        #expect(forcedJSON["coalesced"] as? Bool == false)
        hash = try await cliStateHash(server, state)
        let requested = try #require(hash["trigger_requested"].flatMap { Int64($0) })
        #expect((forcedJSON["trigger_requested"] as? NSNumber)?.int64Value == requested)
        #expect(hash["trigger_by"] == by && hash["trigger_forced"] == "1")
        #expect(hash["paused"] == "1")
        events = try await cliStream(server, keys.events("nightly"))
        #expect(events.last == ["type": "triggered", "by": by, "at": String(requested), "forced": "1"])
        try await eventually("the trigger is published") { recorder.payloads == ["nightly", "m1", "nightly"] }

        // Resume clears every pause field; the pending trigger stays for the leader.
        let resumed = await cliRun(["resume", "nightly", "--config", config, "--json"], environment: env)
        #expect(resumed.code == 0, "\(resumed.err)")
        let resumedJSON = try cliJSON(resumed.out)
        #expect(resumedJSON["changed"] as? Bool == true && resumedJSON["paused"] as? Bool == false)
        #expect(resumedJSON["resumed_by"] as? String == by)
        hash = try await cliStateHash(server, state)
        for field in ["paused", "paused_reason", "paused_by", "paused_at"] { #expect(hash[field] == nil, "\(field)") }
        #expect(hash["trigger_requested"] == String(requested))
        events = try await cliStream(server, keys.events("nightly"))
        let resumedAt = try #require(resumedJSON["resumed_at"] as? NSNumber).int64Value
        #expect(events.last == ["type": "resumed", "by": by, "at": String(resumedAt)])
        try await eventually("the resume is published") { recorder.payloads.count == 4 }
        #expect(recorder.payloads.last == "nightly")

        // Resuming a running job changes nothing.
        let notPaused = await cliRun(["resume", "nightly", "--config", config])
        #expect(notPaused.code == 0)
        #expect(notPaused.out == "nightly is not paused; nothing changed\n")
        #expect(
            try await recorder.settle(server: server, channel: channel, marker: "m2") == [
                "nightly", "m1", "nightly", "nightly", "m2",
            ])

        // A trigger on a running job is not forced; it coalesces with the one still pending.
        let plain = await cliRun(["trigger", "nightly", "--config", config], environment: env)
        #expect(plain.code == 0, "\(plain.err)")
        #expect(plain.out.hasPrefix("triggered nightly: its leader starts one run now (one run for this and"))
        #expect(try await cliStateHash(server, state)["trigger_forced"] == "0")
        events = try await cliStream(server, keys.events("nightly"))
        #expect(events.last?["forced"] == "0")

        // history shows the operator's trail.
        let history = try cliJSON(await cliRun(["history", "nightly", "--config", config, "--json"]).out)
        let types = (history["events"] as? [[String: Any]] ?? []).compactMap { $0["type"] as? String }
        #expect(types == ["paused", "triggered", "resumed", "triggered"])
        let historyTable = await cliRun(["history", "nightly", "--config", config])
        #expect(historyTable.out.contains("by \(by), forced on a paused job"), "\(historyTable.out)")
        await recorder.stop()
    }

    @Test func unknownJobsRedisDownAndUsage() async throws {
        let server = try await RedisServerProcess()
        let config = try cliCatalog(server: server, namespace: "uk", jobs: ["known"])
        for command in [
            ["pause", "ghost"], ["resume", "ghost"], ["trigger", "ghost", "--force"], ["runs", "ghost"],
        ] {
            let result = await cliRun(command + ["--config", config])
            #expect(result.code == 1, "\(command)")
            #expect(
                result.err == "leasehold: unknown job 'ghost': not in the catalog and never seen in namespace uk\n",
                "\(command): \(result.err)")
            #expect(result.out == "")
        }
        // Nothing was written for the unknown job.
        #expect(try await server.command("EXISTS", "{uk}:{ghost}:state", "{uk}:{ghost}:events").integer == 0)
        // A job only Redis knows (ns:jobs, from a member's catalog) can be steered without a catalog.
        _ = try await server.command("SADD", "{leasehold}:jobs", "remote")
        let remote = await cliRun(["pause", "remote", "--redis", server.url])
        #expect(remote.code == 0, "\(remote.err)")
        #expect(try await server.command("HGET", "{leasehold}:{remote}:state", "paused").string == "1")
        // A catalog job that never ran has no runs yet: an empty list, not an error.
        let empty = await cliRun(["runs", "known", "--config", config])
        #expect(empty.code == 0 && empty.out == "no runs recorded for job known\n")
        #expect(
            try cliJSON(await cliRun(["runs", "known", "--config", config, "--json"]).out)["runs"] as? [Any] != nil)

        let port = FreePort.next()
        for command in [["pause", "x"], ["resume", "x"], ["trigger", "x"], ["runs", "x"]] {
            let result = await cliRun(command + ["--redis", "redis://127.0.0.1:\(port)/0"])
            #expect(result.code == 1)
            #expect(
                result.err
                    == "leasehold: cannot reach Redis at redis://127.0.0.1:\(port)/0: connection refused — is redis-server running? (set --redis or LEASEHOLD_REDIS_URL)\n"
            )
        }
        for bad in [["pause"], ["trigger"], ["runs", "x", "--limit", "0"], ["resume", "x", "--force"]] {
            let result = await cliRun(bad + ["--redis", server.url])
            #expect(result.code == 2, "\(bad): \(result)")
        }
    }

    @Test func runsPairsTheStreamNewestFirst() async throws {
        let server = try await RedisServerProcess()
        let now = try #require(SnapshotReader.timeMs(try await server.command("TIME")))
        let key = "{leasehold}:{billing}:runs"
        // Oldest first, as members append; explicit ids keep the order.
        for (offset, fields) in cliRunEntries(now: now).reversed().enumerated() {
            var command = ["XADD", key, "\(offset + 1)-0"]
            for (field, value) in fields.sorted(by: { $0.key < $1.key }) { command += [field, value] }
            _ = try await server.command(command)
        }
        _ = try await server.command(
            "HSET", "{leasehold}:{billing}:state", "running", "1", "last_run_token", "7", "last_run_started",
            String(now - 5_000))
        let result = await cliRun(["runs", "billing", "--redis", server.url, "--json"])
        #expect(result.code == 0, "\(result.err)")
        let runs = try #require(try cliJSON(result.out)["runs"] as? [[String: Any]])
        #expect(
            runs.map { ($0["started_at"] as? NSNumber)?.int64Value } == [
                now - 5_000, now - 59_000, now - 120_000, now - 3_599_000, now - 7_199_000,
            ])
        #expect(runs.map { $0["result"] as? String } == [nil, "failure", "success", nil, "success"])
        #expect(runs.map { $0["trigger"] as? String } == ["retry", "schedule", "manual", "schedule", "schedule"])
        #expect(runs.map { ($0["attempt"] as? NSNumber)?.intValue } == [2, 1, 1, 1, 1])
        #expect(runs[0]["running"] as? Bool == true)
        #expect(runs[3]["running"] as? Bool == false && runs[3]["finished_at"] is NSNull)

        let limited = try cliJSON(
            await cliRun(["runs", "billing", "--redis", server.url, "--json", "--limit", "2"]).out)
        #expect((limited["runs"] as? [[String: Any]])?.map { ($0["token"] as? NSNumber)?.intValue } == [7, 7])
        let table = await cliRun(["runs", "billing", "--redis", server.url])
        let lines = table.out.split(separator: "\n").map(String.init)
        #expect(lines.count == 6, "\(table.out)")
        #expect(lines[0].hasPrefix("SLOT (UTC)  "))
        #expect(lines[1].contains("running") && lines[4].contains("unfinished"))

        // Entries of a type this version does not know are skipped, and reading pages past them.
        for i in 0..<150 {
            _ = try await server.command("XADD", key, "\(100 + i)-0", "type", "future_kind", "n", "\(i)")
        }
        let paged = try cliJSON(await cliRun(["runs", "billing", "--redis", server.url, "--json", "--limit", "3"]).out)
        #expect((paged["runs"] as? [[String: Any]])?.map { ($0["token"] as? NSNumber)?.intValue } == [7, 7, 6])
    }

    @Test func statusShowsPauseNextRunAndLastSuccessFromTheStateHash() async throws {
        let server = try await RedisServerProcess()
        let config = try cliCatalog(server: server, namespace: "sn", jobs: ["held", "plain"])
        let now = try #require(SnapshotReader.timeMs(try await server.command("TIME")))
        _ = try await server.command(
            "HSET", "{sn}:{held}:state", "paused", "1", "paused_reason", "audit", "paused_by", "bob@ops",
            "paused_at", String(now - 60_000), "next_run_at", String(now + 3_600_000), "last_success_at",
            String(now - 86_400_000))
        // A resumed job may carry paused=0 (contract: absent or "0").
        _ = try await server.command("HSET", "{sn}:{plain}:state", "paused", "0")
        let json = try cliJSON(await cliRun(["status", "--config", config, "--json"]).out)
        let rows = try #require(json["jobs"] as? [[String: Any]])
        let held = try #require(rows.first { $0["name"] as? String == "held" })
        let plain = try #require(rows.first { $0["name"] as? String == "plain" })
        #expect(held["paused"] as? Bool == true)
        #expect(held["paused_reason"] as? String == "audit")
        #expect((held["next_run_at"] as? NSNumber)?.int64Value == now + 3_600_000)
        #expect((held["last_success_at"] as? NSNumber)?.int64Value == now - 86_400_000)
        #expect(plain["paused"] as? Bool == false)
        #expect(
            plain["paused_reason"] is NSNull && plain["next_run_at"] is NSNull && plain["last_success_at"] is NSNull)

        let table = await cliRun(["status", "--config", config])
        let lines = table.out.split(separator: "\n").map(String.init)
        let header = try #require(lines.first)
        #expect(header.contains("NEXT RUN") && header.contains("PAUSED"))
        // Cells by the header's column offsets (the table is ASCII).
        func column(_ name: String) throws -> Int {
            header.distance(from: header.startIndex, to: try #require(header.range(of: name)).lowerBound)
        }
        let (nextColumn, pausedColumn) = (try column("NEXT RUN"), try column("PAUSED"))
        let heldLine = try #require(lines.first { $0.hasPrefix("held") })
        let plainLine = try #require(lines.first { $0.hasPrefix("plain") })
        let heldNext = heldLine.dropFirst(nextColumn)
        #expect(heldNext.hasPrefix("in 59m") || heldNext.hasPrefix("in 1h00m"), "\(table.out)")
        #expect(heldLine.dropFirst(pausedColumn).hasPrefix("yes "))
        #expect(plainLine.dropFirst(nextColumn).hasPrefix("- "))
        #expect(plainLine.dropFirst(pausedColumn).hasPrefix("- "))
        #expect(table.out.contains("paused: held by bob@ops 1m00s ago: audit\n"), "\(table.out)")
    }
}
