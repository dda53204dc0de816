import Leasehold

/// Pure rendering of snapshots: aligned tables for people, one JSON object for programs.
/// Nothing here reads the clock or Redis: every age is relative to the snapshot's `nowMs`.
package enum Render {
    // MARK: - Status

    /// The `status` table (ends with a newline).
    package static func statusTable(_ snapshot: ClusterSnapshot) -> String {
        var rows: [[String]] = [
            [
                "JOB", "LEADER", "TOKEN", "EXPIRES IN", "PREFERRED", "LAST RUN", "RESULT", "NEXT RUN", "PAUSED",
                "LEADERLESS",
            ]
        ]
        for job in snapshot.jobs {
            var lastRun = "-"
            var result = "-"
            if let run = job.lastRun {
                if run.running && run.finishedAtMs == nil {
                    lastRun = "started \(age(snapshot.nowMs - run.startedAtMs)) ago"
                    result = "running"
                } else if let finished = run.finishedAtMs {
                    lastRun =
                        "\(age(snapshot.nowMs - finished)) ago" + (run.durationMs.map { " (\(duration($0)))" } ?? "")
                    result = run.result ?? "-"
                } else {
                    lastRun = "started \(age(snapshot.nowMs - run.startedAtMs)) ago"
                    result = "unfinished"
                }
            }
            var leaderless = "-"
            if let gap = job.leaderless {
                leaderless = (gap.source == .released ? "" : "~") + age(snapshot.nowMs - gap.sinceMs)
            } else if job.leader == nil {
                leaderless = "never led"
            }
            let notes = (job.inCatalog ? [] : ["not in catalog"]) + (job.notCarried ? ["not carried"] : [])
            rows.append([
                job.name + (notes.isEmpty ? "" : " (\(notes.joined(separator: ", ")))"),
                job.leader?.member ?? "-",
                job.leader.map { String($0.token) } ?? "-",
                job.leader.map { duration($0.expiresInMs) } ?? "-",
                job.preferred ?? "-",
                lastRun, result, nextRun(job, nowMs: snapshot.nowMs), job.paused ? "yes" : "-", leaderless,
            ])
        }
        let led = snapshot.jobs.filter { $0.leader != nil }.count
        let live = snapshot.members.filter(\.live).count
        var text = table(rows)
        for job in snapshot.jobs {
            if let problem = job.problem { text += "problem: \(job.name): \(problem)\n" }
        }
        for job in snapshot.jobs where job.paused {
            text += "paused: \(job.name) by \(job.pausedBy ?? "?")"
            if let at = job.pausedAtMs { text += " \(age(snapshot.nowMs - at)) ago" }
            text += (job.pausedReason.map { ": \($0)" } ?? "") + "\n"
        }
        text +=
            "\(snapshot.jobs.count) \(plural(snapshot.jobs.count, "job")), \(led) led, "
            + "\(snapshot.jobs.count - led) without a leader; \(live) live \(plural(live, "member"))"
            + " (namespace \(snapshot.namespace))\n"
        text += catalogLines(snapshot)
        return text
    }

    /// The NEXT RUN cell: a pending manual trigger, else the next slot relative to now (a slot
    /// in the past is due: its leader is about to start it, or is missing it).
    static func nextRun(_ job: JobStatus, nowMs: Int64) -> String {
        if let trigger = job.triggerRequestedAtMs { return "triggered \(age(nowMs - trigger)) ago" }
        guard let next = job.nextRunAtMs else { return "-" }
        return next >= nowMs ? "in \(duration(next - nowMs))" : "due \(duration(nowMs - next)) ago"
    }

    /// What the status table adds about the members' catalogs: how many digests are live
    /// when they differ (a rollout in progress, or a member left behind), members whose job
    /// set is unknown, and the jobs no live member carries.
    static func catalogLines(_ snapshot: ClusterSnapshot) -> String {
        var text = ""
        if let until = snapshot.quarantineUntilMs {
            text +=
                "quarantine: Redis lost this namespace's data; no lease is granted for another"
                + " \(until - snapshot.nowMs) ms (one lease TTL, so no leader of the lost data can still act)\n"
        }
        let live = snapshot.members.filter(\.live)
        let older = live.filter { $0.catalog == nil }.count
        let digests = snapshot.catalogs.count
        if digests > 1 {
            text += "\(digests) \(plural(digests, "catalog")) among \(live.count) live \(plural(live.count, "member"))"
            if older > 0 { text += " (\(older) of an older version, advertising none)" }
            text += "\n"
        } else if digests == 1 && older > 0 {
            text +=
                "\(older) live \(plural(older, "member")) of an older version \(older == 1 ? "advertises" : "advertise")"
                + " no catalog: counted as carrying every job\n"
        }
        for advert in snapshot.catalogs {
            if let problem = advert.problem {
                text +=
                    "problem: catalog \(advert.digest): \(problem); \(advert.members.joined(separator: ", "))"
                    + " counted as carrying every job\n"
            }
        }
        let notCarried = snapshot.jobs.filter(\.notCarried).count
        if notCarried > 0 {
            text +=
                "\(notCarried) \(plural(notCarried, "job")) not carried by any live member"
                + " (leasehold prune deletes \(notCarried == 1 ? "its" : "their") keys)\n"
        }
        return text
    }

    /// The `status --json` object (one line, ends with a newline).
    package static func statusJSON(_ snapshot: ClusterSnapshot) -> String {
        JSONValue.object([
            ("now_ms", .int(snapshot.nowMs)),
            ("namespace", .string(snapshot.namespace)),
            ("jobs", .array(snapshot.jobs.map { jobJSON($0, nowMs: snapshot.nowMs) })),
            ("members", .array(snapshot.members.map { memberJSON($0, nowMs: snapshot.nowMs) })),
            (
                "catalogs",
                .object(snapshot.catalogs.map { ($0.digest, .array($0.members.map(JSONValue.string))) })
            ),
            ("quarantine_until_ms", snapshot.quarantineUntilMs.map(JSONValue.int) ?? .null),
        ]).serialized + "\n"
    }

    static func jobJSON(_ job: JobStatus, nowMs: Int64) -> JSONValue {
        let leader: JSONValue =
            job.leader.map { leader in
                .object([
                    ("member", .string(leader.member)), ("instance", .string(leader.instance)),
                    ("token", .uint(leader.token)), ("expires_in_ms", .int(leader.expiresInMs)),
                ])
            } ?? .null
        let lastRun: JSONValue =
            job.lastRun.map { run in
                .object([
                    ("started_at_ms", .int(run.startedAtMs)),
                    ("finished_at_ms", run.finishedAtMs.map(JSONValue.int) ?? .null),
                    ("age_ms", .int(max(0, nowMs - (run.finishedAtMs ?? run.startedAtMs)))),
                    ("duration_ms", run.durationMs.map(JSONValue.int) ?? .null),
                    ("result", run.result.map(JSONValue.string) ?? .null),
                    ("running", .bool(run.running && run.finishedAtMs == nil)),
                    ("token", run.token.map(JSONValue.uint) ?? .null),
                ])
            } ?? .null
        let carriedBy = JSONValue.array(job.carriedBy.map(JSONValue.string))
        var fields: [(String, JSONValue)] = [
            ("name", .string(job.name)),
            ("in_catalog", .bool(job.inCatalog)),
            ("leader", leader),
            ("preferred", job.preferred.map(JSONValue.string) ?? .null),
            ("last_run", lastRun),
            ("leaderless_ms", job.leaderless.map { .int(max(0, nowMs - $0.sinceMs)) } ?? .null),
            ("leaderless_source", job.leaderless.map { .string($0.source.rawValue) } ?? .null),
            ("next_run_at_ms", job.nextRunAtMs.map(JSONValue.int) ?? .null),
            ("problem", job.problem.map(JSONValue.string) ?? .null),
            ("carried_by", carriedBy),
        ]
        // Separate statements: one literal of every field is too much for the type checker.
        fields.append(("paused", .bool(job.paused)))
        fields.append(("paused_reason", job.pausedReason.map(JSONValue.string) ?? .null))
        fields.append(("paused_by", job.pausedBy.map(JSONValue.string) ?? .null))
        fields.append(("paused_at", job.pausedAtMs.map(JSONValue.int) ?? .null))
        fields.append(("next_run_at", job.nextRunAtMs.map(JSONValue.int) ?? .null))
        fields.append(("last_success_at", job.lastSuccessAtMs.map(JSONValue.int) ?? .null))
        fields.append(("trigger_requested", job.triggerRequestedAtMs.map(JSONValue.int) ?? .null))
        return .object(fields)
    }

    static func memberJSON(_ member: MemberStatus, nowMs: Int64) -> JSONValue {
        var fields: [(String, JSONValue)] = [
            ("name", .string(member.name)),
            ("instance", member.instance.map(JSONValue.string) ?? .null),
            ("host", member.host.map(JSONValue.string) ?? .null),
            ("pid", member.pid.map(JSONValue.int) ?? .null),
            ("weight", .double(member.weight)),
            ("version", member.version.map(JSONValue.string) ?? .null),
            ("started_at_ms", member.startedAtMs.map(JSONValue.int) ?? .null),
            ("last_heartbeat_age_ms", member.lastTickMs.map { .int(max(0, nowMs - $0)) } ?? .null),
            ("heartbeat_expires_in_ms", .int(member.heartbeatExpiresAtMs - nowMs)),
            ("live", .bool(member.live)),
            ("left_at_ms", member.leftAtMs.map(JSONValue.int) ?? .null),
            ("jobs_led", .int(Int64(member.jobsLed))),
        ]
        // Separate statements: one literal of every field is too much for the type checker.
        fields.append(("catalog", member.catalog.map(JSONValue.string) ?? .null))
        fields.append(("jobs", member.jobs.map { JSONValue.int(Int64($0)) } ?? .null))
        return .object(fields)
    }

    // MARK: - Members

    /// The `members` table (ends with a newline).
    package static func membersTable(_ snapshot: ClusterSnapshot) -> String {
        var rows: [[String]] = [
            [
                "MEMBER", "HOST", "PID", "WEIGHT", "VERSION", "CATALOG", "JOBS", "UP SINCE", "HEARTBEAT", "JOBS LED",
                "STATE",
            ]
        ]
        for member in snapshot.members {
            rows.append([
                member.name, member.host ?? "-", member.pid.map(String.init) ?? "-", weight(member.weight),
                member.version ?? "-",
                member.catalog.map { String($0.prefix(7)) } ?? "-", member.jobs.map(String.init) ?? "-",
                member.startedAtMs.map { "\(timestamp($0, millis: false)) (\(age(snapshot.nowMs - $0)))" } ?? "-",
                member.lastTickMs.map { "\(age(snapshot.nowMs - $0)) ago" } ?? "-",
                String(member.jobsLed),
                member.live
                    ? "live"
                    : member.leftAtMs.map { "left \(age(snapshot.nowMs - $0)) ago" }
                        ?? "expired \(age(snapshot.nowMs - member.heartbeatExpiresAtMs)) ago",
            ])
        }
        let live = snapshot.members.filter(\.live).count
        return table(rows) + "\(snapshot.members.count) \(plural(snapshot.members.count, "member")), \(live) live\n"
    }

    /// The `members --json` object (one line).
    package static func membersJSON(_ snapshot: ClusterSnapshot) -> String {
        JSONValue.object([
            ("now_ms", .int(snapshot.nowMs)),
            ("namespace", .string(snapshot.namespace)),
            ("members", .array(snapshot.members.map { memberJSON($0, nowMs: snapshot.nowMs) })),
        ]).serialized + "\n"
    }

    // MARK: - History

    /// A human name for an event type.
    package static func eventName(_ type: String) -> String {
        switch type {
        case "acquired": return "acquired"
        case "expired_takeover": return "expired takeover"
        case "released": return "released"
        case "handed_off": return "handed off"
        case "crash_release": return "crash release"
        case "lost": return "lost"
        case "forced_release": return "forced release"
        case "paused": return "paused"
        case "resumed": return "resumed"
        case "triggered": return "triggered"
        case "missed_slot": return "missed slot"
        default: return type
        }
    }

    /// The `history` table, oldest first (ends with a newline).
    package static func historyTable(_ history: JobHistory) -> String {
        if history.events.isEmpty { return "no events recorded for job \(history.job)\n" }
        var rows: [[String]] = [["TIME (UTC)", "EVENT", "MEMBER", "TOKEN", "GAP", "DETAIL"]]
        for event in history.events {
            var detail = ""
            switch event.type {
            case "expired_takeover":
                detail = "took over from " + (event.previous.map(ownerName) ?? "?") + " after its lease expired"
            case "lost":
                if let holder = event.holder, !holder.isEmpty {
                    detail = "lease now held by \(ownerName(holder))"
                } else {
                    detail = "lease had expired"
                }
            case "forced_release":
                detail = "deleted by \(event.by ?? "operator") (unfenced)"
            case "handed_off":
                detail = "released for placement or an operator request"
            case "crash_release" where event.gapMs == nil:
                // The release by the dead member's guardian carries no gap; the takeover does.
                detail = "released by the guardian: this member's process had died"
            case "crash_release":
                detail = "took over after the previous leader's process died (its guardian released the lease)"
            case "paused":
                detail = "by \(event.by ?? "operator")" + (event.reason.map { ": \($0)" } ?? "")
            case "resumed":
                detail = "by \(event.by ?? "operator")"
            case "triggered":
                detail = "by \(event.by ?? "operator")" + (event.forced == true ? ", forced on a paused job" : "")
            case "missed_slot":
                detail =
                    "slot " + (event.slotMs.map { timestamp($0, millis: false) } ?? "?") + " not started in time"
                    + (event.deadlineMs.map { " (deadline \(duration($0)))" } ?? "")
            default:
                break
            }
            if let owner = event.owner, let member = event.member, owner.hasPrefix(member + "@") {
                detail = ("instance " + owner.dropFirst(member.count + 1)) + (detail.isEmpty ? "" : "; " + detail)
            }
            rows.append([
                timestamp(event.atMs, millis: true), eventName(event.type), event.member ?? "-",
                event.token.map(String.init) ?? "-", event.gapMs.map { duration($0) } ?? "-", detail,
            ])
        }
        return table(rows)
    }

    /// The `history --json` object (one line).
    package static func historyJSON(_ history: JobHistory) -> String {
        JSONValue.object([
            ("job", .string(history.job)),
            ("now_ms", .int(history.nowMs)),
            (
                "events",
                .array(
                    history.events.map { event in
                        .object([
                            ("id", .string(event.id)), ("type", .string(event.type)),
                            ("member", event.member.map(JSONValue.string) ?? .null),
                            ("owner", event.owner.map(JSONValue.string) ?? .null),
                            ("token", event.token.map(JSONValue.uint) ?? .null),
                            ("at_ms", .int(event.atMs)),
                            ("gap_ms", event.gapMs.map(JSONValue.int) ?? .null),
                            ("previous", event.previous.map(JSONValue.string) ?? .null),
                            ("holder", event.holder.map(JSONValue.string) ?? .null),
                            ("by", event.by.map(JSONValue.string) ?? .null),
                            ("reason", event.reason.map(JSONValue.string) ?? .null),
                            ("forced", event.forced.map(JSONValue.bool) ?? .null),
                            ("slot", event.slotMs.map(JSONValue.int) ?? .null),
                            ("deadline_ms", event.deadlineMs.map(JSONValue.int) ?? .null),
                        ])
                    })
            ),
        ]).serialized + "\n"
    }

    // MARK: - Helpers

    static func ownerName(_ leaseValue: String) -> String {
        guard let value = LeaseValue(parsing: leaseValue) else { return leaseValue }
        return "\(value.owner.member) (token \(value.token))"
    }

    static func plural(_ count: Int, _ word: String) -> String { count == 1 ? word : word + "s" }

    static func weight(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
    }

    /// Left-aligned columns separated by two spaces; no trailing spaces.
    package static func table(_ rows: [[String]]) -> String {
        guard let columns = rows.map(\.count).max() else { return "" }
        var widths = [Int](repeating: 0, count: columns)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        var out = ""
        for row in rows {
            var line = ""
            for (i, cell) in row.enumerated() {
                line += cell
                if i < row.count - 1 { line += String(repeating: " ", count: widths[i] - cell.count + 2) }
            }
            while line.last == " " { line.removeLast() }
            out += line + "\n"
        }
        return out
    }

    /// A compact duration: `850ms`, `4.2s`, `3m12s`, `2h05m`, `3d04h`.
    package static func duration(_ ms: Int64) -> String {
        if ms < 0 { return "-" + duration(-ms) }
        if ms < 1000 { return "\(ms)ms" }
        if ms < 10_000 { return "\(ms / 1000).\((ms % 1000) / 100)s" }
        let s = ms / 1000
        if s < 60 { return "\(s)s" }
        if s < 3600 { return "\(s / 60)m\(pad(s % 60))s" }
        if s < 86_400 { return "\(s / 3600)h\(pad((s / 60) % 60))m" }
        return "\(s / 86_400)d\(pad((s / 3600) % 24))h"
    }

    /// An age (never negative: clock skew between writers shows as 0).
    static func age(_ ms: Int64) -> String { duration(max(ms, 0)) }

    static func pad(_ value: Int64) -> String { value < 10 ? "0\(value)" : "\(value)" }

    /// `2026-05-01 10:00:00.123` (UTC) from ms since the epoch.
    package static func timestamp(_ ms: Int64, millis: Bool) -> String {
        let days = ms >= 0 ? ms / 86_400_000 : (ms - 86_399_999) / 86_400_000
        let msOfDay = ms - days * 86_400_000
        let (year, month, day) = civilDate(fromDays: days)
        let h = msOfDay / 3_600_000
        let m = (msOfDay / 60_000) % 60
        let s = (msOfDay / 1000) % 60
        let frac = msOfDay % 1000
        var text = "\(year)-\(pad(Int64(month)))-\(pad(Int64(day))) \(pad(h)):\(pad(m)):\(pad(s))"
        if millis { text += "." + (frac < 10 ? "00" : frac < 100 ? "0" : "") + String(frac) }
        return text
    }
}
