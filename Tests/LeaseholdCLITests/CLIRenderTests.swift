import Foundation
import Leasehold
import Testing

@testable import LeaseholdCLI

/// A fixed snapshot: now = 2026-05-01 10:00:00 UTC.
let cliFixedNow: Int64 = 1_777_629_600_000

func cliFixedSnapshot() -> ClusterSnapshot {
    let now = cliFixedNow
    var snapshot = ClusterSnapshot(
        nowMs: now, namespace: "prod",
        jobs: [
            JobStatus(
                name: "billing-sync",
                leader: LeaderInfo(
                    member: "node-a", instance: "0a1b2c3d", token: 1_777_629_000_000_123, expiresInMs: 8_412),
                preferred: "node-a",
                lastRun: RunInfo(
                    startedAtMs: now - 12_500, finishedAtMs: now - 12_160, durationMs: 340, result: "ok",
                    token: 1_777_629_000_000_123),
                nextRunAtMs: now + 17_500),
            JobStatus(
                name: "nightly-cleanup", leader: nil, preferred: "node-b",
                lastRun: RunInfo(
                    startedAtMs: now - 7_200_000, finishedAtMs: now - 7_000_000, durationMs: 200_000,
                    result: "failed: exit 3"),
                leaderless: Leaderless(sinceMs: now - 95_000, source: .released), nextRunAtMs: now - 3_600_000),
            JobStatus(
                name: "queue-consumer",
                leader: LeaderInfo(member: "node-b", instance: "ffee0011", token: 42, expiresInMs: 950),
                preferred: "node-a", lastRun: RunInfo(startedAtMs: now - 3_725_000, running: true, token: 42)),
            JobStatus(
                name: "reindex", inCatalog: false, leader: nil, preferred: "node-b",
                leaderless: Leaderless(sinceMs: now - 4_200, source: .expiredEstimate)),
            JobStatus(name: "warmup", leader: nil, preferred: nil),
        ],
        members: [
            MemberStatus(
                name: "node-a", instance: "0a1b2c3d", host: "host-a", pid: 4242, weight: 1, version: "0.1.0",
                startedAtMs: now - 90_061_000, lastTickMs: now - 1_200, heartbeatExpiresAtMs: now + 8_800, live: true,
                jobsLed: 1, catalog: "a1b2c3d4e5f60718", jobs: 3),
            MemberStatus(
                name: "node-b", instance: "ffee0011", host: "host-b", pid: 7, weight: 2.5, version: nil,
                startedAtMs: nil, lastTickMs: now - 300, heartbeatExpiresAtMs: now + 9_700, live: true, jobsLed: 1),
            MemberStatus(
                name: "node-c", heartbeatExpiresAtMs: now - 61_000, live: false),
        ])
    // An operator paused nightly-cleanup 20 minutes ago (its slot an hour ago stays unrun),
    // and triggered reindex 2 s ago.
    snapshot.jobs[1].paused = true
    snapshot.jobs[1].pausedReason = "disk full on the archive"
    snapshot.jobs[1].pausedBy = "ops@bastion"
    snapshot.jobs[1].pausedAtMs = now - 1_200_000
    snapshot.jobs[3].triggerRequestedAtMs = now - 2_000
    snapshot.jobs[0].lastSuccessAtMs = now - 12_160
    return snapshot
}

@Suite("CLI rendering (pure)")
struct CLIRenderTests {
    @Test func statusTableGolden() {
        let expected = """
            JOB                       LEADER  TOKEN             EXPIRES IN  PREFERRED  LAST RUN           RESULT          NEXT RUN            PAUSED  LEADERLESS
            billing-sync              node-a  1777629000000123  8.4s        node-a     12s ago (340ms)    ok              in 17s              -       -
            nightly-cleanup           -       -                 -           node-b     1h56m ago (3m20s)  failed: exit 3  due 1h00m ago       yes     1m35s
            queue-consumer            node-b  42                950ms       node-a     started 1h02m ago  running         -                   -       -
            reindex (not in catalog)  -       -                 -           node-b     -                  -               triggered 2.0s ago  -       ~4.2s
            warmup                    -       -                 -           -          -                  -               -                   -       never led
            paused: nightly-cleanup by ops@bastion 20m00s ago: disk full on the archive
            5 jobs, 2 led, 3 without a leader; 2 live members (namespace prod)

            """
        #expect(Render.statusTable(cliFixedSnapshot()) == expected)
    }

    @Test func membersTableGolden() {
        let expected = """
            MEMBER  HOST    PID   WEIGHT  VERSION  CATALOG  JOBS  UP SINCE                     HEARTBEAT  JOBS LED  STATE
            node-a  host-a  4242  1       0.1.0    a1b2c3d  3     2026-04-30 08:58:59 (1d01h)  1.2s ago   1         live
            node-b  host-b  7     2.5     -        -        -     -                            300ms ago  1         live
            node-c  -       -     1       -        -        -     -                            -          0         expired 1m01s ago
            3 members, 2 live

            """
        #expect(Render.membersTable(cliFixedSnapshot()) == expected)
    }

    @Test func statusJSONGolden() throws {
        let json = Render.statusJSON(cliFixedSnapshot())
        #expect(json.hasSuffix("}\n"))
        #expect(json.filter { $0 == "\n" }.count == 1)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        let jobs = try #require(object["jobs"] as? [[String: Any]])
        #expect(
            jobs.map { $0["name"] as? String } == [
                "billing-sync", "nightly-cleanup", "queue-consumer", "reindex", "warmup",
            ])
        let leader = try #require(jobs[0]["leader"] as? [String: Any])
        #expect((leader["token"] as? NSNumber)?.uint64Value == 1_777_629_000_000_123)
        #expect(leader["member"] as? String == "node-a")
        #expect(leader["instance"] as? String == "0a1b2c3d")
        #expect((leader["expires_in_ms"] as? NSNumber)?.int64Value == 8_412)
        #expect(jobs[1]["leader"] is NSNull)
        #expect((jobs[1]["leaderless_ms"] as? NSNumber)?.int64Value == 95_000)
        #expect(jobs[1]["leaderless_source"] as? String == "released")
        #expect(jobs[4]["leaderless_ms"] is NSNull)
        #expect(jobs[4]["last_run"] is NSNull)
        let run = try #require(jobs[0]["last_run"] as? [String: Any])
        #expect((run["duration_ms"] as? NSNumber)?.int64Value == 340)
        #expect((run["age_ms"] as? NSNumber)?.int64Value == 12_160)
        #expect(run["result"] as? String == "ok")
        let members = try #require(object["members"] as? [[String: Any]])
        #expect(members.map { $0["name"] as? String } == ["node-a", "node-b", "node-c"])
        #expect((members[1]["weight"] as? NSNumber)?.doubleValue == 2.5)
        #expect(members[2]["live"] as? Bool == false)
        // Steering fields: the pause and its reason, the next slot, the last success (ms or null).
        #expect(jobs[1]["paused"] as? Bool == true)
        #expect(jobs[1]["paused_reason"] as? String == "disk full on the archive")
        #expect(jobs[1]["paused_by"] as? String == "ops@bastion")
        #expect(jobs[0]["paused"] as? Bool == false)
        #expect(jobs[0]["paused_reason"] is NSNull)
        #expect((jobs[0]["next_run_at"] as? NSNumber)?.int64Value == cliFixedNow + 17_500)
        #expect(jobs[2]["next_run_at"] is NSNull)
        #expect((jobs[0]["last_success_at"] as? NSNumber)?.int64Value == cliFixedNow - 12_160)
        #expect(jobs[1]["last_success_at"] is NSNull)
        #expect((jobs[3]["trigger_requested"] as? NSNumber)?.int64Value == cliFixedNow - 2_000)
        #expect(jobs[0]["trigger_requested"] is NSNull)
        // The exact first bytes pin the key order.
        #expect(
            json.hasPrefix(
                #"{"now_ms":1777629600000,"namespace":"prod","jobs":[{"name":"billing-sync","in_catalog":true,"leader":{"member":"node-a","instance":"0a1b2c3d","token":1777629000000123,"expires_in_ms":8412},"preferred":"node-a","last_run":{"started_at_ms":"#
            ))
    }

    @Test func statusTableMarksJobsNotCarriedAndCountsCatalogs() throws {
        var snapshot = cliFixedSnapshot()
        snapshot.jobs[3].notCarried = true
        snapshot.jobs[4].notCarried = true
        snapshot.jobs[0].carriedBy = ["node-a", "node-b"]
        snapshot.members[1].catalog = "b0b1b2b3b4b5b6b7"
        snapshot.catalogs = [
            CatalogAdvert(digest: "a1b2c3d4e5f60718", members: ["node-a"], jobs: ["billing-sync"]),
            CatalogAdvert(digest: "b0b1b2b3b4b5b6b7", members: ["node-b"], jobs: ["billing-sync"]),
        ]
        let lines = Render.statusTable(snapshot).split(separator: "\n").map(String.init)
        #expect(lines[4].hasPrefix("reindex (not in catalog, not carried)  -  "), "\(lines)")
        #expect(lines[5].hasPrefix("warmup (not carried)"), "\(lines)")
        #expect(
            Array(lines.suffix(3)) == [
                "5 jobs, 2 led, 3 without a leader; 2 live members (namespace prod)",
                "2 catalogs among 2 live members",
                "2 jobs not carried by any live member (leasehold prune deletes their keys)",
            ])

        let object = try cliJSON(Render.statusJSON(snapshot))
        #expect(
            object["catalogs"] as? [String: [String]] == [
                "a1b2c3d4e5f60718": ["node-a"], "b0b1b2b3b4b5b6b7": ["node-b"],
            ])
        let jobs = try #require(object["jobs"] as? [[String: Any]])
        #expect(jobs[0]["carried_by"] as? [String] == ["node-a", "node-b"])
        #expect(jobs[4]["carried_by"] as? [String] == [])

        // One digest and an older member: no count of catalogs, but the older member is named.
        snapshot.members[1].catalog = nil
        snapshot.catalogs.removeLast()
        snapshot.jobs[3].notCarried = false
        snapshot.jobs[4].notCarried = false
        #expect(
            Render.statusTable(snapshot).hasSuffix(
                "(namespace prod)\n1 live member of an older version advertises no catalog: counted as carrying every job\n"
            ))
        let members = try #require(try cliJSON(Render.membersJSON(snapshot))["members"] as? [[String: Any]])
        #expect(members[0]["catalog"] as? String == "a1b2c3d4e5f60718")
        #expect((members[0]["jobs"] as? NSNumber)?.intValue == 3)
        #expect(members[1]["catalog"] is NSNull)
        #expect(members[1]["jobs"] is NSNull)
    }

    @Test func historyTableGolden() {
        let now = cliFixedNow
        let history = JobHistory(
            job: "billing-sync", nowMs: now,
            events: [
                HistoryEvent(
                    id: "1-0", type: "acquired", member: "node-a", owner: "node-a@0a1b2c3d", token: 100,
                    atMs: now - 60_000),
                HistoryEvent(
                    id: "2-0", type: "expired_takeover", member: "node-b", owner: "node-b@ffee0011", token: 101,
                    atMs: now - 30_000, gapMs: 2_150, previous: "node-a@0a1b2c3d:100"),
                HistoryEvent(
                    id: "3-0", type: "lost", member: "node-a", owner: "node-a@0a1b2c3d", token: 100, atMs: now - 29_000,
                    holder: "node-b@ffee0011:101"),
                HistoryEvent(
                    id: "4-0", type: "forced_release", member: "node-b", owner: "node-b@ffee0011", token: 101,
                    atMs: now - 1_000, by: "leasehold-cli@ops"),
            ])
        let expected = """
            TIME (UTC)               EVENT             MEMBER  TOKEN  GAP   DETAIL
            2026-05-01 09:59:00.000  acquired          node-a  100    -     instance 0a1b2c3d
            2026-05-01 09:59:30.000  expired takeover  node-b  101    2.1s  instance ffee0011; took over from node-a (token 100) after its lease expired
            2026-05-01 09:59:31.000  lost              node-a  100    -     instance 0a1b2c3d; lease now held by node-b (token 101)
            2026-05-01 09:59:59.000  forced release    node-b  101    -     instance ffee0011; deleted by leasehold-cli@ops (unfenced)

            """
        #expect(Render.historyTable(history) == expected)
        #expect(Render.historyTable(JobHistory(job: "x", nowMs: now, events: [])) == "no events recorded for job x\n")
    }

    @Test func durationsAndTimestamps() {
        #expect(Render.duration(0) == "0ms")
        #expect(Render.duration(999) == "999ms")
        #expect(Render.duration(1_000) == "1.0s")
        #expect(Render.duration(9_999) == "9.9s")
        #expect(Render.duration(10_000) == "10s")
        #expect(Render.duration(3_599_999) == "59m59s")
        #expect(Render.duration(86_400_000 * 3 + 3_600_000 * 4) == "3d04h")
        #expect(Render.timestamp(0, millis: true) == "1970-01-01 00:00:00.000")
        #expect(Render.timestamp(951_782_400_000, millis: false) == "2000-02-29 00:00:00")
        #expect(Render.timestamp(cliFixedNow + 7, millis: true) == "2026-05-01 10:00:00.007")
    }

    @Test func jsonEscaping() {
        #expect(JSONValue.string("a\"b\\c\n\u{1}é").serialized == #""a\"b\\c\n\u0001é""#)
        #expect(
            JSONValue.object([("x", .null), ("y", .array([.bool(true), .double(1.5), .uint(UInt64.max)]))]).serialized
                == #"{"x":null,"y":[true,1.5,18446744073709551615]}"#)
    }
}
