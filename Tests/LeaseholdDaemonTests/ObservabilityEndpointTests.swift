import Foundation
import LeaseholdTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

// The `leaseholdd` executable scraped over HTTP, as Prometheus and a load balancer would:
// /metrics in the text format, /healthz, /readyz (503 while Redis is down), /status JSON,
// and its JSON log lines on stderr. The Redis URL carries a password that must never show.

/// The package root (…/Tests/LeaseholdDaemonTests/ThisFile.swift → …).
private let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// The built `leaseholdd` (swift build --build-tests builds it next to the test bundle).
private func leaseholddPath() throws -> String {
    var candidates = [URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("leaseholdd").path]
    candidates.append(packageRoot.appendingPathComponent(".build/debug/leaseholdd").path)
    if let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) { return found }
    throw TestSupportError("leaseholdd not built (looked at \(candidates)); run swift build --build-tests")
}

private func get(_ port: Int, _ path: String) async -> (status: Int, body: String)? {
    // DaemonTestSupport's blocking GET, off the cooperative pool.
    await Task.detached { httpGet(port: port, path: path).map { ($0.status, $0.body) } }.value
}

/// A running `leaseholdd` with stderr captured to a file.
private final class HTTPScrapedDaemon: Sendable {
    let process: Process
    let stderrPath: String
    let httpPort: Int

    init(arguments: [String], directory: String, httpPort: Int) throws {
        stderrPath = directory + "/leaseholdd-\(httpPort).stderr"
        _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try leaseholddPath())
        process.arguments = arguments + ["--http", "127.0.0.1:\(httpPort)"]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: stderrPath))
        try process.runWithDefaultSignalMask()
        self.process = process
        self.httpPort = httpPort
    }

    var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// SIGTERM and wait (bounded); SIGKILL if it hangs. Returns the exit status, nil if killed.
    func terminate(within timeout: Duration = .seconds(20)) async -> Int32? {
        guard process.isRunning else { return process.terminationStatus }
        process.terminate()
        let exited = await obsEventually(within: timeout) { !process.isRunning }
        if !exited {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return nil
        }
        return process.terminationStatus
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}

@Suite("Observability: leaseholdd over HTTP", .serialized, .timeLimit(.minutes(3)))
struct ObservabilityEndpointTests {
    @Test("leaseholdd: /metrics parses, /healthz 200, /readyz 200 then 503 with Redis stopped, /status JSON, JSON logs, no password anywhere")
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
        var daemon: HTTPScrapedDaemon?
        for _ in 0..<5 {
            let candidate = try HTTPScrapedDaemon(
                arguments: ["--config", catalogPath, "--redis", "redis://:secret@127.0.0.1:\(redis.port)/0", "--name", "obs-d1",
                            "--log-format", "json", "--log-level", "info"],
                directory: redis.directory, httpPort: FreePort.next())
            let listening = await obsEventually(within: .seconds(20)) {
                await get(candidate.httpPort, "/healthz")?.status == 200 || !candidate.process.isRunning
            }
            if listening && candidate.process.isRunning {
                daemon = candidate
                break
            }
            _ = await candidate.terminate()
        }
        let d = try #require(daemon, "leaseholdd never served /healthz")
        let port = d.httpPort

        // Leader, as /metrics says.
        let led = await obsEventually(within: .seconds(20)) {
            guard let body = await get(port, "/metrics")?.body, let samples = try? obsParsePrometheus(body) else { return false }
            return samples.value("leasehold_leader", ["job": job]) == 1
        }
        try #require(led, "leaseholdd never led; stderr:\n\(d.stderr)")
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
        let object = try #require(try JSONSerialization.jsonObject(with: Data(status.body.utf8)) as? [String: Any], "status: \(status.body)")
        #expect(object["member"] as? String == "obs-d1")
        let leading = try #require(object["leading"] as? [[String: Any]])
        #expect(leading.count == 1)
        #expect(leading.first?["job"] as? String == job)
        #expect(((leading.first?["token"] as? NSNumber)?.uint64Value ?? 0) > 0)
        let validFor = (leading.first?["valid_for_ms"] as? NSNumber)?.intValue ?? -1
        #expect(validFor > 0 && validFor <= 2000, "valid_for_ms \(validFor)")

        // Redis stopped: /readyz 503, /healthz still 200, the process stays up.
        await redis.kill()
        let unready = await obsEventually(within: .seconds(15)) { await get(port, "/readyz")?.status == 503 }
        #expect(unready, "/readyz never turned 503 with Redis stopped")
        #expect(await get(port, "/healthz")?.status == 200)
        let steppedDown = await obsEventually(within: .seconds(10)) {
            guard let body = await get(port, "/status")?.body,
                  let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any] else { return false }
            return (object["leading"] as? [Any])?.isEmpty == true && object["redis_up"] as? Bool == false
        }
        #expect(steppedDown, "/status still shows leadership with Redis down")
        try await Task.sleep(for: .seconds(2))
        #expect(d.process.isRunning, "leaseholdd died during the outage; stderr:\n\(d.stderr)")

        // Redis back: ready and leading again.
        try await redis.restart()
        let ready = await obsEventually(within: .seconds(20)) { await get(port, "/readyz")?.status == 200 }
        #expect(ready, "/readyz never came back")
        let ledAgain = await obsEventually(within: .seconds(20)) {
            guard let body = await get(port, "/metrics")?.body, let samples = try? obsParsePrometheus(body) else { return false }
            return samples.value("leasehold_leader", ["job": job]) == 1
        }
        #expect(ledAgain, "not leading again after Redis came back")
        let finalStatus = await get(port, "/status")?.body ?? ""
        let finalMetrics = await get(port, "/metrics")?.body ?? ""

        let exit = await d.terminate()
        #expect(exit == 0, "leaseholdd exit status \(String(describing: exit)); stderr:\n\(d.stderr)")

        // Logs: every line one JSON object; transitions carry job, member, token, reason.
        let lines = d.stderr.split(separator: "\n").map(String.init)
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
        #expect(transitions.count >= 4, "expected acquired, lost, acquired, released; got \(transitions.map { $0["message"] ?? "?" })")
        for line in transitions {
            for key in ["job", "member", "token", "reason"] { #expect(line[key] != nil, "transition without \(key): \(line)") }
        }
        #expect(objects.filter { ($0["message"] as? String)?.hasPrefix("redis unreachable") == true }.count == 1,
                "Redis-down should be logged once per state change")
        let starting = objects.first { $0["message"] as? String == "leaseholdd starting" }
        #expect((starting?["redis"] as? String)?.contains(":***@") == true, "startup line: \(String(describing: starting))")
        // The password appears nowhere: not in logs, not in /status, not in /metrics.
        #expect(!d.stderr.contains("secret"), "stderr leaks the Redis password")
        #expect(!finalStatus.contains("secret") && !status.body.contains("secret"))
        #expect(!finalMetrics.contains("secret"))
    }
}
