import ArgumentParser
import Foundation
import Leasehold
import RedisClient

struct Prune: ParsableCommand, CLIRunnable {
    static let configuration = CommandConfiguration(
        abstract: "Delete the Redis keys of jobs no live member carries (never their fence keys).",
        discussion: """
            A job no live member carries (it left the fleet's catalogs) keeps its lease, state, \
            events and runs keys and its {ns}:jobs entry until pruned. Prune deletes those, never the \
            fence key, so fencing tokens keep rising if the job comes back. It skips a job whose lease \
            key exists, and deletes nothing while no member is live or while a live member's job set \
            is unknown (an older version without a catalog digest). Each job is checked again and \
            deleted atomically in one script. Exit 1 when it refuses for the fleet's state.
            """)

    @OptionGroup var global: GlobalOptions

    @Flag(name: .customLong("dry-run"), help: "List what would be deleted; delete nothing.")
    var dryRun = false

    @Flag(name: .long, help: "Do not ask for confirmation.")
    var yes = false

    func execute(_ io: CLIIO) async throws(CLIFailure) -> Int32 {
        let settings = try global.settings(io)
        if !dryRun && !yes && !io.stdinIsTerminal {
            throw CLIFailure.usage(
                "refusing to prune without a terminal to confirm on: pass --yes (or --dry-run to only list)")
        }
        let (dryRun, yes, json) = (self.dryRun, self.yes, global.json)
        return try await withReader(settings) { reader throws(CLIFailure) in
            let snapshot = try await reader.snapshot(catalogJobs: settings.catalog?.jobs.map(\.name) ?? [])
            try PrunePlan.checkFleet(snapshot)
            var plan = try await PrunePlan.make(snapshot, reader: reader)
            if dryRun {
                io.out(json ? plan.json(dryRun: true) : plan.text(dryRun: true))
                return CLIExitCode.ok
            }
            if !plan.pruned.isEmpty && !yes {
                io.err(plan.text(dryRun: true))
                let count = plan.pruned.count
                io.err("Delete the keys of \(count) \(Render.plural(count, "job"))? [y/N] ")
                let answer = io.readLine()?.trimmingCharacters(in: .whitespaces).lowercased()
                guard answer == "y" || answer == "yes" else {
                    throw CLIFailure.usage("not confirmed; nothing deleted")
                }
            }
            plan = try await plan.execute(reader: reader)
            io.out(json ? plan.json(dryRun: false) : plan.text(dryRun: false))
            return CLIExitCode.ok
        }
    }
}

/// What `prune` deletes and skips, job by job.
struct PrunePlan {
    /// A job whose keys are (or would be) deleted.
    struct Entry {
        var job: String
        /// The keys deleted (or that exist now, for a dry run): state, events, runs.
        var keys: [String]
        /// Whether the job's entry in `{ns}:jobs` was (or would be) removed.
        var jobsSetEntry: Bool
    }

    var keys: LeaseKeys
    var pruned: [Entry] = []
    var skipped: [(job: String, reason: String)] = []

    /// Refuses (exit 1, nothing deleted) unless every live member says which jobs it carries:
    /// with no live member, or with one of an unknown job set, "not carried" means nothing.
    static func checkFleet(_ snapshot: ClusterSnapshot) throws(CLIFailure) {
        if !snapshot.members.contains(where: \.live) {
            throw CLIFailure.runtime(
                "no live member in namespace \(snapshot.namespace): cannot tell which jobs the fleet carries; nothing deleted"
            )
        }
        let unknown = snapshot.membersOfUnknownCatalog
        guard let first = unknown.first else { return }
        let why: String
        if let digest = first.catalog, let problem = snapshot.catalogs.first(where: { $0.digest == digest })?.problem {
            why = "\(first.name) advertises catalog \(digest) but \(problem)"
        } else {
            why = "\(first.name) advertises no catalog (an older version, carrying an unknown set of jobs)"
        }
        let others = unknown.count - 1
        throw CLIFailure.runtime(
            why + (others > 0 ? " (and \(others) more \(Render.plural(others, "member")))" : "")
                + "; nothing deleted until every live member advertises its catalog")
    }

    /// The jobs no live member carries that still have keys, with the keys that exist now; a
    /// job whose lease key exists is skipped. One round trip.
    static func make(_ snapshot: ClusterSnapshot, reader: SnapshotReader) async throws(CLIFailure) -> PrunePlan {
        let keys = reader.keys
        var plan = PrunePlan(keys: keys)
        let candidates = snapshot.jobs.filter(\.notCarried)
        if candidates.isEmpty { return plan }
        let commands = candidates.flatMap { job in
            [keys.lease(job.name), keys.state(job.name), keys.events(job.name), keys.runs(job.name)].map {
                ["EXISTS", $0]
            }
        }
        let replies = try await reader.pipeline(commands)
        for (offset, job) in candidates.enumerated() {
            let exists = replies[offset * 4..<offset * 4 + 4].map { $0.integer == 1 }
            if let leader = job.leader {
                plan.skipped.append((job.name, "its lease is held by \(leader.member) (token \(leader.token))"))
            } else if exists[0] {
                plan.skipped.append((job.name, "its lease key exists (\(job.problem ?? "someone holds it"))"))
            } else {
                let present = zip(
                    [keys.state(job.name), keys.events(job.name), keys.runs(job.name)], exists.dropFirst()
                )
                .filter(\.1).map(\.0)
                // A job only the operator's catalog names, with no keys, has nothing to prune.
                if present.isEmpty && !job.inRedis { continue }
                plan.pruned.append(Entry(job: job.name, keys: present, jobsSetEntry: job.inRedis))
            }
        }
        return plan
    }

    /// Runs the check-and-delete script for every planned job; a job whose situation changed
    /// since the listing moves to `skipped`.
    func execute(reader: SnapshotReader) async throws(CLIFailure) -> PrunePlan {
        var done = PrunePlan(keys: keys, pruned: [], skipped: skipped)
        for entry in pruned {
            let job = entry.job
            let reply = try await reader.evaluate(
                PruneScript.script,
                keys: [keys.lease(job), keys.state(job), keys.events(job), keys.runs(job), keys.jobs, keys.members],
                arguments: [job, keys.member(""), keys.catalog("")])
            if let message = reply.errorMessage {
                done.skipped.append((job, "the prune script failed: \(CLIFailure.oneLine(message))"))
                continue
            }
            let parts = (reply.array ?? []).map { $0.string ?? "" }
            let detail = parts.count > 1 ? parts[1] : ""
            switch parts.first {
            case "pruned":
                done.pruned.append(Entry(job: job, keys: Array(parts.dropFirst(2)), jobsSetEntry: detail == "1"))
            case "held":
                done.skipped.append((job, "its lease was taken meanwhile (\(detail))"))
            case "carried":
                done.skipped.append((job, "\(detail) carries it now"))
            case "unknown":
                done.skipped.append((job, "\(detail) is live now and carries an unknown set of jobs"))
            case "no_live_member":
                done.skipped.append((job, "no member is live any more"))
            default:
                done.skipped.append((job, "unexpected reply from the prune script"))
            }
        }
        return done
    }

    /// One line per job, then a summary.
    func text(dryRun: Bool) -> String {
        var text = ""
        for entry in pruned {
            var parts: [String] = []
            if !entry.keys.isEmpty {
                parts.append((dryRun ? "would delete " : "deleted ") + entry.keys.joined(separator: ", "))
            }
            if entry.jobsSetEntry { parts.append((dryRun ? "would remove from " : "removed from ") + keys.jobs) }
            text += "\(dryRun ? "would prune" : "pruned") \(entry.job): \(parts.joined(separator: "; "))\n"
        }
        for skip in skipped { text += "skipped \(skip.job): \(skip.reason)\n" }
        let count = pruned.count
        let skips = skipped.isEmpty ? "" : ", skipped \(skipped.count)"
        if count == 0 {
            text += "nothing to prune: every job with keys is carried by a live member\(skips)\n"
        } else if dryRun {
            text +=
                "dry run: \(count) \(Render.plural(count, "job")) would be pruned\(skips); nothing deleted\n"
        } else {
            text +=
                "pruned \(count) \(Render.plural(count, "job"))\(skips); fence keys kept, so tokens keep rising if a job comes back\n"
        }
        return text
    }

    /// `{"pruned": [{"job", "keys", "jobs_set_entry"}], "skipped": [{"job", "reason"}], "dry_run"}`.
    func json(dryRun: Bool) -> String {
        JSONValue.object([
            (
                "pruned",
                .array(
                    pruned.map { entry in
                        .object([
                            ("job", .string(entry.job)), ("keys", .array(entry.keys.map(JSONValue.string))),
                            ("jobs_set_entry", .bool(entry.jobsSetEntry)),
                        ])
                    })
            ),
            (
                "skipped",
                .array(skipped.map { .object([("job", .string($0.job)), ("reason", .string($0.reason))]) })
            ),
            ("dry_run", .bool(dryRun)),
        ]).serialized + "\n"
    }
}

/// The per-job check-and-delete, atomic so that nothing a member starts between the
/// listing and the delete is lost.
enum PruneScript {
    /// KEYS: lease, state, events, runs, jobs set, members zset. ARGV: job, member key
    /// prefix, catalog key prefix.
    ///
    /// Re-checks, inside the script, what the listing found: the lease key does not exist, a
    /// member is live (zset score ≥ Redis time, no `left_at`), every live member advertises a
    /// catalog whose set exists and none of those sets holds the job. Like the renew script,
    /// it reads member hashes and catalog sets not passed in KEYS (their names depend on the
    /// zset). Never touches the fence key.
    /// Reply: `{'pruned', '1'|'0' (removed from the jobs set), deleted keys...}`, or
    /// `{'held'|'carried'|'unknown'|'no_live_member', detail}`.
    static let script = RedisScript(
        #"""
        local job, mprefix, cprefix = ARGV[1], ARGV[2], ARGV[3]
        if redis.call('EXISTS', KEYS[1]) == 1 then
          local ok, v = pcall(redis.call, 'GET', KEYS[1])
          return {'held', (ok and v) or 'not a string'}
        end
        local t = redis.call('TIME')
        local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local any = false
        for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[6], now_ms, '+inf')) do
          local info = redis.call('HMGET', mprefix .. m, 'catalog', 'left_at')
          if not tonumber(info[2] or '') then
            any = true
            if not info[1] or info[1] == '' then return {'unknown', m} end
            local set = cprefix .. info[1]
            if redis.call('SISMEMBER', set, job) == 1 then return {'carried', m} end
            if redis.call('EXISTS', set) == 0 then return {'unknown', m} end
          end
        end
        if not any then return {'no_live_member', ''} end
        local reply = {'pruned', tostring(redis.call('SREM', KEYS[5], job))}
        for i = 2, 4 do
          if redis.call('DEL', KEYS[i]) == 1 then reply[#reply + 1] = KEYS[i] end
        end
        return reply
        """#)
}
