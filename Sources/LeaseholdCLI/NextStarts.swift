import Foundation
import Leasehold

/// `validate --next N`: the start times a catalog's schedules produce, so an operator sees
/// what a cron line or a time zone means (DST days included) before deploying it.
package enum NextStarts {
    /// One job's upcoming starts.
    package struct Job: Sendable, Hashable {
        /// The job name.
        package var name: String
        /// The schedule.
        package var schedule: JobSchedule
        /// The zone the times are shown in: the cron zone, UTC for `every`.
        package var timeZone: TimeZone
        /// How far after each slot a start may be delayed at random; nil for none.
        package var jitter: Duration?
        /// The slots (ms since the epoch), earliest first; empty for continuous jobs.
        package var slotsMs: [Int64]
    }

    /// The next `count` slots of every job after `fromMs`, in catalog order.
    package static func compute(_ catalog: Catalog, count: Int, fromMs: Int64) -> [Job] {
        catalog.jobs.map { spec in
            var zone = CronSchedule.utc
            if case .cron(let cron) = spec.schedule { zone = cron.timeZone }
            return Job(
                name: spec.name, schedule: spec.schedule, timeZone: zone, jitter: jitter(of: spec),
                slotsMs: slots(spec.schedule, count: count, fromMs: fromMs))
        }
    }

    /// The slots a fresh job would run: the daemon's own slot arithmetic (`firstSlotMs`, then
    /// `slotMs(after:)`), so this never disagrees with what the leader does.
    package static func slots(_ schedule: JobSchedule, count: Int, fromMs: Int64) -> [Int64] {
        var out: [Int64] = []
        guard var slot = schedule.firstSlotMs(nowMs: fromMs) else { return out }
        out.append(slot)
        while out.count < count, let next = schedule.slotMs(after: slot, nowMs: slot), next > slot {
            out.append(next)
            slot = next
        }
        return out
    }

    /// The job's jitter window, if it has one (`jitter: 0s` turns an inherited one off).
    static func jitter(of spec: JobSpec) -> Duration? {
        spec.jitter.flatMap { $0 > .zero ? $0 : nil }
    }

    /// `2026-03-29 03:00:00 +02:00`: the wall-clock time in `zone` and its UTC offset.
    package static func local(_ ms: Int64, in zone: TimeZone) -> String {
        let offset = zone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(ms) / 1000))
        let sign = offset < 0 ? "-" : "+"
        let minutes = abs(offset) / 60
        return Render.timestamp(ms + Int64(offset) * 1000, millis: false)
            + " \(sign)\(Render.pad(Int64(minutes / 60))):\(Render.pad(Int64(minutes % 60)))"
    }

    /// The text block: one header line per job, then one indented line per start.
    package static func text(_ jobs: [Job], count: Int, fromMs: Int64) -> String {
        var out = "next \(count) \(Render.plural(count, "start")) after \(local(fromMs, in: CronSchedule.utc)):\n"
        for job in jobs {
            let jitter = job.jitter.map { ", jitter up to \(CatalogValue.text($0))" } ?? ""
            switch job.schedule {
            case .continuous:
                out += "\(job.name)  continuous: runs while led, no scheduled starts\n"
                continue
            case .every(let interval):
                out +=
                    "\(job.name)  every \(CatalogValue.text(interval)) (UTC\(jitter); from a first run now: a running fleet keeps its own rhythm)\n"
            case .cron(let cron):
                out += "\(job.name)  cron \"\(cron.expression)\" (\(cron.timeZone.identifier)\(jitter))\n"
            }
            if job.slotsMs.isEmpty { out += "  never: the expression matches no date\n" }
            for slot in job.slotsMs {
                out += "  " + local(slot, in: job.timeZone)
                if let jitter = job.jitter {
                    out += " .. " + local(slot + jitter.wholeMilliseconds, in: job.timeZone)
                }
                out += "\n"
            }
        }
        return out
    }

    /// The JSON array for `validate --json --next N`.
    package static func json(_ jobs: [Job]) -> JSONValue {
        .array(
            jobs.map { job in
                let kind: String
                switch job.schedule {
                case .continuous: kind = "continuous"
                case .every: kind = "every"
                case .cron: kind = "cron"
                }
                let jitterMs = job.jitter.map(\.wholeMilliseconds)
                return .object([
                    ("job", .string(job.name)), ("schedule", .string(kind)),
                    ("time_zone", .string(job.timeZone.identifier)),
                    ("jitter_ms", jitterMs.map(JSONValue.int) ?? .null),
                    (
                        "starts",
                        .array(
                            job.slotsMs.map { slot in
                                .object([
                                    ("at_ms", .int(slot)), ("local", .string(local(slot, in: job.timeZone))),
                                    ("latest_ms", jitterMs.map { .int(slot + $0) } ?? .null),
                                ])
                            })
                    ),
                ])
            })
    }

    /// Reads `--from`: RFC 3339 (`2026-03-28T00:00:00Z`, `2026-03-28T01:00:00+01:00`) or ms
    /// since the epoch.
    package static func parseTime(_ text: String) -> Int64? {
        if let ms = Int64(text) { return ms }
        let formatter = ISO8601DateFormatter()
        if let date = formatter.date(from: text) { return JobSchedule.milliseconds(date) }
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.date(from: text).map(JobSchedule.milliseconds)
    }
}
