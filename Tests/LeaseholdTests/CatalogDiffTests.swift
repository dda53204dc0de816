import Foundation
import Testing

@testable import Leasehold

private let baseCatalog = """
    version: 1
    redis: { url: redis://127.0.0.1:6379/0, namespace: leasehold }
    defaults: { lease: 10s }
    jobs:
      - name: report
        handler: shell
        schedule: { cron: "0 3 * * *", timezone: Europe/Berlin }
        config: { command: ["/usr/local/bin/report", "--since", "24h"] }
      - name: heartbeat
        handler: log
        schedule: { every: 5s }
      - name: consumer
        handler: shell
        schedule: continuous
        config: { command: ["./consume.sh"], kill_grace: 2s }
    """

/// The same jobs, reformatted: block style, other indentation and quote style (still quoted),
/// comments, blank lines.
private let reformattedCatalog = """
    # the fleet's jobs
    version: 1
    redis:
        url: redis://127.0.0.1:6379/0
        namespace: leasehold

    defaults:
        lease: 10s   # the default lease
    jobs:
        - name: report
          handler: shell
          schedule:
              cron: "0 3 * * *"
              timezone: Europe/Berlin
          config:
              command:
                  - "/usr/local/bin/report"
                  - '--since'
                  - "24h"

        - name: heartbeat   # every five seconds
          handler: log
          schedule: { every: 5s }
        - { name: consumer, handler: shell, schedule: continuous, config: { command: ["./consume.sh"], kill_grace: 2s } }
    """

@Suite struct CatalogDiffTests {
    @Test func addedRemovedChangedAndUnchangedJobsAreNamedInCatalogOrder() throws {
        let old = try loadCatalog(baseCatalog)
        let new = try loadCatalog(
            """
            version: 1
            redis: { url: redis://127.0.0.1:6379/0, namespace: leasehold }
            jobs:
              - { name: zeta, handler: log, schedule: { every: 1m } }
              - { name: heartbeat, handler: log, schedule: { every: 10s } }
              - { name: alpha, handler: log, schedule: continuous }
              - name: consumer
                handler: shell
                schedule: continuous
                config: { command: ["./consume.sh"], kill_grace: 2s }
            """)
        let diff = CatalogDiff(old: old, new: new)
        #expect(diff.added == ["zeta", "alpha"])
        #expect(diff.removed == ["report"])
        #expect(diff.changed == ["heartbeat"])
        #expect(diff.unchanged == ["consumer"])
        #expect(diff.unreloadable.isEmpty)
        #expect(!diff.isEmpty)
    }

    @Test func aFormattingAndCommentOnlyEditChangesNothing() throws {
        let old = try loadCatalog(baseCatalog)
        let new = try loadCatalog(reformattedCatalog)
        // The locations did move: the fingerprint must not see them.
        #expect(old.jobs[0].location != new.jobs[0].location)
        let diff = CatalogDiff(old: old, new: new)
        #expect(diff.unchanged == ["report", "heartbeat", "consumer"])
        #expect(diff.added.isEmpty && diff.removed.isEmpty && diff.changed.isEmpty)
        #expect(diff.isEmpty)
        #expect(old.digest == new.digest)
        #expect(zip(old.jobs, new.jobs).allSatisfy { $0.fingerprint == $1.fingerprint })
    }

    @Test func aConfigEditChangesTheJob() throws {
        let old = try loadCatalog(baseCatalog)
        let edits = [
            baseCatalog.replacingOccurrences(of: #""24h""#, with: #""48h""#),
            baseCatalog.replacingOccurrences(of: "kill_grace: 2s", with: "kill_grace: 3s"),
            // Quoting changes the node (a handler may read "2s" and 2s differently).
            baseCatalog.replacingOccurrences(of: "kill_grace: 2s", with: #"kill_grace: "2s""#),
            // Order is part of a mapping's canonical form (document order).
            baseCatalog.replacingOccurrences(
                of: #"{ command: ["./consume.sh"], kill_grace: 2s }"#,
                with: #"{ kill_grace: 2s, command: ["./consume.sh"] }"#),
        ]
        for (index, edit) in edits.enumerated() {
            #expect(edit != baseCatalog, "edit \(index) must change the text")
            let diff = CatalogDiff(old: old, new: try loadCatalog(edit))
            #expect(diff.changed.count == 1, "edit \(index): \(diff)")
            #expect(diff.unchanged.count == 2, "edit \(index): \(diff)")
            #expect(old.digest != (try loadCatalog(edit)).digest, "edit \(index)")
        }
    }

    @Test func everyRunSettingIsPartOfTheFingerprint() {
        let base = JobSpec(name: "job", handler: "log", schedule: .every(.seconds(5)))
        var variants: [JobSpec] = []
        func variant(_ change: (inout JobSpec) -> Void) {
            var spec = base
            change(&spec)
            variants.append(spec)
        }
        variant { $0.name = "other" }
        variant { $0.handler = "shell" }
        variant { $0.schedule = .every(.seconds(6)) }
        variant { $0.schedule = .continuous }
        variant { $0.lease = .seconds(11) }
        variant { $0.renewEvery = .seconds(2) }
        variant { $0.drift = 0.02 }
        variant { $0.placement = .any }
        variant { $0.standbyDelay = .seconds(1) }
        variant { $0.onLostLeadership = .exit }
        variant { $0.timeout = .seconds(30) }
        variant { $0.config = .scalar("x", SourceLocation(file: "a", line: 1, column: 1), quoted: false) }
        let fingerprints = [base.fingerprint] + variants.map(\.fingerprint)
        #expect(Set(fingerprints).count == fingerprints.count)
        #expect(fingerprints.allSatisfy { $0.count == 16 && $0.allSatisfy { "0123456789abcdef".contains($0) } })

        var moved = base
        moved.location = SourceLocation(file: "elsewhere.yaml", line: 40, column: 3)
        #expect(moved.fingerprint == base.fingerprint)
    }

    @Test func theDigestIgnoresJobOrderAndRedisSettings() throws {
        let catalog = try loadCatalog(baseCatalog)
        var shuffled = catalog
        shuffled.jobs.reverse()
        shuffled.redisURL = "redis://other:6380/1"
        shuffled.namespace = "elsewhere"
        shuffled.redisPasswordFile = "/run/secrets/redis"
        #expect(shuffled.digest == catalog.digest)
        #expect(catalog.digest.count == 16)

        var fewer = catalog
        fewer.jobs.removeLast()
        #expect(fewer.digest != catalog.digest)
    }

    @Test func redisSettingsAreReportedAsUnreloadableWithoutTheirValues() throws {
        let old = try loadCatalog(baseCatalog)
        var new = old
        new.redisURL = "redis://:hunter2@other:6379/0"
        new.namespace = "elsewhere"
        new.redisPasswordFile = "/run/secrets/redis"
        let diff = CatalogDiff(old: old, new: new)
        #expect(
            diff.unreloadable == [
                "redis.url changed in jobs.yaml: not reloadable, keeping the old value (restart the member to apply it)",
                "redis.namespace changed in jobs.yaml: not reloadable, keeping the old value (restart the member to apply it)",
                "redis.password_file changed in jobs.yaml: not reloadable, keeping the old value (restart the member to apply it)",
            ])
        #expect(!diff.unreloadable.joined().contains("hunter2"))
        #expect(diff.unchanged.count == 3)
        #expect(!diff.isEmpty)
    }

    @Test func sentinelPasswordAndMinReplicasAreUnreloadableWithoutTheirValues() throws {
        let old = try loadCatalog(baseCatalog)
        var new = old
        new.redisSentinelPassword = "hunter2"
        new.redisMinReplicas = 1
        let diff = CatalogDiff(old: old, new: new)
        #expect(
            diff.unreloadable == [
                "redis.sentinel_password changed in jobs.yaml: not reloadable, keeping the old value (restart the member to apply it)",
                "redis.min_replicas changed in jobs.yaml: not reloadable, keeping the old value (restart the member to apply it)",
            ])
        #expect(!diff.unreloadable.joined().contains("hunter2"))
    }

    @Test func scheduleFingerprintsRoundTrip() throws {
        let schedules: [JobSchedule] = [
            .every(.seconds(5)), .every(.milliseconds(250)), .every(.seconds(3600)),
            .cron(try CronSchedule(expression: "0 3 * * *", timeZone: TimeZone(identifier: "Europe/Berlin")!)),
            .cron(try CronSchedule(expression: "*/5 * * * 1-5")),
            .cron(try CronSchedule(expression: "@daily", timeZone: TimeZone(identifier: "America/New_York")!)),
        ]
        for schedule in schedules {
            let fingerprint = try #require(schedule.fingerprint)
            #expect(JobSchedule(fingerprint: fingerprint) == schedule, "\(fingerprint)")
        }
        #expect(JobSchedule.every(.seconds(5)).fingerprint == "every:5000")
        #expect(
            JobSchedule.cron(
                try CronSchedule(expression: "0 3 * * *", timeZone: TimeZone(identifier: "Europe/Berlin")!)
            )
            .fingerprint == "cron:0 3 * * *;tz=Europe/Berlin")
        #expect(JobSchedule.continuous.fingerprint == nil)
    }

    @Test func unparseableScheduleFingerprintsAreNil() {
        for text in [
            "", "continuous", "every:", "every:0", "every:-5", "every:5s", "every:1e3", "hourly",
            "cron:0 3 * * *", "cron:0 3 * * *;tz=Mars/Olympus", "cron:61 * * * *;tz=UTC", "cron:;tz=UTC",
        ] {
            #expect(JobSchedule(fingerprint: text) == nil, "\(text)")
        }
    }
}
