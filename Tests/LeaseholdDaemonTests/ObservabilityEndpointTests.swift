import Foundation
import LeaseholdTesting
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

// The `leaseholdd` executable scraped over HTTP, as Prometheus and a load balancer would:
// /metrics in the text format, /healthz, /readyz (503 while Redis is down), /status JSON,
// and its JSON log lines on stderr. The Redis URL carries a password that must never show.

private func get(_ port: Int, _ path: String) async -> (status: Int, body: String)? {
    // DaemonTestSupport's blocking GET, off the cooperative pool.
    await Task.detached { httpGet(port: port, path: path).map { ($0.status, $0.body) } }.value
}

@Suite("Observability: leaseholdd over HTTP", .serialized, .timeLimit(.minutes(3)))
struct ObservabilityEndpointTests {
    @Test(
        "leaseholdd: /metrics parses, /healthz 200, /readyz 200 then 503 with Redis stopped, /status JSON, JSON logs, no password anywhere"
    )
    func scrapeTheDaemon() async throws {
        let redis = try await RedisServerProcess(.init(password: "secret"))
        let job = "obs-http"
        let namespace = "obsd-\(UInt32.random(in: 0 ... .max))"
        let catalogPath = redis.directory + "/jobs.yaml"
        try """
        version: 1
        redis:
          namespace: \(namespace)
        defaults:
          lease: 2s
          placement: any
        jobs:
          - name: \(job)
            handler: log
            schedule: continuous
            config: { message: "leading" }
        """.write(toFile: catalogPath, atomically: true, encoding: .utf8)

        // The HTTP port is picked free; if another process grabs it first the daemon exits: retry.
        var daemon: (process: DaemonProcess, port: Int)?
        for _ in 0..<5 {
            let port = FreePort.next()
            let candidate = try DaemonProcess(
                name: "obs-d1",
                arguments: [
                    "--config", catalogPath, "--redis", "redis://:secret@127.0.0.1:\(redis.port)/0", "--name", "obs-d1",
                    "--log-format", "json", "--log-level", "info", "--http", "127.0.0.1:\(port)",
                ])
            let listening =
                (try? await eventually("/healthz to answer", within: .seconds(20)) {
                    await get(port, "/healthz")?.status == 200 || !candidate.isRunning
                }) != nil
            if listening && candidate.isRunning {
                daemon = (candidate, port)
                break
            }
            await candidate.stop()
        }
        let (d, port) = try #require(daemon, "leaseholdd never served /healthz")
        /// Everything the daemon wrote to stderr so far.
        var stderr: String { d.lines.map(\.raw).joined(separator: "\n") }

        // Leader, as /metrics says.
        try await eventually("leaseholdd to lead", within: .seconds(20), diagnostics: { stderr }) {
            guard let body = await get(port, "/metrics")?.body, let samples = try? obsParsePrometheus(body) else {
                return false
            }
            return samples.value("leasehold_leader", ["job": job]) == 1
        }
        let metrics = try #require(await get(port, "/metrics"))
        #expect(metrics.status == 200)
        let samples = try obsParsePrometheus(metrics.body)  // every line a comment or `name{labels} value`
        #expect(samples.value("leasehold_lease_acquired_total", ["job": job]) == 1)
        #expect(samples.value("leasehold_redis_up") == 1)
        for line in metrics.body.split(separator: "\n") where line.hasPrefix("# TYPE ") {
            let kind = line.split(separator: " ").last.map(String.init) ?? ""
            #expect(["counter", "gauge", "histogram", "summary", "untyped"].contains(kind), "odd TYPE line: \(line)")
        }
        #expect(await get(port, "/healthz")?.status == 200)
        #expect(await get(port, "/readyz")?.status == 200)

        let status = try #require(await get(port, "/status"))
        #expect(status.status == 200)
        let object = try #require(
            try JSONSerialization.jsonObject(with: Data(status.body.utf8)) as? [String: Any], "status: \(status.body)")
        #expect(object["member"] as? String == "obs-d1")
        let leading = try #require(object["leading"] as? [[String: Any]])
        #expect(leading.count == 1)
        #expect(leading.first?["job"] as? String == job)
        #expect(((leading.first?["token"] as? NSNumber)?.uint64Value ?? 0) > 0)
        let validFor = (leading.first?["valid_for_ms"] as? NSNumber)?.intValue ?? -1
        #expect(validFor > 0 && validFor <= 2000, "valid_for_ms \(validFor)")

        // Redis stopped: /readyz 503, /healthz still 200, the process stays up.
        await redis.kill()
        try await eventually("/readyz to turn 503 with Redis stopped", within: .seconds(15)) {
            await get(port, "/readyz")?.status == 503
        }
        #expect(await get(port, "/healthz")?.status == 200)
        try await eventually("/status to show no leadership with Redis down", within: .seconds(10)) {
            guard let body = await get(port, "/status")?.body,
                let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
            else { return false }
            return (object["leading"] as? [Any])?.isEmpty == true && object["redis_up"] as? Bool == false
        }
        try await Task.sleep(for: .seconds(2))
        #expect(d.isRunning, "leaseholdd died during the outage; stderr:\n\(stderr)")

        // Redis back: ready and leading again.
        try await redis.restart()
        try await eventually("/readyz to come back", within: .seconds(20)) { await get(port, "/readyz")?.status == 200 }
        try await eventually("leading again after Redis came back", within: .seconds(20)) {
            guard let body = await get(port, "/metrics")?.body, let samples = try? obsParsePrometheus(body) else {
                return false
            }
            return samples.value("leasehold_leader", ["job": job]) == 1
        }
        let finalStatus = await get(port, "/status")?.body ?? ""
        let finalMetrics = await get(port, "/metrics")?.body ?? ""

        let exit = await d.stop()
        #expect(exit == 0, "leaseholdd exit status \(String(describing: exit)); stderr:\n\(stderr)")

        // Logs: every line one JSON object; transitions carry job, member, token, reason.
        let lines = stderr.split(separator: "\n").map(String.init)
        var objects: [[String: Any]] = []
        for line in lines {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                Issue.record("stderr line is not JSON: \(line)")
                continue
            }
            objects.append(object)
        }
        let transitions = objects.filter {
            ["acquired leadership", "lost leadership", "released leadership"].contains($0["message"] as? String ?? "")
        }
        #expect(
            transitions.count >= 4,
            "expected acquired, lost, acquired, released; got \(transitions.map { $0["message"] ?? "?" })")
        for line in transitions {
            for key in ["job", "member", "token", "reason"] {
                #expect(line[key] != nil, "transition without \(key): \(line)")
            }
        }
        #expect(
            objects.filter { ($0["message"] as? String)?.hasPrefix("redis unreachable") == true }.count == 1,
            "Redis-down should be logged once per state change")
        let starting = objects.first { $0["message"] as? String == "leaseholdd starting" }
        #expect(
            (starting?["redis"] as? String)?.contains(":***@") == true, "startup line: \(String(describing: starting))")
        // The password appears nowhere: not in logs, not in /status, not in /metrics.
        #expect(!stderr.contains("secret"), "stderr leaks the Redis password")
        #expect(!finalStatus.contains("secret") && !status.body.contains("secret"))
        #expect(!finalMetrics.contains("secret"))
    }
}
