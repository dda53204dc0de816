import Testing

@testable import Leasehold

/// A bad catalog and the exact lines the loader must print for it.
struct BadCatalog: CustomTestStringConvertible, Sendable {
    let name: String
    let yaml: String
    let expected: [String]
    var testDescription: String { name }
}

// A valid prefix most cases build on, so each case shows only what it breaks.
private let head = """
    version: 1
    jobs:

    """

let badCatalogs: [BadCatalog] = [
    BadCatalog(
        name: "yaml syntax: bad indentation",
        yaml: """
            version: 1
            jobs:
              - name: a
                handler: log
               schedule: continuous
            """,
        expected: [
            "jobs.yaml:5:4: invalid YAML: did not find expected '-' indicator (while parsing a block collection at line 3, column 3)"
        ]),
    BadCatalog(
        name: "yaml syntax: unclosed flow mapping",
        yaml: """
            version: 1
            jobs: [ {name: a, handler: log
            """,
        expected: [
            "jobs.yaml:3:1: invalid YAML: did not find expected ',' or '}' (while parsing a flow mapping at line 2, column 9)"
        ]),
    BadCatalog(
        name: "yaml syntax: unterminated quote",
        yaml: """
            version: 1
            jobs:
              - name: "a
                handler: log
            """,
        expected: [
            "jobs.yaml:4:17: invalid YAML: found unexpected end of stream (while scanning a quoted scalar at line 3, column 11)"
        ]),
    BadCatalog(
        name: "empty file", yaml: "",
        expected: [
            "jobs.yaml:1:1: empty catalog: expected a mapping with 'version' and 'jobs'"
        ]),
    BadCatalog(
        name: "top level is a list", yaml: "- a\n- b\n",
        expected: [
            "jobs.yaml:1:1: the catalog must be a mapping with 'version' and 'jobs', got a list"
        ]),
    BadCatalog(
        name: "version missing",
        yaml: """
            jobs:
              - name: a
                handler: log
                schedule: continuous
            """,
        expected: [
            "jobs.yaml:1:1: missing required key 'version': expected 'version: 1'"
        ]),
    BadCatalog(
        name: "version 2",
        yaml: """
            version: 2
            jobs:
              - {name: a, handler: log, schedule: continuous}
            """,
        expected: [
            "jobs.yaml:1:10: unsupported version '2': expected 1"
        ]),
    BadCatalog(
        name: "jobs is a mapping",
        yaml: """
            version: 1
            jobs:
              name: a
            """,
        expected: [
            "jobs.yaml:3:3: 'jobs' must be a list of jobs, got a mapping"
        ]),
    BadCatalog(
        name: "no jobs", yaml: "version: 1\njobs: []\n",
        expected: [
            "jobs.yaml:2:7: no jobs defined: 'jobs' must list at least one job"
        ]),
    BadCatalog(
        name: "lease is a list",
        yaml: head + """
              - name: a
                handler: log
                schedule: continuous
                lease: [10s]
            """,
        expected: [
            "jobs.yaml:6:12: 'lease' must be a duration such as 10s, got a list"
        ]),
    BadCatalog(
        name: "unknown key with hint",
        yaml: head + """
              - name: a
                handler: log
                schedule: continuous
                renew_evry: 3s
            """,
        expected: [
            "jobs.yaml:6:5: unknown key 'renew_evry' in job 'a': did you mean 'renew_every'?"
        ]),
    BadCatalog(
        name: "unknown top-level key without hint",
        yaml: """
            version: 1
            settings: {}
            jobs:
              - {name: a, handler: log, schedule: continuous}
            """,
        expected: [
            "jobs.yaml:2:1: unknown key 'settings' at top level (expected one of: version, redis, defaults, jobs)"
        ]),
    BadCatalog(
        name: "duplicate job name",
        yaml: head + """
              - name: a
                handler: log
                schedule: continuous
              - name: a
                handler: log
                schedule: {every: 5s}
            """,
        expected: [
            "jobs.yaml:6:11: duplicate job name 'a' (first defined at line 3)"
        ]),
    BadCatalog(
        name: "duplicate key",
        yaml: head + """
              - name: a
                handler: log
                handler: shell
                schedule: continuous
            """,
        expected: [
            "jobs.yaml:5:5: duplicate key 'handler' (first defined at line 4)"
        ]),
    BadCatalog(
        name: "bad duration",
        yaml: head + """
              - name: a
                handler: log
                schedule: continuous
                lease: 10x
            """,
        expected: [
            "jobs.yaml:6:12: invalid duration '10x' for 'lease': expected a number with a unit (ms, s, m, h), e.g. 10s or 1m30s"
        ]),
    BadCatalog(
        name: "lease too short",
        yaml: head + """
              - name: a
                handler: log
                schedule: continuous
                lease: 500ms
            """,
        expected: [
            "jobs.yaml:6:12: lease 500ms is too short: expected at least 1s"
        ]),
    BadCatalog(
        name: "renew_every too long",
        yaml: head + """
              - name: a
                handler: log
                schedule: continuous
                lease: 10s
                renew_every: 5s
            """,
        expected: [
            "jobs.yaml:7:18: renew_every 5s must be less than half of lease 10s, so a failed renewal can be retried before the lease expires"
        ]),
    BadCatalog(
        name: "renew_every set on the job vs its lease",
        yaml: """
            version: 1
            jobs:
              - name: a
                handler: log
                schedule: continuous
                lease: 5s
                renew_every: 3s
            """,
        expected: [
            "jobs.yaml:7:18: renew_every 3s must be less than half of lease 5s, so a failed renewal can be retried before the lease expires"
        ]),
    BadCatalog(
        name: "renew_every too long in defaults reported once",
        yaml: """
            version: 1
            defaults:
              lease: 6s
              renew_every: 3s
            jobs:
              - {name: a, handler: log, schedule: continuous}
              - {name: b, handler: log, schedule: continuous}
            """,
        expected: [
            "jobs.yaml:4:16: renew_every 3s must be less than half of lease 6s, so a failed renewal can be retried before the lease expires"
        ]),
    BadCatalog(
        name: "drift out of range",
        yaml: """
            version: 1
            defaults:
              drift: 15%
            jobs:
              - {name: a, handler: log, schedule: continuous}
            """,
        expected: [
            "jobs.yaml:3:10: drift 15% out of range: expected 0% to 10%"
        ]),
    BadCatalog(
        name: "drift without percent",
        yaml: head + """
              - {name: a, handler: log, schedule: continuous, drift: 0.01}
            """,
        expected: [
            "jobs.yaml:3:58: invalid drift '0.01': expected a percentage such as 1% or 0.5%"
        ]),
    BadCatalog(
        name: "bad cron hour",
        yaml: head + """
              - name: a
                handler: log
                schedule: {cron: "0 25 * * *"}
            """,
        expected: [
            "jobs.yaml:5:22: invalid cron expression '0 25 * * *': hour field: value 25 out of range 0-23"
        ]),
    BadCatalog(
        name: "bad cron field count",
        yaml: head + """
              - name: a
                handler: log
                schedule:
                  cron: "0 3 * *"
            """,
        expected: [
            "jobs.yaml:6:13: invalid cron expression '0 3 * *': expected 5 fields (minute hour day-of-month month day-of-week), got 4"
        ]),
    BadCatalog(
        name: "bad cron weekday name",
        yaml: head + """
              - name: a
                handler: log
                schedule: {cron: "0 3 * * funday"}
            """,
        expected: [
            "jobs.yaml:5:22: invalid cron expression '0 3 * * funday': day-of-week field: invalid value 'funday': expected a number 0-7 or a name sun-sat"
        ]),
    BadCatalog(
        name: "unknown timezone with hint",
        yaml: head + """
              - name: a
                handler: log
                schedule: {cron: "0 3 * * *", timezone: Europe/Berln}
            """,
        expected: [
            "jobs.yaml:5:45: unknown time zone 'Europe/Berln': did you mean 'Europe/Berlin'?"
        ]),
    BadCatalog(
        name: "unknown timezone",
        yaml: head + """
              - name: a
                handler: log
                schedule: {cron: "0 3 * * *", timezone: Mars/Olympus_Mons}
            """,
        expected: [
            "jobs.yaml:5:45: unknown time zone 'Mars/Olympus_Mons': expected an IANA name such as Europe/Berlin or UTC"
        ]),
    BadCatalog(
        name: "unknown handler",
        yaml: head + """
              - name: a
                handler: shel
                schedule: continuous
            """,
        expected: [
            "jobs.yaml:4:14: unknown handler 'shel'; did you mean 'shell'? (known: log, shell)"
        ]),
    BadCatalog(
        name: "handler config error from the handler",
        yaml: head + """
              - name: a
                handler: shell
                schedule: continuous
                config: {command: ./run.sh}
            """,
        expected: [
            "jobs.yaml:6:23: 'command' must be a non-empty list of strings, got a string"
        ]),
    BadCatalog(
        name: "bad name",
        yaml: head + """
              - name: Nightly Report
                handler: log
                schedule: continuous
            """,
        expected: [
            "jobs.yaml:3:11: invalid job name 'Nightly Report': expected lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
        ]),
    BadCatalog(
        name: "name too long",
        yaml: head + """
              - name: \(String(repeating: "x", count: 101))
                handler: log
                schedule: continuous
            """,
        expected: [
            "jobs.yaml:3:11: job name too long (101 characters): expected at most 100"
        ]),
    BadCatalog(
        name: "missing handler",
        yaml: head + """
              - name: a
                schedule: continuous
            """,
        expected: [
            "jobs.yaml:3:5: job 'a' is missing required key 'handler'"
        ]),
    BadCatalog(
        name: "missing name and schedule",
        yaml: head + """
              - handler: log
            """,
        expected: [
            "jobs.yaml:3:5: job is missing required key 'name'",
            "jobs.yaml:3:5: job is missing required key 'schedule': expected continuous, {every: 30s} or {cron: \"*/5 * * * *\", timezone: Europe/Berlin}",
        ]),
    BadCatalog(
        name: "schedule word",
        yaml: head + """
              - {name: a, handler: log, schedule: hourly}
            """,
        expected: [
            "jobs.yaml:3:39: invalid schedule 'hourly': expected continuous, {every: 30s} or {cron: \"*/5 * * * *\", timezone: Europe/Berlin}"
        ]),
    BadCatalog(
        name: "every too short",
        yaml: head + """
              - {name: a, handler: log, schedule: {every: 500ms}}
            """,
        expected: [
            "jobs.yaml:3:47: 'every' 500ms is too short: expected at least 1s"
        ]),
    BadCatalog(
        name: "every and cron",
        yaml: head + """
              - {name: a, handler: log, schedule: {every: 5s, cron: "* * * * *"}}
            """,
        expected: [
            "jobs.yaml:3:39: schedule has both 'every' and 'cron': expected exactly one"
        ]),
    BadCatalog(
        name: "bad placement and on_lost_leadership",
        yaml: head + """
              - name: a
                handler: log
                schedule: continuous
                placement: spred
                on_lost_leadership: restart
            """,
        expected: [
            "jobs.yaml:6:16: invalid placement 'spred': expected spread or any",
            "jobs.yaml:7:25: invalid on_lost_leadership 'restart': expected cancel or exit",
        ]),
    BadCatalog(
        name: "merge key and unknown alias",
        yaml: """
            version: 1
            jobs:
              - <<: *base
                name: a
                handler: log
                schedule: continuous
            """,
        expected: [
            "jobs.yaml:3:5: YAML merge keys ('<<') are not supported: put shared settings in 'defaults'",
            "jobs.yaml:3:9: unknown alias '*base': no anchor '&base' defined before it",
        ]),
    BadCatalog(
        name: "bad redis section",
        yaml: """
            version: 1
            redis:
              url: http://localhost:6379
              namespace: "lease hold"
            jobs:
              - {name: a, handler: log, schedule: continuous}
            """,
        expected: [
            "jobs.yaml:3:8: invalid redis url 'http://localhost:6379': expected redis://host:port/db, rediss://… or unix:///path",
            "jobs.yaml:4:14: invalid namespace 'lease hold': expected letters, digits, '_', '.' or '-'",
        ]),
    BadCatalog(
        name: "bad redis scheme with a password, and a bad password_file",
        yaml: """
            version: 1
            redis:
              url: "http://app:hunter2@localhost:6379"
              password_file: ""
            jobs:
              - {name: a, handler: log, schedule: continuous}
            """,
        expected: [
            "jobs.yaml:3:8: invalid redis url 'http://app:***@localhost:6379': expected redis://host:port/db, rediss://… or unix:///path",
            "jobs.yaml:4:18: invalid password_file: expected the path of a file holding the password",
        ]),
    BadCatalog(
        name: "bad min_replicas and sentinel_password, never echoing the password",
        yaml: """
            version: 1
            redis:
              url: "redis-sentinel://127.0.0.1:26379#m"
              min_replicas: -1
              sentinel_password: [hunter2]
            jobs:
              - {name: a, handler: log, schedule: continuous}
            """,
        expected: [
            "jobs.yaml:4:17: invalid min_replicas '-1': expected a whole number from 0 to 100 (replicas that must acknowledge each lease change)",
            "jobs.yaml:5:22: 'sentinel_password' must be the sentinels' password, got a list",
        ]),
    BadCatalog(
        name: "min_replicas that is not a number",
        yaml: """
            version: 1
            redis: { min_replicas: two }
            jobs:
              - {name: a, handler: log, schedule: continuous}
            """,
        expected: [
            "jobs.yaml:2:24: invalid min_replicas 'two': expected a whole number from 0 to 100 (replicas that must acknowledge each lease change)"
        ]),
    BadCatalog(
        name: "a value with a line break and an escape cannot forge a second line",
        yaml: """
            version: 1
            jobs:
              - name: a
                handler: log
                schedule: { cron: "0 3 * * *", timezone: "Nowhere\\njobs.yaml:1:1: ok \\e[32m" }
            """,
        expected: [
            #"jobs.yaml:5:46: unknown time zone 'Nowhere\njobs.yaml:1:1: ok \x1b[32m': expected an IANA name such as Europe/Berlin or UTC"#
        ]),
    BadCatalog(
        name: "many problems at once",
        yaml: """
            version: 1
            defaults:
              lease: 10x
              placment: any
            jobs:
              - name: Bad_Name
                handler: shel
                schedule: {cron: "61 * * * *", timezone: Nowhere/City}
              - name: ok
                handler: log
                schedule: {every: 5s}
                timeout: soon
              - name: ok
                schedule: continuous
            """,
        expected: [
            "jobs.yaml:3:10: invalid duration '10x' for 'lease': expected a number with a unit (ms, s, m, h), e.g. 10s or 1m30s",
            "jobs.yaml:4:3: unknown key 'placment' in 'defaults': did you mean 'placement'?",
            "jobs.yaml:6:11: invalid job name 'Bad_Name': expected lowercase letters, digits, '.', '_' or '-', starting with a letter or digit",
            "jobs.yaml:7:14: unknown handler 'shel'; did you mean 'shell'? (known: log, shell)",
            "jobs.yaml:8:22: invalid cron expression '61 * * * *': minute field: value 61 out of range 0-59",
            "jobs.yaml:8:46: unknown time zone 'Nowhere/City': expected an IANA name such as Europe/Berlin or UTC",
            "jobs.yaml:12:14: invalid duration 'soon' for 'timeout': expected a number with a unit (ms, s, m, h), e.g. 10s or 1m30s",
            "jobs.yaml:13:5: job 'ok' is missing required key 'handler'",
            "jobs.yaml:13:11: duplicate job name 'ok' (first defined at line 9)",
        ]),
    // Hostile input: the caps are one line each, at the node that crosses them.
    BadCatalog(
        name: "hostile: nested more than 200 levels",
        yaml: "version: 1\njobs: " + String(repeating: "[", count: 300),
        // The root mapping is level 1, so the 200th '[' (column 7 + 199) is level 201.
        expected: ["jobs.yaml:2:206: document nested too deeply: more than 200 levels"]),
    BadCatalog(
        name: "hostile: scalar over 64 KiB",
        yaml: head + "  - name: a\n    handler: log\n    schedule: " + String(repeating: "x", count: 65_537) + "\n",
        expected: ["jobs.yaml:5:15: scalar too long: 65537 bytes, more than 65536 (64 KiB)"]),
    BadCatalog(
        name: "hostile: catalog over 4 MiB",
        yaml: head + "# " + String(repeating: "x", count: 4 << 20),
        expected: ["jobs.yaml: catalog too large: more than 4194304 bytes (4 MiB)"]),
]

@Test("bad catalogs report exactly the expected lines", arguments: badCatalogs)
func badCatalog(_ c: BadCatalog) {
    let actual = catalogErrors(c.yaml)
    #expect(!actual.isEmpty, "catalog '\(c.name)' was accepted")
    #expect(actual == c.expected)
}

@Test func atLeastTwentyFiveBadCatalogs() {
    #expect(badCatalogs.count >= 25)
}
