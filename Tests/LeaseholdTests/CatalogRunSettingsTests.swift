import Testing

@testable import Leasehold

/// `starting_deadline`, `jitter` and `retry`: inheritance, defaults and every error with its location.
@Suite struct CatalogRunSettingsTests {
    @Test func settingsAreReadAndInheritedFromDefaults() throws {
        let catalog = try loadCatalog(
            """
            version: 1
            defaults: { starting_deadline: 2m, jitter: 10s, retry: { attempts: 3 } }
            jobs:
              - { name: a, handler: log, schedule: { every: 1m } }
              - name: b
                handler: log
                schedule: { cron: "*/5 * * * *" }
                jitter: 0s
                retry: { attempts: 5, backoff: 2s, max_backoff: 1m }
              - { name: c, handler: log, schedule: continuous }
            """)
        let a = catalog.jobs[0]
        #expect(a.startingDeadline == .seconds(120))
        #expect(a.jitter == .seconds(10))
        #expect(a.retry == RetryPolicy(attempts: 3, backoff: .seconds(1), maxBackoff: .seconds(300)))
        let b = catalog.jobs[1]
        #expect(b.jitter == nil)
        #expect(b.retry == RetryPolicy(attempts: 5, backoff: .seconds(2), maxBackoff: .seconds(60)))
        // Inherited scheduling settings do not apply to a continuous job.
        let c = catalog.jobs[2]
        #expect(c.startingDeadline == nil && c.jitter == nil && c.retry == nil)
    }

    @Test func theSettingsChangeTheJobFingerprintOnlyWhenSet() throws {
        let plain = try loadCatalog("version: 1\njobs: [{name: a, handler: log, schedule: {every: 1m}}]").jobs[0]
        #expect(plain.fingerprint == JobSpec(name: "a", handler: "log", schedule: .every(.seconds(60))).fingerprint)
        var spec = plain
        var seen: Set<String> = [plain.fingerprint]
        spec.startingDeadline = .seconds(5)
        seen.insert(spec.fingerprint)
        spec.jitter = .seconds(1)
        seen.insert(spec.fingerprint)
        spec.retry = RetryPolicy(attempts: 2)
        seen.insert(spec.fingerprint)
        spec.retry = RetryPolicy(attempts: 3)
        seen.insert(spec.fingerprint)
        spec.retry = RetryPolicy(attempts: 3, backoff: .seconds(2))
        seen.insert(spec.fingerprint)
        #expect(seen.count == 6)
    }

    @Test func aLongBackoffRaisesTheDefaultCap() throws {
        let job = try loadCatalog(
            "version: 1\njobs: [{name: a, handler: log, schedule: {every: 1h}, retry: {attempts: 2, backoff: 10m}}]"
        ).jobs[0]
        #expect(job.retry == RetryPolicy(attempts: 2, backoff: .seconds(600), maxBackoff: .seconds(600)))
    }

    @Test func oneAttemptMeansNoRetry() throws {
        let job = try loadCatalog(
            "version: 1\njobs: [{name: a, handler: log, schedule: {every: 1h}, retry: {attempts: 1}}]"
        ).jobs[0]
        #expect(job.retry == nil)
    }

    static let cases: [(String, String, [String])] = [
        (
            "jitter not shorter than every",
            """
            version: 1
            jobs:
              - { name: a, handler: log, schedule: { every: 30s }, jitter: 30s }
            """,
            [
                "jobs.yaml:3:64: jitter 30s must be shorter than the schedule's period 30s, or slots would overtake each other"
            ]
        ),
        (
            "jitter not shorter than the cron period, inherited",
            """
            version: 1
            defaults: { jitter: 10m }
            jobs:
              - { name: a, handler: log, schedule: { cron: "*/5 * * * *" } }
              - { name: b, handler: log, schedule: { cron: "0 * * * *" } }
            """,
            [
                "jobs.yaml:2:21: jitter 10m must be shorter than the schedule's period 5m of job 'a', or slots would overtake each other"
            ]
        ),
        (
            "scheduling settings on a continuous job",
            """
            version: 1
            jobs:
              - name: a
                handler: log
                schedule: continuous
                jitter: 1s
                starting_deadline: 1m
                retry: { attempts: 2 }
            """,
            [
                "jobs.yaml:6:13: 'jitter' does not apply to continuous jobs (they have no slots)",
                "jobs.yaml:7:24: 'starting_deadline' does not apply to continuous jobs (they have no slots)",
                "jobs.yaml:8:12: 'retry' does not apply to continuous jobs (a continuous handler that returns is restarted anyway)",
            ]
        ),
        (
            "bad values",
            """
            version: 1
            jobs:
              - name: a
                handler: log
                schedule: { every: 1h }
                starting_deadline: 0s
                jitter: soon
                retry: { attempts: 0, backof: 1s, max_backoff: 1 }
            """,
            [
                "jobs.yaml:6:24: starting_deadline must be greater than 0 (leave it out to run a missed slot late)",
                "jobs.yaml:7:13: invalid duration 'soon' for 'jitter': expected a number with a unit (ms, s, m, h), e.g. 10s or 1m30s",
                "jobs.yaml:8:24: invalid attempts '0': expected a whole number from 1 to 100 (tries including the first)",
                "jobs.yaml:8:27: unknown key 'backof' in 'retry': did you mean 'backoff'?",
                "jobs.yaml:8:52: invalid duration '1' for 'max_backoff': expected a number with a unit (ms, s, m, h), e.g. 10s or 1m30s",
            ]
        ),
        (
            "retry shape",
            """
            version: 1
            jobs:
              - { name: a, handler: log, schedule: { every: 1h }, retry: 3 }
              - { name: b, handler: log, schedule: { every: 1h }, retry: { backoff: 0s, max_backoff: 1s } }
              - { name: c, handler: log, schedule: { every: 1h }, retry: { attempts: 2, backoff: 5s, max_backoff: 1s } }
            """,
            [
                "jobs.yaml:3:62: 'retry' must be a mapping such as {attempts: 3, backoff: 10s}, got a string",
                "jobs.yaml:4:62: 'retry' is missing required key 'attempts' (tries including the first)",
                "jobs.yaml:4:73: backoff must be greater than 0",
                "jobs.yaml:5:103: max_backoff 1s must not be shorter than backoff 5s",
            ]
        ),
    ]

    @Test(arguments: 0..<cases.count) func badSettingsReportTheirLocation(_ index: Int) {
        let (name, yaml, expected) = Self.cases[index]
        #expect(catalogErrors(yaml) == expected, "\(name)")
    }
}
