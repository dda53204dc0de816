import ArgumentParser
import Leasehold
import RedisClient

struct Runs: ParsableCommand, CLIRunnable {
    static let configuration = CommandConfiguration(
        abstract: "A job's latest runs, newest first: slot, start, finish, duration, result, attempt, trigger.",
        discussion: """
            Reads {ns}:{job}:runs, where the leader records each run's start and finish. A start \
            with no finish is a run in progress (RESULT running) or one whose leader died \
            (unfinished; null in JSON). The stream is capped, so the oldest runs fall off.
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The job name.")
    var job: String

    @Option(name: .long, help: "How many of the latest runs to show.")
    var limit: Int = 20

    func validate() throws {
        guard limit > 0 else { throw ValidationError("--limit must be at least 1") }
    }

    func execute(_ io: CLIIO) async throws(CLIFailure) -> Int32 {
        let settings = try global.settings(io)
        let (job, limit) = (self.job, self.limit)
        let (runs, known) = try await withReader(settings) { reader throws(CLIFailure) in
            try await reader.runs(job: job, limit: limit)
        }
        if !known && !settings.catalogLists(job) { throw settings.unknownJob(job) }
        io.out(global.json ? Render.runsJSON(runs) : Render.runsTable(runs))
        return CLIExitCode.ok
    }
}

/// One run of a job: its start entry in the runs stream and, once it ended, its finish entry.
package struct JobRun: Sendable, Hashable {
    /// The scheduled slot (ms since the epoch); nil for continuous and manual runs.
    package var slotMs: Int64?
    /// When it started (Redis ms).
    package var startedAtMs: Int64?
    /// When it finished (Redis ms); nil while running or when its leader died.
    package var finishedAtMs: Int64?
    /// How long it took.
    package var durationMs: Int64?
    /// `success`, `failure`, `timeout` or `cancelled`; nil without a finish.
    package var result: String?
    /// 1 for the first try of a slot, 2 and up for retries.
    package var attempt: Int
    /// `schedule`, `retry` or `manual`.
    package var trigger: String
    /// The member that ran it.
    package var member: String?
    /// The fencing token it ran under.
    package var token: UInt64?
    /// Whether the state hash says this run is the one in progress.
    package var running: Bool

    /// Creates a run.
    package init(
        slotMs: Int64? = nil, startedAtMs: Int64?, finishedAtMs: Int64? = nil, durationMs: Int64? = nil,
        result: String? = nil, attempt: Int = 1, trigger: String = "schedule", member: String? = nil,
        token: UInt64? = nil, running: Bool = false
    ) {
        self.slotMs = slotMs
        self.startedAtMs = startedAtMs
        self.finishedAtMs = finishedAtMs
        self.durationMs = durationMs
        self.result = result
        self.attempt = attempt
        self.trigger = trigger
        self.member = member
        self.token = token
        self.running = running
    }
}

/// A job's latest runs, newest first.
package struct JobRuns: Sendable, Hashable {
    /// The job.
    package var job: String
    /// Redis `TIME` when read.
    package var nowMs: Int64
    /// The runs, newest first.
    package var runs: [JobRun]

    /// Creates a list.
    package init(job: String, nowMs: Int64, runs: [JobRun]) {
        self.job = job
        self.nowMs = nowMs
        self.runs = runs
    }
}

/// Pairs runs-stream entries into runs.
package enum RunPairing {
    /// What identifies one run across its two entries: a retry of a slot has the same token
    /// and its own start and attempt.
    struct Key: Hashable {
        var token: String
        var started: String
        var attempt: String
    }

    /// The newest `limit` runs from `entries` (stream field maps, newest first), newest first.
    ///
    /// A finish is always appended after its start, so reading backwards meets it first and
    /// keeps it until the start comes. Entries without `type` (older members) are starts with
    /// attempt 1 and trigger `schedule`. When `complete` (the whole stream was read), a finish
    /// whose start was trimmed away is still a run. `running` names the run the state hash
    /// says is in progress (token, start).
    package static func pair(
        _ entries: [[String: String]], limit: Int, complete: Bool, running: (token: String, started: String)? = nil
    ) -> [JobRun] {
        var finishes: [Key: [String: String]] = [:]
        var finishOrder: [Key] = []
        var runs: [JobRun] = []
        var used = Set<Key>()
        for fields in entries {
            let type = fields["type"] ?? "started"
            let key = Key(
                token: fields["token"] ?? "", started: fields["started"] ?? "", attempt: fields["attempt"] ?? "1")
            switch type {
            case "finished":
                if finishes[key] == nil { finishOrder.append(key) }
                finishes[key] = fields
            case "started":
                guard runs.count < limit else { continue }
                let finish = finishes[key]
                if finish != nil { used.insert(key) }
                let isRunning =
                    finish == nil && running.map { $0.token == key.token && $0.started == key.started } == true
                runs.append(run(start: fields, finish: finish, running: isRunning))
            default:
                continue
            }
        }
        if complete {
            // Finishes of trimmed starts: the finish entry carries everything but the order.
            for key in finishOrder where !used.contains(key) {
                if let finish = finishes[key] { runs.append(run(start: finish, finish: finish, running: false)) }
            }
            // Newest start first; equal starts keep their stream order.
            runs = runs.enumerated().sorted { a, b in
                let (x, y) = (a.element.startedAtMs ?? .min, b.element.startedAtMs ?? .min)
                return x != y ? x > y : a.offset < b.offset
            }.map(\.element)
        }
        return Array(runs.prefix(limit))
    }

    static func run(start: [String: String], finish: [String: String]?, running: Bool) -> JobRun {
        func number(_ fields: [String: String]?, _ key: String) -> Int64? {
            fields?[key].flatMap { $0.isEmpty ? nil : Int64($0) }
        }
        let started = number(start, "started")
        let finished = number(finish, "finished")
        return JobRun(
            slotMs: number(start, "slot"), startedAtMs: started, finishedAtMs: finished,
            durationMs: number(finish, "duration_ms")
                ?? finished.flatMap { end in started.map { end - $0 } },
            result: finish?["result"].flatMap { $0.isEmpty ? nil : $0 },
            attempt: start["attempt"].flatMap { Int($0) } ?? 1,
            trigger: start["trigger"].flatMap { $0.isEmpty ? nil : $0 } ?? "schedule",
            member: start["member"].flatMap { $0.isEmpty ? nil : $0 },
            token: start["token"].flatMap { UInt64($0) }, running: running)
    }
}

extension SnapshotReader {
    /// The latest `limit` runs of a job, newest first, and whether the job is known to Redis
    /// (in `{ns}:jobs`, or with any run recorded). Reads the stream backwards in pages until it
    /// has `limit` starts or reaches the beginning.
    package func runs(job: String, limit: Int) async throws(CLIFailure) -> (runs: JobRuns, known: Bool) {
        // A run is two entries; the extra room covers finishes of older runs read on the way.
        let page = max(2 * limit + 2, 64)
        let first = try await pipeline([
            ["TIME"], ["SISMEMBER", keys.jobs, job],
            ["HMGET", keys.state(job), "running", "last_run_token", "last_run_started"],
            ["XREVRANGE", keys.runs(job), "+", "-", "COUNT", String(page)],
        ])
        guard let nowMs = Self.timeMs(first[0]) else {
            throw CLIFailure.runtime("unexpected TIME reply from \(endpoint)")
        }
        let state = (first[2].array ?? []).map { $0.string }
        let running: (token: String, started: String)? =
            state.count == 3 && state[0] == "1" ? (state[1] ?? "", state[2] ?? "") : nil
        var entries: [[String: String]] = []
        var reply = first[3]
        var starts = 0
        while true {
            let batch = reply.array ?? []
            var lastID: String?
            for entry in batch {
                guard let parts = entry.array, parts.count == 2, let id = parts[0].string else { continue }
                let fields = Self.hash(parts[1])
                entries.append(fields)
                if (fields["type"] ?? "started") == "started" { starts += 1 }
                lastID = id
            }
            guard batch.count >= page, starts < limit, let lastID else { break }
            reply = try await pipeline([["XREVRANGE", keys.runs(job), "(" + lastID, "-", "COUNT", String(page)]])[0]
        }
        let complete = starts < limit
        let runs = RunPairing.pair(entries, limit: limit, complete: complete, running: running)
        return (JobRuns(job: job, nowMs: nowMs, runs: runs), first[1].integer == 1 || !entries.isEmpty)
    }
}

extension Render {
    // MARK: - Runs

    /// The `runs` table, newest first (ends with a newline).
    package static func runsTable(_ list: JobRuns) -> String {
        if list.runs.isEmpty { return "no runs recorded for job \(list.job)\n" }
        var rows: [[String]] = [
            [
                "SLOT (UTC)", "STARTED (UTC)", "FINISHED (UTC)", "DURATION", "RESULT", "ATTEMPT", "TRIGGER", "MEMBER",
                "TOKEN",
            ]
        ]
        for run in list.runs {
            let result = run.result ?? (run.running ? "running" : "unfinished")
            let took =
                run.durationMs.map { Render.duration($0) }
                ?? (run.running ? run.startedAtMs.map { "\(age(list.nowMs - $0)) so far" } : nil) ?? "-"
            rows.append([
                run.slotMs.map { timestamp($0, millis: false) } ?? "-",
                run.startedAtMs.map { timestamp($0, millis: true) } ?? "-",
                run.finishedAtMs.map { timestamp($0, millis: true) } ?? "-",
                took, result, String(run.attempt), run.trigger, run.member ?? "-",
                run.token.map(String.init) ?? "-",
            ])
        }
        return table(rows)
    }

    /// The `runs --json` object (one line): times in ms since the epoch, null where unknown.
    package static func runsJSON(_ list: JobRuns) -> String {
        JSONValue.object([
            ("job", .string(list.job)),
            ("now_ms", .int(list.nowMs)),
            (
                "runs",
                .array(
                    list.runs.map { run in
                        .object([
                            ("slot", run.slotMs.map(JSONValue.int) ?? .null),
                            ("started_at", run.startedAtMs.map(JSONValue.int) ?? .null),
                            ("finished_at", run.finishedAtMs.map(JSONValue.int) ?? .null),
                            ("duration_ms", run.durationMs.map(JSONValue.int) ?? .null),
                            ("result", run.result.map(JSONValue.string) ?? .null),
                            ("attempt", .int(Int64(run.attempt))),
                            ("trigger", .string(run.trigger)),
                            ("member", run.member.map(JSONValue.string) ?? .null),
                            ("token", run.token.map(JSONValue.uint) ?? .null),
                            ("running", .bool(run.running)),
                        ])
                    })
            ),
        ]).serialized + "\n"
    }
}
