import ArgumentParser
import Foundation
import Leasehold
import RedisClient

// Operators steer a job's schedule by writing its state hash; the leader, whichever member it
// is, reads the fields at its fenced run start and hears the control channel to re-read at
// once. So these commands never need to reach the leader, only Redis.

struct Pause: ParsableCommand, CLIRunnable {
    static let configuration = CommandConfiguration(
        abstract:
            "Pause a job: its leader starts no scheduled run until `leasehold resume` (a run in progress goes on).",
        discussion: """
            Writes paused=1 (with paused_reason, paused_by, paused_at) into {ns}:{job}:state, appends \
            a `paused` event to the job's audit trail and publishes the job name on {ns}:control, in \
            one script. Pausing a paused job changes nothing (exit 0). The pause outlives leaders, \
            restarts and deploys: it is state in Redis, not in any member.
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The job name.")
    var job: String

    @Option(name: .long, help: "Why, for the next operator (shown by status and history).")
    var reason: String?

    func execute(_ io: CLIIO) async throws(CLIFailure) -> Int32 {
        let settings = try global.settings(io)
        let (job, reason, json) = (self.job, self.reason ?? "", global.json)
        let by = Steering.by(environment: io.environment)
        let reply = try await Steering.run(
            SteeringScripts.pause, job: job, settings: settings, arguments: [by, reason])
        let nowMs = reply.int(1) ?? 0
        let changed = reply.code == 1
        // When it was already paused, the reply carries the standing pause, not ours.
        let pausedBy = changed ? by : reply.string(2)
        let pausedAt = changed ? nowMs : reply.int(3)
        let pausedReason = changed ? reason : reply.string(4) ?? ""
        if json {
            io.out(
                JSONValue.object([
                    ("job", .string(job)), ("action", .string("pause")), ("changed", .bool(changed)),
                    ("paused", .bool(true)),
                    ("paused_reason", pausedReason.isEmpty ? .null : .string(pausedReason)),
                    ("paused_by", pausedBy.map(JSONValue.string) ?? .null),
                    ("paused_at", pausedAt.map(JSONValue.int) ?? .null),
                ]).serialized + "\n")
        } else if changed {
            let effect =
                settings.catalogRunsContinuously(job)
                ? "its leader stops the handler at its next safe point and keeps the lease until `leasehold resume \(job)`"
                : "its leader starts no new run until `leasehold resume \(job)`; a run in progress finishes"
            io.out("paused \(job)\(reason.isEmpty ? "" : " (\(reason))"): \(effect)\n")
        } else {
            io.out(
                "\(job) was already paused \(Steering.since(by: pausedBy, at: pausedAt, reason: pausedReason, nowMs: nowMs)); nothing changed\n"
            )
        }
        return CLIExitCode.ok
    }
}

struct Resume: ParsableCommand, CLIRunnable {
    static let configuration = CommandConfiguration(
        abstract: "Resume a paused job: its leader restarts a continuous handler or runs the next slot.",
        discussion: """
            Deletes paused, paused_reason, paused_by and paused_at from {ns}:{job}:state, appends a \
            `resumed` event and publishes the job name on {ns}:control, in one script. Resuming a job \
            that is not paused changes nothing (exit 0).
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The job name.")
    var job: String

    func execute(_ io: CLIIO) async throws(CLIFailure) -> Int32 {
        let settings = try global.settings(io)
        let (job, json) = (self.job, global.json)
        let by = Steering.by(environment: io.environment)
        let reply = try await Steering.run(SteeringScripts.resume, job: job, settings: settings, arguments: [by])
        let nowMs = reply.int(1) ?? 0
        let changed = reply.code == 1
        if json {
            io.out(
                JSONValue.object([
                    ("job", .string(job)), ("action", .string("resume")), ("changed", .bool(changed)),
                    ("paused", .bool(false)), ("resumed_by", changed ? .string(by) : .null),
                    ("resumed_at", changed ? .int(nowMs) : .null),
                ]).serialized + "\n")
        } else if changed {
            let standing = Steering.since(
                by: reply.string(2), at: reply.int(3), reason: reply.string(4) ?? "", nowMs: nowMs)
            let effect =
                settings.catalogRunsContinuously(job)
                ? "its leader restarts the handler" : "its leader runs the next slot as scheduled"
            io.out("resumed \(job) (it was paused \(standing)): \(effect)\n")
        } else {
            io.out("\(job) is not paused; nothing changed\n")
        }
        return CLIExitCode.ok
    }
}

struct Trigger: ParsableCommand, CLIRunnable {
    static let configuration = CommandConfiguration(
        abstract: "Ask a job's leader to start one run now, outside its schedule.",
        discussion: """
            Writes trigger_requested (Redis ms), trigger_by and trigger_forced into {ns}:{job}:state, \
            appends a `triggered` event and publishes the job name on {ns}:control, in one script; the \
            leader starts the run and clears the request. The schedule is unchanged. Triggers \
            requested before the leader consumes one coalesce into one run. A paused job is \
            refused (exit 1) unless --force: then it runs once and stays paused.
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The job name.")
    var job: String

    @Flag(name: .long, help: "Trigger even a paused job (it runs once and stays paused).")
    var force = false

    func execute(_ io: CLIIO) async throws(CLIFailure) -> Int32 {
        let settings = try global.settings(io)
        let (job, json) = (self.job, global.json)
        let by = Steering.by(environment: io.environment)
        let reply = try await Steering.run(
            SteeringScripts.trigger, job: job, settings: settings, arguments: [by, force ? "1" : "0"])
        let nowMs = reply.int(1) ?? 0
        if reply.code == 3 {
            let standing = Steering.since(
                by: reply.string(2), at: reply.int(3), reason: reply.string(4) ?? "", nowMs: nowMs)
            throw CLIFailure.runtime(
                "job '\(job)' is paused (\(standing)): not triggered; pass --force to run it once anyway, or resume it")
        }
        let forced = reply.string(2) == "1"
        let pendingSince = reply.int(3)
        if json {
            io.out(
                JSONValue.object([
                    ("job", .string(job)), ("action", .string("trigger")), ("changed", .bool(true)),
                    ("paused", .bool(forced)), ("forced", .bool(forced)), ("trigger_requested", .int(nowMs)),
                    ("trigger_by", .string(by)), ("coalesced", .bool(pendingSince != nil)),
                ]).serialized + "\n")
        } else {
            var text = "triggered \(job): its leader starts one run now"
            if forced { text += " although it is paused (--force); it stays paused" }
            if let pendingSince {
                text += " (one run for this and the trigger pending since \(Render.age(nowMs - pendingSince)) ago)"
            }
            io.out(text + "\n")
        }
        return CLIExitCode.ok
    }
}

/// What the steering commands share: who the operator is, and the one script call each makes.
enum Steering {
    /// Audit events kept per job, as the members cap the events stream.
    static let eventsMaxLength = "1000"

    /// `user@host` for the audit trail: the login name from the environment (USER, then
    /// LOGNAME, then the password database) and the host name.
    static func by(environment: [String: String]) -> String {
        var user = environment["USER"] ?? environment["LOGNAME"]
        if user?.isEmpty ?? true, let entry = getpwuid(getuid()), let name = entry.pointee.pw_name {
            user = String(cString: name)
        }
        var buffer = [CChar](repeating: 0, count: 256)
        let host =
            gethostname(&buffer, buffer.count) == 0
            ? String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
        return "\(user.flatMap { $0.isEmpty ? nil : $0 } ?? "unknown")@\(host)"
    }

    /// Runs one steering script for `job` (KEYS state, events, jobs; ARGV job, channel,
    /// in-catalog flag, events maxlen, then `arguments`) and fails the command for an unknown
    /// job or a Redis error.
    static func run(_ script: RedisScript, job: String, settings: CLISettings, arguments: [String])
        async throws(CLIFailure) -> SteeringReply
    {
        let keys = settings.keys
        let inCatalog = settings.catalogLists(job)
        let reply = try await withReader(settings) { reader throws(CLIFailure) in
            try await reader.evaluate(
                script, keys: [keys.state(job), keys.events(job), keys.jobs],
                arguments: [job, keys.controlChannel, inCatalog ? "1" : "0", eventsMaxLength] + arguments)
        }
        if let message = reply.errorMessage {
            throw CLIFailure.runtime("Redis error for \(keys.state(job)): \(CLIFailure.oneLine(message))")
        }
        let parsed = SteeringReply(reply)
        if parsed.code == 0 { throw settings.unknownJob(job) }
        return parsed
    }

    /// `by ops@box 5m ago: deploy freeze`, for a standing pause.
    static func since(by: String?, at: Int64?, reason: String, nowMs: Int64) -> String {
        var text = "by \(by ?? "?")"
        if let at { text += " \(Render.age(nowMs - at)) ago" }
        if !reason.isEmpty { text += ": \(reason)" }
        return text
    }
}

/// A steering script's array reply: a code first, then strings.
struct SteeringReply {
    /// The elements.
    var items: [RedisReply]

    init(_ reply: RedisReply) { items = reply.array ?? [] }

    /// The first element: 0 unknown job, 1 written, 2 nothing to change, 3 refused (paused).
    var code: Int64 { items.first?.integer ?? -1 }

    /// Element `index` as a non-empty string.
    func string(_ index: Int) -> String? {
        guard index < items.count, let text = items[index].string, !text.isEmpty else { return nil }
        return text
    }

    /// Element `index` as an integer (scripts return ms as decimal strings).
    func int(_ index: Int) -> Int64? {
        guard index < items.count else { return nil }
        return items[index].integer ?? string(index).flatMap { Int64($0) }
    }
}

/// The steering scripts. Each writes the state, its audit event and the control-channel
/// message atomically, so a leader that hears the message always reads the new state, and the
/// audit trail never misses a change. Time is Redis `TIME`, the clock every member and
/// `status` use.
///
/// Common KEYS: state hash, events stream, `{ns}:jobs`. Common ARGV: job, control channel,
/// '1' when the CLI's catalog lists the job, events maxlen. A job in neither the catalog nor
/// `{ns}:jobs` replies `{0}`.
enum SteeringScripts {
    /// Lua shared by every script: the unknown-job check and `now_s`.
    static let prologue = """
        if ARGV[3] ~= '1' and redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 0 then return {0} end
        local t = redis.call('TIME')
        local now_s = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
        local function standing()
          local f = redis.call('HMGET', KEYS[1], 'paused_by', 'paused_at', 'paused_reason')
          return f[1] or '', f[2] or '', f[3] or ''
        end

        """

    /// ARGV 5: by, 6: reason ('' for none). Reply `{1, now}` paused; `{2, now, by, at, reason}`
    /// it was already paused (nothing written).
    static let pause = RedisScript(
        prologue + #"""
            if redis.call('HGET', KEYS[1], 'paused') == '1' then
              local by, at, reason = standing()
              return {2, now_s, by, at, reason}
            end
            redis.call('HSET', KEYS[1], 'paused', '1', 'paused_by', ARGV[5], 'paused_at', now_s)
            if ARGV[6] == '' then
              redis.call('HDEL', KEYS[1], 'paused_reason')
            else
              redis.call('HSET', KEYS[1], 'paused_reason', ARGV[6])
            end
            redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'type', 'paused', 'by', ARGV[5],
              'reason', ARGV[6], 'at', now_s)
            redis.call('PUBLISH', ARGV[2], ARGV[1])
            return {1, now_s}
            """#)

    /// ARGV 5: by. Reply `{1, now, by, at, reason}` resumed (with the pause it ended);
    /// `{2, now}` it was not paused (nothing written).
    static let resume = RedisScript(
        prologue + #"""
            if redis.call('HGET', KEYS[1], 'paused') ~= '1' then return {2, now_s} end
            local by, at, reason = standing()
            redis.call('HDEL', KEYS[1], 'paused', 'paused_reason', 'paused_by', 'paused_at')
            redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'type', 'resumed', 'by', ARGV[5], 'at', now_s)
            redis.call('PUBLISH', ARGV[2], ARGV[1])
            return {1, now_s, by, at, reason}
            """#)

    /// ARGV 5: by, 6: '1' for --force. Reply `{1, now, forced, pending}` requested (`forced`
    /// '1' when the job is paused and --force ran it anyway; `pending` the earlier request it
    /// coalesces with, or ''); `{3, now, by, at, reason}` refused: paused without --force.
    static let trigger = RedisScript(
        prologue + #"""
            local paused = redis.call('HGET', KEYS[1], 'paused') == '1'
            if paused and ARGV[6] ~= '1' then
              local by, at, reason = standing()
              return {3, now_s, by, at, reason}
            end
            local forced = paused and '1' or '0'
            local pending = redis.call('HGET', KEYS[1], 'trigger_requested') or ''
            redis.call('HSET', KEYS[1], 'trigger_requested', now_s, 'trigger_by', ARGV[5], 'trigger_forced', forced)
            redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'type', 'triggered', 'by', ARGV[5],
              'at', now_s, 'forced', forced)
            redis.call('PUBLISH', ARGV[2], ARGV[1])
            return {1, now_s, forced, pending}
            """#)
}
