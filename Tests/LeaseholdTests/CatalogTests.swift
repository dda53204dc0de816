import Foundation
import RedisClient
import Testing

@testable import Leasehold

let sampleCatalog = """
    version: 1
    redis:
      url: redis://127.0.0.1:6379/0
      namespace: leasehold
    defaults:
      lease: 10s
      renew_every: 3s
      drift: 1%
      placement: spread
      on_lost_leadership: cancel
    jobs:
      - name: nightly-report
        handler: shell
        schedule: { cron: "0 3 * * *", timezone: Europe/Berlin }
        timeout: 30m
        config: { command: ["/usr/local/bin/report", "--since", "24h"] }
      - name: heartbeat
        handler: log
        schedule: { every: 5s }
      - name: queue-consumer
        handler: shell
        schedule: continuous
        lease: 5s
        renew_every: 1s
        config: { command: ["./consume.sh"], kill_grace: 2s }
    """

@Test func sampleCatalogLoads() throws {
    let c = try loadCatalog(sampleCatalog)
    #expect(c.version == 1)
    #expect(c.redisURL == "redis://127.0.0.1:6379/0")
    #expect(c.namespace == "leasehold")
    #expect(c.path == "jobs.yaml")
    #expect(c.jobs.map(\.name) == ["nightly-report", "heartbeat", "queue-consumer"])

    let report = c.jobs[0]
    #expect(report.handler == "shell")
    #expect(
        report.schedule
            == .cron(try CronSchedule(expression: "0 3 * * *", timeZone: TimeZone(identifier: "Europe/Berlin")!)))
    #expect(report.timeout == .seconds(1800))
    #expect(report.lease == .seconds(10))
    #expect(report.renewEvery == .seconds(3))
    #expect(report.drift == 0.01)
    #expect(report.placement == .spread)
    #expect(report.onLostLeadership == .cancel)
    #expect(report.standbyDelay == nil)
    #expect(report.location == SourceLocation(file: "jobs.yaml", line: 12, column: 5))
    #expect(
        report.config?.value(for: "command")?.asSequence?.compactMap(\.asString) == [
            "/usr/local/bin/report", "--since", "24h",
        ])

    #expect(c.jobs[1].schedule == .every(.seconds(5)))
    #expect(c.jobs[1].timeout == nil)
    let consumer = c.jobs[2]
    #expect(consumer.schedule == .continuous)
    #expect(consumer.lease == .seconds(5))
    #expect(consumer.renewEvery == .seconds(1))
    #expect(consumer.config?.value(for: "kill_grace")?.asString == "2s")
}

@Test func defaultsAreInheritedAndOverridden() throws {
    let c = try loadCatalog(
        """
        version: 1
        defaults:
          lease: 30s
          drift: 0.5%
          placement: any
          on_lost_leadership: exit
          standby_delay: 2s
          timeout: 1m
        jobs:
          - {name: a, handler: log, schedule: continuous}
          - {name: b, handler: log, schedule: continuous, lease: 6s, placement: spread, timeout: 250ms}
        """)
    let a = c.jobs[0]
    let b = c.jobs[1]
    #expect(a.lease == .seconds(30))
    #expect(a.renewEvery == .seconds(10))  // lease / 3
    #expect(a.drift == 0.005)
    #expect(a.placement == .any)
    #expect(a.onLostLeadership == .exit)
    #expect(a.standbyDelay == .seconds(2))
    #expect(a.timeout == .seconds(60))
    #expect(b.lease == .seconds(6))
    #expect(b.renewEvery == .seconds(2))  // lease / 3 of the job's own lease
    #expect(b.placement == .spread)
    #expect(b.timeout == .milliseconds(250))
    #expect(b.onLostLeadership == .exit)
}

@Test func builtInDefaults() throws {
    let c = try loadCatalog("version: 1\njobs:\n  - {name: a, handler: log, schedule: continuous}\n")
    let a = c.jobs[0]
    #expect(c.namespace == "leasehold")
    #expect(c.redisURL == nil)
    #expect(a.lease == .seconds(10))
    #expect(a.renewEvery == .seconds(10) / 3)
    #expect(a.drift == 0.01)
    #expect(a.placement == .spread)
    #expect(a.onLostLeadership == .cancel)
    #expect(a.timeout == nil)
    #expect(a.config == nil)
}

@Test func aliasesAreResolved() throws {
    let c = try loadCatalog(
        """
        version: 1
        jobs:
          - name: a
            handler: log
            schedule: &every {every: 7s}
          - name: b
            handler: log
            schedule: *every
        """)
    #expect(c.jobs[1].schedule == .every(.seconds(7)))
}

@Test func aliasBombIsRejected() {
    var yaml = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
    for i in 1...6 {
        yaml += "a\(i): &a\(i) [" + Array(repeating: "*a\(i - 1)", count: 10).joined(separator: ", ") + "]\n"
    }
    let errors = catalogErrors(yaml)
    #expect(errors.count == 1)
    #expect(errors.first?.contains("document too large") == true)
}

@Test func missingFileIsOneLineNamingThePath() {
    #expect(throws: CatalogError.self) {
        _ = try CatalogLoader.load(path: "/nonexistent/jobs.yaml", checkHandler: testHandlers)
    }
    do {
        _ = try CatalogLoader.load(path: "/nonexistent/jobs.yaml", checkHandler: testHandlers)
    } catch {
        #expect(error.description == "/nonexistent/jobs.yaml: cannot read catalog file: No such file or directory")
    }
}

@Test func loadReadsAFileAndUsesThePathAsGiven() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("leasehold-catalog-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let file = dir.appendingPathComponent("jobs.yaml").path
    try sampleCatalog.write(toFile: file, atomically: true, encoding: .utf8)
    let c = try CatalogLoader.load(path: file, checkHandler: testHandlers)
    #expect(c.jobs.count == 3)
    #expect(c.jobs[0].location.file == file)

    try "version: 1\njobs: [\n".write(toFile: file, atomically: true, encoding: .utf8)
    #expect(throws: CatalogError.self) { _ = try CatalogLoader.load(path: file, checkHandler: testHandlers) }
    #expect(throws: CatalogError.self) { _ = try CatalogLoader.load(path: dir.path, checkHandler: testHandlers) }
}

@Test func invalidUTF8IsASyntaxError() {
    let bytes: [UInt8] = Array("version: 1\njobs: ".utf8) + [0xff, 0xfe] + Array("\n".utf8)
    let r = YAMLReader.read(bytes: bytes, file: "jobs.yaml")
    #expect(r.fatal)
    #expect(r.errors.first?.message.hasPrefix("invalid YAML: invalid") == true)
}

@Test func configNodeHelpers() throws {
    let root = try #require(try YAMLReader.parse(text: "a: [1, \"two\"]\nb: {c: ~}\n", file: "x.yaml"))
    #expect(root.typeName == "mapping")
    #expect(root.value(for: "a")?.typeName == "list")
    #expect(root.value(for: "a")?.asSequence?[0].asInt == 1)
    guard case .scalar(let text, let loc, let quoted)? = root.value(for: "a")?.asSequence?[1] else {
        Issue.record("expected a scalar")
        return
    }
    #expect(text == "two" && quoted && loc.description == "x.yaml:1:8")
    #expect(root.value(for: "b")?.value(for: "c")?.isNull == true)
    #expect(root.keyLocation(for: "b") == SourceLocation(file: "x.yaml", line: 2, column: 1))
    #expect(root.value(for: "zzz") == nil)
}

@Test func catalogErrorDescriptionIsOneLinePerProblem() {
    let e = CatalogError(errors: [
        ConfigError(location: SourceLocation(file: "jobs.yaml", line: 12, column: 5), message: "first"),
        ConfigError(location: SourceLocation(file: "jobs.yaml", line: 13, column: 1), message: "second"),
    ])
    #expect(e.description == "jobs.yaml:12:5: first\njobs.yaml:13:1: second")
}

/// The issue's sample verbatim: queue-consumer sets lease 5s and inherits renew_every 3s from
/// defaults, which cannot fit; the job gets lease / 3 instead of an error.
@Test func verbatimSampleCapsInheritedRenewInterval() throws {
    let verbatim = sampleCatalog.replacingOccurrences(of: "    renew_every: 1s\n", with: "")
    #expect(verbatim != sampleCatalog)
    let catalog = try CatalogLoader.parse(text: verbatim, path: "jobs.yaml", checkHandler: { _, _ in .valid })
    let consumer = try #require(catalog.jobs.first { $0.name == "queue-consumer" })
    #expect(consumer.renewEvery == .seconds(5) / 3)
    #expect(catalog.jobs.first { $0.name == "heartbeat" }?.renewEvery == .seconds(3))
}

@Test func clusterURLsLoad() throws {
    for url in ["redis-cluster://10.0.0.1:6379,10.0.0.2:6379/0", "rediss-cluster://10.0.0.1:6379"] {
        let c = try loadCatalog(
            """
            version: 1
            redis: { url: "\(url)", namespace: payments }
            jobs:
              - {name: a, handler: log, schedule: continuous}
            """)
        #expect(c.redisURL == url)
        #expect(try RedisEndpoint(url: c.redisURL!).cluster?.nodes.count ?? 0 >= 1)
    }
}

@Test func sentinelURLSentinelPasswordAndMinReplicasLoad() throws {
    let c = try loadCatalog(
        """
        version: 1
        redis:
          url: "redis-sentinel://10.0.0.1:26379,10.0.0.2:26379/0#leases"
          sentinel_password: s3cret
          min_replicas: 1
        jobs:
          - {name: a, handler: log, schedule: continuous}
        """)
    #expect(c.redisURL == "redis-sentinel://10.0.0.1:26379,10.0.0.2:26379/0#leases")
    #expect(c.redisSentinelPassword == "s3cret")
    #expect(c.redisMinReplicas == 1)
    #expect(
        try loadCatalog("version: 1\njobs:\n  - {name: a, handler: log, schedule: continuous}\n").redisMinReplicas == 0)

    var endpoint = try RedisEndpoint(url: c.redisURL!)
    #expect(RedisSentinelSetting.apply(to: &endpoint, environment: [:], catalog: c) == nil)
    #expect(endpoint.sentinel?.password == "s3cret")
    #expect(
        RedisSentinelSetting.apply(
            to: &endpoint, environment: [RedisSentinelSetting.environmentVariable: "fromenv"], catalog: c) == nil)
    #expect(endpoint.sentinel?.password == "fromenv")
    var plain = try RedisEndpoint(url: "redis://h")
    let warning = RedisSentinelSetting.apply(to: &plain, environment: [:], catalog: c)
    #expect(warning?.contains("redis.sentinel_password is set but the Redis URL is not redis-sentinel") == true)
    #expect(warning?.contains("s3cret") == false)
}
