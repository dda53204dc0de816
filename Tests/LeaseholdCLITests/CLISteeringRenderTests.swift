import Foundation
import Leasehold
import Testing

@testable import LeaseholdCLI

/// Runs-stream entries of one job, newest first, as XREVRANGE returns them: a retry in
/// progress, the failed first attempt it retries, a manual run, a start written by an older
/// member (no `type`), and a finish whose start the stream cap trimmed away.
func cliRunEntries(now: Int64) -> [[String: String]] {
    func ms(_ offset: Int64) -> String { String(now + offset) }
    return [
        [
            "type": "started", "slot": ms(-60_000), "token": "7", "member": "node-b", "started": ms(-5_000),
            "attempt": "2", "trigger": "retry",
        ],
        [
            "type": "finished", "slot": ms(-60_000), "token": "7", "member": "node-b", "started": ms(-59_000),
            "finished": ms(-58_600), "duration_ms": "400", "result": "failure", "attempt": "1", "trigger": "schedule",
        ],
        [
            "type": "started", "slot": ms(-60_000), "token": "7", "member": "node-b", "started": ms(-59_000),
            "attempt": "1", "trigger": "schedule",
        ],
        [
            "type": "finished", "slot": "", "token": "6", "member": "node-a", "started": ms(-120_000),
            "finished": ms(-118_000), "duration_ms": "2000", "result": "success", "attempt": "1", "trigger": "manual",
        ],
        [
            "type": "started", "slot": "", "token": "6", "member": "node-a", "started": ms(-120_000), "attempt": "1",
            "trigger": "manual",
        ],
        ["slot": ms(-3_600_000), "token": "5", "member": "node-a", "started": ms(-3_599_000)],
        [
            "type": "finished", "slot": ms(-7_200_000), "token": "4", "member": "node-c", "started": ms(-7_199_000),
            "finished": ms(-7_198_000), "duration_ms": "1000", "result": "success", "attempt": "1",
            "trigger": "schedule",
        ],
    ]
}

@Suite("CLI steering rendering (pure)")
struct CLISteeringRenderTests {
    @Test func runsPairStartsWithFinishesNewestFirst() {
        let now = cliFixedNow
        let entries = cliRunEntries(now: now)
        let runs = RunPairing.pair(
            entries, limit: 10, complete: true, running: (token: "7", started: String(now - 5_000)))
        #expect(
            runs.map(\.startedAtMs) == [now - 5_000, now - 59_000, now - 120_000, now - 3_599_000, now - 7_199_000])
        #expect(runs.map(\.result) == [nil, "failure", "success", nil, "success"])
        #expect(runs.map(\.attempt) == [2, 1, 1, 1, 1])
        #expect(runs.map(\.trigger) == ["retry", "schedule", "manual", "schedule", "schedule"])
        #expect(runs.map(\.running) == [true, false, false, false, false])
        #expect(runs[1].durationMs == 400 && runs[1].finishedAtMs == now - 58_600)
        #expect(runs[2].slotMs == nil)
        // The legacy start: attempt 1, trigger schedule, no finish.
        #expect(runs[3].slotMs == now - 3_600_000 && runs[3].token == 5 && runs[3].finishedAtMs == nil)

        // --limit keeps the newest; a partial read drops a finish it cannot place.
        #expect(RunPairing.pair(entries, limit: 2, complete: false).map(\.token) == [7, 7])
        let partial = RunPairing.pair(entries, limit: 10, complete: false)
        #expect(partial.map(\.token) == [7, 7, 6, 5])
        // Without the state naming it, a start with no finish is not running.
        #expect(partial[0].running == false)
    }

    @Test func runsTableAndJSONGolden() throws {
        let now = cliFixedNow
        let list = JobRuns(
            job: "billing-sync", nowMs: now,
            runs: RunPairing.pair(
                cliRunEntries(now: now), limit: 10, complete: true,
                running: (token: "7", started: String(now - 5_000))))
        let expected = """
            SLOT (UTC)           STARTED (UTC)            FINISHED (UTC)           DURATION     RESULT      ATTEMPT  TRIGGER   MEMBER  TOKEN
            2026-05-01 09:59:00  2026-05-01 09:59:55.000  -                        5.0s so far  running     2        retry     node-b  7
            2026-05-01 09:59:00  2026-05-01 09:59:01.000  2026-05-01 09:59:01.400  400ms        failure     1        schedule  node-b  7
            -                    2026-05-01 09:58:00.000  2026-05-01 09:58:02.000  2.0s         success     1        manual    node-a  6
            2026-05-01 09:00:00  2026-05-01 09:00:01.000  -                        -            unfinished  1        schedule  node-a  5
            2026-05-01 08:00:00  2026-05-01 08:00:01.000  2026-05-01 08:00:02.000  1.0s         success     1        schedule  node-c  4

            """
        #expect(Render.runsTable(list) == expected)
        #expect(Render.runsTable(JobRuns(job: "x", nowMs: now, runs: [])) == "no runs recorded for job x\n")

        let json = Render.runsJSON(list)
        #expect(json.hasSuffix("}\n") && json.filter { $0 == "\n" }.count == 1)
        let runs = try #require(try cliJSON(json)["runs"] as? [[String: Any]])
        #expect(runs.count == 5)
        for run in runs {
            #expect(
                Set(run.keys).isSuperset(of: [
                    "slot", "started_at", "finished_at", "duration_ms", "result", "attempt", "trigger", "member",
                    "token",
                ]))
        }
        #expect(runs[0]["finished_at"] is NSNull && runs[0]["result"] is NSNull && runs[0]["duration_ms"] is NSNull)
        #expect(runs[0]["running"] as? Bool == true)
        #expect((runs[1]["started_at"] as? NSNumber)?.int64Value == now - 59_000)
        #expect((runs[1]["finished_at"] as? NSNumber)?.int64Value == now - 58_600)
        #expect((runs[1]["duration_ms"] as? NSNumber)?.int64Value == 400)
        #expect(runs[2]["slot"] is NSNull)
        #expect(runs[3]["result"] is NSNull && runs[3]["running"] as? Bool == false)
        #expect((runs[4]["token"] as? NSNumber)?.uint64Value == 4)
    }

    @Test func historyNamesTheOperatorsAndTheRunnersEvents() throws {
        let now = cliFixedNow
        let history = JobHistory(
            job: "nightly", nowMs: now,
            events: [
                HistoryEvent(
                    id: "1-0", type: "paused", atMs: now - 4_000, by: "ops@bastion", reason: "disk full"),
                HistoryEvent(id: "2-0", type: "triggered", atMs: now - 3_000, by: "ops@bastion", forced: true),
                HistoryEvent(id: "3-0", type: "resumed", atMs: now - 2_000, by: "dev@laptop"),
                HistoryEvent(
                    id: "4-0", type: "missed_slot", member: "node-a", token: 9, atMs: now - 1_000,
                    slotMs: now - 3_600_000, deadlineMs: 300_000),
                HistoryEvent(id: "5-0", type: "triggered", atMs: now, by: "dev@laptop", forced: false),
            ])
        let expected = """
            TIME (UTC)               EVENT        MEMBER  TOKEN  GAP  DETAIL
            2026-05-01 09:59:56.000  paused       -       -      -    by ops@bastion: disk full
            2026-05-01 09:59:57.000  triggered    -       -      -    by ops@bastion, forced on a paused job
            2026-05-01 09:59:58.000  resumed      -       -      -    by dev@laptop
            2026-05-01 09:59:59.000  missed slot  node-a  9      -    slot 2026-05-01 09:00:00 not started in time (deadline 5m00s)
            2026-05-01 10:00:00.000  triggered    -       -      -    by dev@laptop

            """
        #expect(Render.historyTable(history) == expected)
        let events = try #require(try cliJSON(Render.historyJSON(history))["events"] as? [[String: Any]])
        #expect(events[0]["reason"] as? String == "disk full")
        #expect(events[1]["forced"] as? Bool == true)
        #expect(events[4]["forced"] as? Bool == false)
        #expect(events[2]["forced"] is NSNull)
        #expect((events[3]["slot"] as? NSNumber)?.int64Value == now - 3_600_000)
        #expect((events[3]["deadline_ms"] as? NSNumber)?.int64Value == 300_000)
    }

    @Test func nextStartsShowTheJitterWindow() throws {
        let berlin = try #require(TimeZone(identifier: "Europe/Berlin"))
        let from = try #require(NextStarts.parseTime("2026-03-27T12:00:00Z"))
        let cron = try CronSchedule(expression: "30 2 * * *", timeZone: berlin)
        let job = NextStarts.Job(
            name: "nightly", schedule: .cron(cron), timeZone: berlin, jitter: .seconds(300),
            slotsMs: NextStarts.slots(.cron(cron), count: 2, fromMs: from))
        let expected = """
            next 2 starts after 2026-03-27 12:00:00 +00:00:
            nightly  cron "30 2 * * *" (Europe/Berlin, jitter up to 5m)
              2026-03-28 02:30:00 +01:00 .. 2026-03-28 02:35:00 +01:00
              2026-03-29 03:00:00 +02:00 .. 2026-03-29 03:05:00 +02:00

            """
        #expect(NextStarts.text([job], count: 2, fromMs: from) == expected)
        let starts = try #require(
            (NextStarts.json([job]).serialized.data(using: .utf8)).flatMap {
                try JSONSerialization.jsonObject(with: $0) as? [[String: Any]]
            })
        #expect((starts[0]["jitter_ms"] as? NSNumber)?.int64Value == 300_000)
        // No `jitter:` in today's catalog: a spec without the property has none.
        #expect(NextStarts.jitter(of: JobSpec(name: "n", handler: "log", schedule: .cron(cron))) == nil)
    }

    @Test func validateNextPrintsStartsInTheJobsZoneAcrossDSTDays() async throws {
        let path = try cliTempFile(
            """
            version: 1
            jobs:
              - { name: spring, handler: log, schedule: { cron: "30 2 * * *", timezone: Europe/Berlin } }
              - { name: autumn, handler: log, schedule: { cron: "30 2 * * *", timezone: Europe/Berlin } }
              - { name: quarter, handler: log, schedule: { every: 15m } }
              - { name: consumer, handler: log, schedule: continuous }
            """)
        // Spring: 02:30 does not exist on 29 March (02:00 CET -> 03:00 CEST), so it runs at 03:00.
        let spring = await cliRun(["validate", path, "--next", "3", "--from", "2026-03-27T12:00:00Z"])
        #expect(spring.code == 0, "\(spring.err)")
        let lines = spring.out.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines[0].hasSuffix("ok — 4 jobs (1 every, 2 cron, 1 continuous), namespace leasehold"))
        #expect(lines[1] == "next 3 starts after 2026-03-27 12:00:00 +00:00:")
        #expect(lines[2] == "spring  cron \"30 2 * * *\" (Europe/Berlin)")
        #expect(
            Array(lines[3...5]) == [
                "  2026-03-28 02:30:00 +01:00", "  2026-03-29 03:00:00 +02:00", "  2026-03-30 02:30:00 +02:00",
            ])
        #expect(lines[10].hasPrefix("quarter  every 15m (UTC"))
        #expect(
            Array(lines[11...13]) == [
                "  2026-03-27 12:00:00 +00:00", "  2026-03-27 12:15:00 +00:00", "  2026-03-27 12:30:00 +00:00",
            ])
        #expect(lines[14] == "consumer  continuous: runs while led, no scheduled starts")

        // Autumn: 02:30 happens twice on 25 October; the job runs at the first (CEST) only.
        let autumn = await cliRun(["validate", path, "--next", "2", "--from", "2026-10-24T12:00:00Z", "--json"])
        #expect(autumn.code == 0, "\(autumn.err)")
        let jobs = try #require(try cliJSON(autumn.out)["next_starts"] as? [[String: Any]])
        let starts = try #require(jobs[1]["starts"] as? [[String: Any]])
        #expect(starts.map { $0["local"] as? String } == ["2026-10-25 02:30:00 +02:00", "2026-10-26 02:30:00 +01:00"])
        #expect((starts[0]["at_ms"] as? NSNumber)?.int64Value == NextStarts.parseTime("2026-10-25T00:30:00Z"))
        #expect(starts[0]["latest_ms"] is NSNull)
        #expect(jobs[1]["jitter_ms"] is NSNull)
        #expect((jobs[3]["starts"] as? [Any])?.isEmpty == true)

        // Without --from it counts from now; bad values are usage errors.
        let now = await cliRun(["validate", path, "--next", "1"])
        #expect(now.code == 0 && now.out.contains("next 1 start after "))
        for bad in [["--next", "0"], ["--next", "1", "--from", "yesterday"], ["--from", "2026-01-01T00:00:00Z"]] {
            let result = await cliRun(["validate", path] + bad)
            #expect(result.code == 2, "\(bad): \(result)")
            #expect(result.err.contains("--next") || result.err.contains("--from"), "\(result.err)")
        }
    }
}
