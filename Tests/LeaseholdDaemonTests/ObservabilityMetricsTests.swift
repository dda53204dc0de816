import Foundation
import Leasehold
import LeaseholdDaemon
import LeaseholdTesting
import Logging
import Prometheus
import RedisClient
import Synchronization
import Testing

// Metrics, log lines and status of one in-process LeaseholdService through a leadership cycle
// and a Redis outage. Metrics go to a private Prometheus registry (never the global
// MetricsSystem) and are read back from the Prometheus text format, as a scraper would.

// MARK: - Prometheus text format

/// One sample line of the Prometheus text format.
struct ObsSample: Hashable, Sendable {
    var name: String
    var labels: [String: String]
    var value: Double
}

enum ObsPrometheusParseError: Error, CustomStringConvertible {
    case badLine(Int, String)
    var description: String {
        switch self {
        case .badLine(let number, let line): "line \(number) is neither a comment nor `name{labels} value`: \(line)"
        }
    }
}

/// Parses the text exposition format strictly: every non-empty line is a `# ` comment or
/// `name{label="value",...} value`.
func obsParsePrometheus(_ text: String) throws -> [ObsSample] {
    var samples: [ObsSample] = []
    for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
        let line = String(raw)
        if line.isEmpty || line.hasPrefix("# HELP ") || line.hasPrefix("# TYPE ") { continue }
        guard let sample = obsParseSample(line) else { throw ObsPrometheusParseError.badLine(index + 1, line) }
        samples.append(sample)
    }
    return samples
}

private func obsParseSample(_ line: String) -> ObsSample? {
    var rest = Substring(line)
    let nameEnd = rest.firstIndex { !($0.isLetter || $0.isNumber || $0 == "_" || $0 == ":") } ?? rest.endIndex
    let name = String(rest[..<nameEnd])
    guard let first = name.first, first.isLetter || first == "_" || first == ":" else { return nil }
    rest = rest[nameEnd...]
    var labels: [String: String] = [:]
    if rest.first == "{" {
        rest = rest.dropFirst()
        while rest.first != "}" {
            guard let equals = rest.firstIndex(of: "=") else { return nil }
            let key = String(rest[..<equals])
            guard !key.isEmpty, key.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else { return nil }
            rest = rest[rest.index(after: equals)...]
            guard rest.first == "\"" else { return nil }
            rest = rest.dropFirst()
            var value = ""
            while let character = rest.first, character != "\"" {
                if character == "\\" {
                    rest = rest.dropFirst()
                    guard let escaped = rest.first else { return nil }
                    value.append(escaped == "n" ? "\n" : escaped)
                } else {
                    value.append(character)
                }
                rest = rest.dropFirst()
            }
            guard rest.first == "\"" else { return nil }
            rest = rest.dropFirst()
            labels[key] = value
            if rest.first == "," { rest = rest.dropFirst() }
        }
        rest = rest.dropFirst()
    }
    guard rest.first == " " else { return nil }
    let fields = rest.dropFirst().split(separator: " ")
    guard (1...2).contains(fields.count) else { return nil }
    let valueText = String(fields[0])
    let value: Double
    switch valueText {
    case "+Inf": value = .infinity
    case "-Inf": value = -.infinity
    case "NaN": value = .nan
    default:
        guard let parsed = Double(valueText) else { return nil }
        value = parsed
    }
    return ObsSample(name: name, labels: labels, value: value)
}

extension [ObsSample] {
    /// The value of the sample with exactly these labels (nil if absent).
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        first { $0.name == name && $0.labels == labels }?.value
    }

    /// The sum of every sample of `name` whose labels include `labels`.
    func total(_ name: String, matching labels: [String: String] = [:]) -> Double {
        filter { sample in sample.name == name && labels.allSatisfy { key, value in sample.labels[key] == value } }
            .reduce(0) { $0 + $1.value }
    }
}

// MARK: - Log capture

/// Keeps every line a logger wrote, rendered exactly as the daemon renders it.
final class ObsLogCapture: Sendable {
    private let storage = Mutex<[String]>([])
    let format: LogFormat

    init(format: LogFormat = .json) { self.format = format }

    var lines: [String] { storage.withLock { $0 } }

    func append(_ line: String) { storage.withLock { $0.append(line) } }

    func logger(label: String = "leaseholdd") -> Logger {
        Logger(label: label) { label in ObsCapturingLogHandler(capture: self, label: label) }
    }

    /// The JSON objects of every line (every line must parse).
    func jsonLines() throws -> [[String: Any]] {
        try lines.map { line in
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8))
            guard let dictionary = object as? [String: Any] else {
                throw TestSupportError("not a JSON object: \(line)")
            }
            return dictionary
        }
    }
}

struct ObsCapturingLogHandler: Logging.LogHandler {
    let capture: ObsLogCapture
    let label: String
    var logLevel: Logger.Level = .debug
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        capture.append(
            DaemonLogHandler.render(
                format: capture.format, label: label, level: event.level, message: event.message.description,
                metadata: merged, date: Date()))
    }
}

// MARK: - Helpers

/// A one-job catalog: a continuous `log` job with a 2 s lease, placement `any`.
func obsCatalog(job: String, namespace: String) -> Catalog {
    Catalog(
        namespace: namespace,
        jobs: [JobSpec(name: job, handler: "log", schedule: .continuous, lease: .seconds(2), placement: .any)],
        path: "<memory>")
}

// MARK: - Tests

@Suite("Observability: metrics, logs and status of a member", .serialized, .timeLimit(.minutes(3)))
struct ObservabilityMetricsTests {
    @Test(
        "A leadership cycle and a Redis outage show up in metrics, JSON logs, /readyz and /status; the Redis password never does"
    )
    func leadershipCycleAndOutage() async throws {
        let redis = try await RedisServerProcess(.init(password: "secret"))
        let job = "obs-cycle"
        let namespace = "obs-\(UInt32.random(in: 0 ... .max))"
        let registry = PrometheusCollectorRegistry()
        let metrics = LeaseholdMetrics(factory: PrometheusMetricsFactory(registry: registry))
        let logs = ObsLogCapture(format: .json)
        let logger = logs.logger()
        let endpoint = try RedisEndpoint(url: "redis://:secret@127.0.0.1:\(redis.port)/0")
        let service = try LeaseholdService(
            configuration: .init(
                catalog: obsCatalog(job: job, namespace: namespace), redis: endpoint, memberName: "obs-member",
                shutdownTimeout: .seconds(5)),
            registry: .builtIn, logger: logger, metrics: metrics)
        let status = StatusHTTPServer(host: "127.0.0.1", port: 0, member: service, metrics: registry, logger: logger)
        func scrape() throws -> [ObsSample] { try obsParsePrometheus(status.respond(to: "/metrics").body) }

        let run = Task { try await service.run() }

        // Acquire: leader = 1, acquired_total = 1, redis_up = 1, members = 1.
        try await eventually("leadership", within: .seconds(20), diagnostics: { registry.emitToString() }) {
            try scrape().value("leasehold_leader", ["job": job]) == 1
        }
        var samples = try scrape()
        #expect(samples.value("leasehold_lease_acquired_total", ["job": job]) == 1)
        #expect(samples.value("leasehold_redis_up") == 1)
        try await eventually("leasehold_members to reach 1", within: .seconds(10)) {
            try scrape().value("leasehold_members") == 1
        }
        try await eventually("observations of leasehold_renew_duration_seconds", within: .seconds(10)) {
            try scrape().total("leasehold_renew_duration_seconds_count") >= 2
        }

        // Health, readiness, status.
        #expect(status.respond(to: "/healthz").status == .ok)
        #expect(status.respond(to: "/readyz").status == .ok)
        // /status lists only grants valid right now: on a machine loaded enough to delay a
        // renewal of this 2 s lease past its step-down, it is briefly empty; read it again.
        var statusObject: [String: Any] = [:]
        var statusBody = ""
        let statusDeadline = ContinuousClock.now + .seconds(10)
        repeat {
            statusBody = status.respond(to: "/status").body
            statusObject = try #require(try JSONSerialization.jsonObject(with: Data(statusBody.utf8)) as? [String: Any])
            if (statusObject["leading"] as? [[String: Any]])?.count == 1 { break }
            try await Task.sleep(for: .milliseconds(50))
        } while ContinuousClock.now < statusDeadline
        #expect(statusObject["member"] as? String == "obs-member")
        #expect(statusObject["redis_up"] as? Bool == true)
        let leading = try #require(statusObject["leading"] as? [[String: Any]])
        #expect(leading.count == 1)
        let firstToken = try #require((leading.first?["token"] as? NSNumber)?.uint64Value)
        #expect(leading.first?["job"] as? String == job)
        let validFor = try #require((leading.first?["valid_for_ms"] as? NSNumber)?.intValue)
        #expect(validFor > 0 && validFor <= 2000, "valid_for_ms \(validFor) outside (0, 2000]")
        #expect(!statusBody.contains("secret"), "/status leaks the Redis password: \(statusBody)")
        #expect(status.respond(to: "/nope").status == .notFound)

        // Redis down: redis_up = 0, errors counted, leader steps down, /readyz 503.
        await redis.kill()
        try await eventually(
            "redis_up and leader at 0 after Redis died", within: .seconds(10), diagnostics: { registry.emitToString() }
        ) {
            let samples = try scrape()
            return samples.value("leasehold_redis_up") == 0 && samples.value("leasehold_leader", ["job": job]) == 0
        }
        samples = try scrape()
        #expect(samples.value("leasehold_lease_lost_total", ["job": job, "reason": "stepped_down"]) == 1)
        let errorsAtDown = samples.total("leasehold_redis_errors_total")
        #expect(errorsAtDown >= 1)
        #expect(status.respond(to: "/readyz").status == .serviceUnavailable)
        // Retries continue (errors keep counting) but the log says it once.
        try await eventually("retries while Redis is down", within: .seconds(10)) {
            try scrape().total("leasehold_redis_errors_total") > errorsAtDown
        }
        try await Task.sleep(for: .seconds(2))
        #expect(
            logs.lines.filter { $0.contains("redis unreachable") }.count == 1,
            "Redis-down logged more than once:\n\(logs.lines.joined(separator: "\n"))")

        // Redis back: led again, redis_up = 1, /readyz 200.
        try await redis.restart()
        try await eventually(
            "leadership and redis_up after Redis came back", within: .seconds(20),
            diagnostics: { registry.emitToString() }
        ) {
            let samples = try scrape()
            return samples.value("leasehold_leader", ["job": job]) == 1 && samples.value("leasehold_redis_up") == 1
        }
        #expect(try scrape().value("leasehold_lease_acquired_total", ["job": job]) == 2)
        #expect(status.respond(to: "/readyz").status == .ok)
        let secondToken = try #require(service.manager.grant(for: job)?.token)
        #expect(secondToken > firstToken, "token \(firstToken) -> \(secondToken) after a restart without persistence")

        // Release: leader = 0, lost_total{reason=released} = 1.
        await service.stop()
        try await eventually("the release to be counted", within: .seconds(15)) {
            run.isCancelled
                || (try? scrape().value("leasehold_lease_lost_total", ["job": job, "reason": "released"])) == 1
        }
        _ = try await run.value
        samples = try scrape()
        #expect(samples.value("leasehold_leader", ["job": job]) == 0)
        #expect(samples.value("leasehold_lease_lost_total", ["job": job, "reason": "released"]) == 1)
        #expect(samples.value("leasehold_lease_lost_total", ["job": job, "reason": "stepped_down"]) == 1)
        let holder = try await redis.command("EXISTS", LeaseKeys(namespace: namespace).lease(job)).integer
        #expect(holder == 0, "the lease is still in Redis after a graceful stop")

        // The log lines: every line is JSON; each transition names job, member, token, reason.
        let objects = try logs.jsonLines()
        func transitions(_ message: String) -> [[String: Any]] {
            objects.filter { $0["message"] as? String == message }
        }
        let acquired = transitions("acquired leadership")
        let lost = transitions("lost leadership")
        let released = transitions("released leadership")
        #expect(
            acquired.count == 2 && lost.count == 1 && released.count == 1,
            "transitions: \(acquired.count) acquired, \(lost.count) lost, \(released.count) released:\n\(logs.lines.joined(separator: "\n"))"
        )
        for line in acquired + lost + released {
            for key in ["job", "member", "token", "reason", "time", "level", "logger"] {
                #expect(line[key] != nil, "log line without \(key): \(line)")
            }
            #expect(line["job"] as? String == job)
            #expect(line["member"] as? String == "obs-member")
        }
        #expect(acquired.first?["token"] as? String == String(firstToken))
        #expect(acquired.last?["token"] as? String == String(secondToken))
        #expect(lost.first?["reason"] as? String == "stepped_down")
        #expect(lost.first?["level"] as? String == "warning")
        #expect(released.first?["reason"] as? String == "released")
        #expect(transitions("redis reachable").count == 2)
        #expect(
            transitions("redis unreachable: leaders step down at validity − grace, everyone retries with backoff").count
                == 1)
        #expect(!logs.lines.contains { $0.contains("secret") }, "a log line leaks the Redis password")
    }

    @Test("Text log lines: time, level, message, then sorted key=value fields")
    func textRendering() throws {
        let date = Date(timeIntervalSince1970: 1_795_730_400.125)
        let line = DaemonLogHandler.render(
            format: .text, label: "leaseholdd", level: .info, message: "acquired leadership",
            metadata: [
                "token": "17", "job": "report", "member": "m1", "reason": "expired_takeover", "note": "two words",
            ], date: date)
        #expect(
            line
                == #"2026-11-26T22:00:00.125Z info    acquired leadership job=report member=m1 note="two words" reason=expired_takeover token=17"#
        )
        let json = DaemonLogHandler.render(
            format: .json, label: "leaseholdd", level: .warning, message: "lost leadership",
            metadata: ["job": "report", "token": "17", "message": "must not clobber"], date: date)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        #expect(object["message"] as? String == "lost leadership")
        #expect(object["level"] as? String == "warning")
        #expect(object["job"] as? String == "report")
        #expect(object["time"] as? String == "2026-11-26T22:00:00.125Z")
    }

    @Test("Control characters in a message or a field never start a new log line or reach the terminal")
    func textRenderingEscapesControlCharacters() throws {
        let date = Date(timeIntervalSince1970: 1_795_730_400.125)
        let forged = "ok\r\n2026-11-26T22:00:00.000Z info    acquired leadership job=fake\u{1B}[2J\u{9B}\u{7F}"
        let line = DaemonLogHandler.render(
            format: .text, label: "leaseholdd", level: .info, message: forged, metadata: ["detail": "a\nb"], date: date)
        #expect(!line.contains("\n") && !line.contains("\r") && !line.unicodeScalars.contains { $0.value == 0x1B })
        #expect(
            line
                == #"2026-11-26T22:00:00.125Z info    ok\r\n2026-11-26T22:00:00.000Z info    acquired leadership job=fake\x1b[2J\x9b\x7f detail=a\nb"#
        )
        #expect(LogText.escaped("plain text, tabs\tand \\x1b literally") == "plain text, tabs\\tand \\x1b literally")
        #expect(LogText.escaped(LogText.escaped(forged)) == LogText.escaped(forged))
    }

    @Test("The Prometheus parser rejects what a scraper would reject")
    func parserIsStrict() throws {
        let good = """
            # HELP x help
            # TYPE x counter
            x_total{job="a b",reason="re\\"leased"} 3
            y 1.5
            z_bucket{le="+Inf"} 2

            """
        let samples = try obsParsePrometheus(good)
        #expect(samples.count == 3)
        #expect(samples.value("x_total", ["job": "a b", "reason": "re\"leased"]) == 3)
        #expect(throws: ObsPrometheusParseError.self) { try obsParsePrometheus("x{job=a} 1\n") }
        #expect(throws: ObsPrometheusParseError.self) { try obsParsePrometheus("x 1 2 3\n") }
        #expect(throws: ObsPrometheusParseError.self) { try obsParsePrometheus("just words\n") }
    }
}
