import ArgumentParser
import Foundation
import Leasehold
import RedisClient

/// The entry point of the `leasehold` executable and of in-process runs (tests).
package enum LeaseholdTool {
    /// Runs with the process's arguments and exits with the command's code.
    package static func main() async -> Never {
        let code = await run(Array(CommandLine.arguments.dropFirst()), io: .standard)
        exit(code)
    }

    /// Parses `arguments` (without the program name), runs the command and returns its exit
    /// code. Errors are printed on `io.err`; nothing calls `exit`.
    package static func run(_ arguments: [String], io: CLIIO) async -> Int32 {
        let command: any ParsableCommand
        do {
            command = try LeaseholdCommand.parseAsRoot(arguments)
        } catch {
            let code = LeaseholdCommand.exitCode(for: error)
            let message = LeaseholdCommand.fullMessage(for: error)
            if code == .success {
                if !message.isEmpty { io.out(message + "\n") }
                return CLIExitCode.ok
            }
            io.err(message + "\n")
            return CLIExitCode.usage
        }
        guard let runnable = command as? any CLIRunnable else {
            // `--help`, `-h` or `help SUBCOMMAND`: ArgumentParser returns its help command, whose
            // run() throws the help request for the subcommand asked about (printing the root's
            // help instead hid every subcommand's flags). No subcommand is a usage error.
            if arguments.contains("--help") || arguments.contains("-h") || arguments.first == "help" {
                var help = command
                do {
                    try help.run()
                    io.out(LeaseholdCommand.helpMessage() + "\n")
                } catch {
                    io.out(LeaseholdCommand.fullMessage(for: error) + "\n")
                }
                return CLIExitCode.ok
            }
            io.err(LeaseholdCommand.helpMessage() + "\n")
            return CLIExitCode.usage
        }
        do {
            return try await runnable.execute(io)
        } catch {
            for line in error.lines { io.err(line + "\n") }
            return error.code
        }
    }
}

/// A parsed subcommand that can run against a `CLIIO`.
protocol CLIRunnable {
    func execute(_ io: CLIIO) async throws(CLIFailure) -> Int32
}

/// The flags every subcommand takes.
struct GlobalOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "The catalog, for the Redis URL, the namespace and the job list (default ./jobs.yaml; a missing default is fine with --redis or LEASEHOLD_REDIS_URL).",
            valueName: "path"))
    var config: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "The Redis URL; beats LEASEHOLD_REDIS_URL, which beats the catalog's redis.url (default redis://127.0.0.1:6379/0).",
            valueName: "url"))
    var redis: String?

    @Option(
        name: .customLong("redis-password-file"),
        help: ArgumentHelp(
            "File holding the Redis password; beats LEASEHOLD_REDIS_PASSWORD_FILE, which beats the catalog's redis.password_file.",
            valueName: "path"))
    var redisPasswordFile: String?

    @Option(
        name: .customLong("tls-ca-file"),
        help: ArgumentHelp(
            "PEM CA certificates for a rediss:// server; beats the catalog's redis.tls.ca_file (default: the system store).",
            valueName: "path"))
    var tlsCAFile: String?

    @Option(
        name: .customLong("tls-cert-file"),
        help: ArgumentHelp("PEM client certificate; beats redis.tls.cert_file.", valueName: "path"))
    var tlsCertFile: String?

    @Option(
        name: .customLong("tls-key-file"),
        help: ArgumentHelp("PEM key of the client certificate; beats redis.tls.key_file.", valueName: "path"))
    var tlsKeyFile: String?

    @Option(
        name: .customLong("tls-server-name"),
        help: ArgumentHelp(
            "Name checked against the server's certificate; beats redis.tls.server_name (default: the URL's host).",
            valueName: "name"))
    var tlsServerName: String?

    @Flag(
        name: .customLong("tls-insecure"),
        help: "Do not verify the server's certificate; beats redis.tls.verify.")
    var tlsInsecure = false

    @Option(
        name: .long,
        help: ArgumentHelp(
            "The key namespace; beats the catalog's redis.namespace (default leasehold).", valueName: "ns"))
    var namespace: String?

    @Flag(name: .long, help: "Print one JSON object instead of a table.")
    var json = false

    func settings(_ io: CLIIO) throws(CLIFailure) -> CLISettings {
        try CLISettings.resolve(
            config: config, redis: redis, namespace: namespace, environment: io.environment,
            passwordFile: redisPasswordFile,
            tls: RedisTLSSetting.Flags(
                caFile: tlsCAFile, certFile: tlsCertFile, keyFile: tlsKeyFile, serverName: tlsServerName,
                insecure: tlsInsecure))
    }
}

struct LeaseholdCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "leasehold",
        abstract:
            "Inspect and steer a Leasehold fleet: who leads which job, members, history, runs, handoffs, pause, resume, trigger.",
        discussion:
            "Exit codes: 0 ok, 1 runtime failure (Redis unreachable, no leader, ...), 2 usage or configuration error.",
        subcommands: [
            Status.self, Members.self, History.self, Runs.self, Release.self, Pause.self, Resume.self, Trigger.self,
            Prune.self, Validate.self, Watch.self,
        ])
}

/// Opens a connection, runs `body`, closes it.
func withReader<T>(_ settings: CLISettings, _ body: (SnapshotReader) async throws(CLIFailure) -> T)
    async throws(CLIFailure) -> T
{
    let connection = RedisConnection(configuration: settings.redisConfiguration)
    let reader = SnapshotReader(connection: connection, keys: settings.keys)
    do {
        let value = try await body(reader)
        await connection.close()
        return value
    } catch {
        await connection.close()
        throw error
    }
}

struct Status: ParsableCommand, CLIRunnable {
    static let configuration = CommandConfiguration(
        abstract: "One row per job: leader, token, lease expiry, preferred member, last run, leaderless time.")

    @OptionGroup var global: GlobalOptions

    func execute(_ io: CLIIO) async throws(CLIFailure) -> Int32 {
        let settings = try global.settings(io)
        let snapshot = try await withReader(settings) { reader throws(CLIFailure) in
            try await reader.snapshot(catalogJobs: settings.catalog?.jobs.map(\.name) ?? [])
        }
        io.out(global.json ? Render.statusJSON(snapshot) : Render.statusTable(snapshot))
        return CLIExitCode.ok
    }
}

struct Members: ParsableCommand, CLIRunnable {
    static let configuration = CommandConfiguration(
        abstract:
            "Members: host, pid, weight, version, catalog digest, jobs carried, up since, last heartbeat, jobs led.")

    @OptionGroup var global: GlobalOptions

    func execute(_ io: CLIIO) async throws(CLIFailure) -> Int32 {
        let settings = try global.settings(io)
        let snapshot = try await withReader(settings) { reader throws(CLIFailure) in
            try await reader.snapshot(catalogJobs: settings.catalog?.jobs.map(\.name) ?? [])
        }
        io.out(global.json ? Render.membersJSON(snapshot) : Render.membersTable(snapshot))
        return CLIExitCode.ok
    }
}

struct History: ParsableCommand, CLIRunnable {
    static let configuration = CommandConfiguration(
        abstract:
            "A job's leadership audit trail, oldest first: acquired, released, handed off, expired takeover, lost.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The job name.")
    var job: String

    @Option(name: .long, help: "How many of the latest events to show.")
    var limit: Int = 20

    func validate() throws {
        guard limit > 0 else { throw ValidationError("--limit must be at least 1") }
    }

    func execute(_ io: CLIIO) async throws(CLIFailure) -> Int32 {
        let settings = try global.settings(io)
        let limit = self.limit
        let job = self.job
        let (history, known) = try await withReader(settings) { reader throws(CLIFailure) in
            try await reader.history(job: job, limit: limit)
        }
        if !known && !settings.catalogLists(job) { throw settings.unknownJob(job) }
        io.out(global.json ? Render.historyJSON(history) : Render.historyTable(history))
        return CLIExitCode.ok
    }
}

struct Release: ParsableCommand, CLIRunnable {
    static let configuration = CommandConfiguration(
        abstract: "Ask a job's leader to hand it over at its next safe point (or --force: delete the lease, unsafe).",
        discussion: """
            Without --force the leader's handoff set ({ns}:member:<member>:handoff) gets the job; the \
            leader reads it with its next heartbeat and releases between runs, then stands back for the \
            job's stability window (at least its lease TTL) so that another member takes the job, even \
            when the released member is the job's rendezvous choice; after that window placement may \
            move it back. --force deletes the \
            lease at once: the old leader may still be running until its validity ends, so only \
            downstream stores that check fencing tokens are safe from a double run.
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The job name.")
    var job: String

    @Flag(name: .long, help: "Delete the lease now instead of asking the leader (unsafe without fencing).")
    var force = false

    @Flag(name: .long, help: "Do not ask for confirmation of --force.")
    var yes = false

    func execute(_ io: CLIIO) async throws(CLIFailure) -> Int32 {
        let settings = try global.settings(io)
        if force && !yes && !io.stdinIsTerminal {
            throw CLIFailure.usage("refusing --force without a terminal to confirm on: add --yes")
        }
        let job = self.job
        let force = self.force
        let yes = self.yes
        let json = global.json
        return try await withReader(settings) { reader throws(CLIFailure) in
            let replies = try await reader.pipeline([["GET", settings.keys.lease(job)]])
            guard let text = replies[0].string, let value = LeaseValue(parsing: text) else {
                throw CLIFailure.runtime("job '\(job)' has no leader in namespace \(settings.namespace)")
            }
            let leader = JSONValue.object([
                ("member", .string(value.owner.member)), ("instance", .string(value.owner.incarnation)),
                ("token", .uint(value.token)),
            ])
            if !force {
                _ = try await reader.pipeline([["SADD", settings.keys.handoffRequests(value.owner.member), job]])
                if json {
                    io.out(
                        JSONValue.object([
                            ("job", .string(job)), ("action", .string("handoff_requested")), ("leader", leader),
                        ]).serialized + "\n")
                } else {
                    io.out(
                        "asked \(value.owner.member) (instance \(value.owner.incarnation), token \(value.token)) to hand over \(job); it releases at its next safe point\n"
                    )
                }
                return CLIExitCode.ok
            }
            if !yes {
                io.err(
                    """
                    Force-releasing \(job) deletes the lease held by \(value.owner.member) (token \(value.token)) now.
                    That member may keep running the job until its validity ends: only fenced writes are safe.
                    Type the job name to confirm: 
                    """)
                guard io.readLine()?.trimmingCharacters(in: .whitespaces) == job else {
                    throw CLIFailure.usage("not confirmed; nothing changed")
                }
            }
            let reply = try await reader.evaluate(
                ForceRelease.script,
                keys: [settings.keys.lease(job), settings.keys.state(job), settings.keys.events(job)],
                arguments: [
                    text, value.owner.member, value.owner.description, String(value.token), ForceRelease.by,
                    settings.keys.releasedChannel, job,
                ])
            if let message = reply.errorMessage { throw CLIFailure.runtime("force release failed: \(message)") }
            guard reply.integer == 1 else {
                throw CLIFailure.runtime(
                    "the lease of '\(job)' changed while confirming (no longer \(text)); nothing deleted — run again")
            }
            if json {
                io.out(
                    JSONValue.object([("job", .string(job)), ("action", .string("forced_release")), ("leader", leader)])
                        .serialized + "\n")
            } else {
                io.out(
                    "deleted the lease of \(job) held by \(value.owner.member) (token \(value.token)); members may take it over now\n"
                )
            }
            return CLIExitCode.ok
        }
    }
}

/// The forced release, atomic and conditional on the lease value the operator confirmed.
enum ForceRelease {
    static var by: String {
        var buffer = [CChar](repeating: 0, count: 256)
        let host =
            gethostname(&buffer, buffer.count) == 0
            ? String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
        return "leasehold-cli@\(host)"
    }

    /// KEYS: lease, state, events. ARGV: expected value, member, owner, token, by, channel, job.
    /// Reply: 1 deleted, 0 the lease is gone or changed.
    static let script = RedisScript(
        #"""
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
        local t = redis.call('TIME')
        local now_s = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
        redis.call('DEL', KEYS[1])
        redis.call('HSET', KEYS[2], 'holder', '', 'released_at', now_s)
        redis.call('XADD', KEYS[3], 'MAXLEN', '~', '1000', '*', 'type', 'forced_release', 'member', ARGV[2],
          'owner', ARGV[3], 'token', ARGV[4], 'at', now_s, 'by', ARGV[5])
        redis.call('PUBLISH', ARGV[6], ARGV[7])
        return 1
        """#)
}

struct Validate: ParsableCommand, CLIRunnable {
    static let configuration = CommandConfiguration(
        abstract: "Check a catalog exactly as the daemon would, without touching Redis.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The catalog to check (default: --config, else ./jobs.yaml).")
    var path: String?

    @Option(name: .long, help: "Also print each scheduled job's next N start times in its time zone.")
    var next: Int?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "With --next: count from this time (RFC 3339 such as 2026-03-28T00:00:00Z, or ms since the epoch) instead of now.",
            valueName: "time"))
    var from: String?

    func validate() throws {
        if let next, !(1...1000).contains(next) { throw ValidationError("--next must be between 1 and 1000") }
        if let from {
            guard next != nil else { throw ValidationError("--from needs --next") }
            guard NextStarts.parseTime(from) != nil else {
                throw ValidationError("--from must be RFC 3339 (2026-03-28T00:00:00Z) or ms since the epoch")
            }
        }
    }

    func execute(_ io: CLIIO) async throws(CLIFailure) -> Int32 {
        let path = self.path ?? global.config ?? CLISettings.defaultConfigPath
        do {
            let catalog = try HandlerRegistry.builtIn.loadCatalog(path: path)
            // The wall clock, not Redis: validate never touches Redis, and cron slots are wall-clock times.
            let fromMs = from.flatMap { NextStarts.parseTime($0) } ?? JobSchedule.milliseconds(Date())
            let upcoming = next.map { NextStarts.compute(catalog, count: $0, fromMs: fromMs) }
            if global.json {
                var fields: [(String, JSONValue)] = [
                    ("path", .string(path)), ("valid", .bool(true)), ("namespace", .string(catalog.namespace)),
                    ("jobs", .array(catalog.jobs.map { .string($0.name) })), ("errors", .array([])),
                ]
                if let upcoming {
                    fields.append(("from_ms", .int(fromMs)))
                    fields.append(("next_starts", NextStarts.json(upcoming)))
                }
                io.out(JSONValue.object(fields).serialized + "\n")
            } else {
                io.out(Self.summary(catalog, path: path) + "\n")
                if let upcoming, let next { io.out(NextStarts.text(upcoming, count: next, fromMs: fromMs)) }
            }
            return CLIExitCode.ok
        } catch {
            if global.json {
                io.out(
                    JSONValue.object([
                        ("path", .string(path)), ("valid", .bool(false)),
                        (
                            "errors",
                            .array(
                                error.errors.map { e in
                                    .object([
                                        ("file", .string(e.location.file)), ("line", .int(Int64(e.location.line))),
                                        ("column", .int(Int64(e.location.column))), ("message", .string(e.message)),
                                    ])
                                })
                        ),
                    ]).serialized + "\n")
            }
            throw CLIFailure(code: CLIExitCode.usage, lines: error.errors.map(\.description))
        }
    }

    /// `jobs.yaml: ok — 4 jobs (2 every, 1 cron, 1 continuous), namespace leasehold`.
    static func summary(_ catalog: Catalog, path: String) -> String {
        var every = 0
        var cron = 0
        var continuous = 0
        for job in catalog.jobs {
            switch job.schedule {
            case .every: every += 1
            case .cron: cron += 1
            case .continuous: continuous += 1
            }
        }
        let count = catalog.jobs.count
        return
            "\(path): ok — \(count) \(count == 1 ? "job" : "jobs") (\(every) every, \(cron) cron, \(continuous) continuous), namespace \(catalog.namespace)"
    }
}

struct Watch: ParsableCommand, CLIRunnable {
    static let configuration = CommandConfiguration(
        abstract:
            "`status`, redrawn in the terminal every interval until Ctrl-C (with --json: one JSON line per refresh).")

    @OptionGroup var global: GlobalOptions

    @Option(name: .long, help: "Time between refreshes (250ms, 1s, 2m).")
    var interval: String = "1s"

    @Option(name: .long, help: "Stop after this many refreshes (default: until Ctrl-C).")
    var count: Int?

    func validate() throws {
        guard let duration = CatalogValue.duration(interval), duration >= .milliseconds(100) else {
            throw ValidationError("--interval must be a duration of at least 100ms, such as 500ms or 2s")
        }
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
    }

    func execute(_ io: CLIIO) async throws(CLIFailure) -> Int32 {
        let settings = try global.settings(io)
        let pause = CatalogValue.duration(interval) ?? .seconds(1)
        let connection = RedisConnection(configuration: settings.redisConfiguration)
        let reader = SnapshotReader(connection: connection, keys: settings.keys)
        let jobs = settings.catalog?.jobs.map(\.name) ?? []
        var refreshes = 0
        while !Task.isCancelled {
            let body: String
            do {
                let snapshot = try await reader.snapshot(catalogJobs: jobs)
                body = global.json ? Render.statusJSON(snapshot) : Render.statusTable(snapshot)
            } catch {
                // Keep watching through an outage: the screen says what is wrong.
                body = error.lines.joined(separator: "\n") + "\n"
                if global.json { io.err(body) }
            }
            if global.json {
                if !body.hasPrefix("leasehold:") { io.out(body) }
            } else {
                io.out(
                    "\u{1B}[H\u{1B}[2J" + "leasehold watch — every \(CatalogValue.text(pause)), Ctrl-C to stop\n\n"
                        + body)
            }
            refreshes += 1
            if let count, refreshes >= count { break }
            try? await Task.sleep(for: pause)
        }
        await connection.close()
        return CLIExitCode.ok
    }
}
