import RedisClient

#if canImport(FoundationEssentials)
    import FoundationEssentials
    import FoundationInternationalization  // named time zones (ICU)
#else
    import Foundation
#endif

/// A value with the location it came from, so cross-field checks can point at the right node.
struct Located<T> {
    var value: T
    var location: SourceLocation
    var fromDefaults: Bool
}

/// Lease and run settings allowed both under `defaults:` and on each job.
struct Settings {
    var lease: Located<Duration>?
    var renewEvery: Located<Duration>?
    var drift: Located<Double>?
    var placement: PlacementMode?
    var standbyDelay: Duration?
    var onLostLeadership: LostLeadershipAction?
    var timeout: Duration?
    var startingDeadline: Located<Duration>?
    var jitter: Located<Duration>?
    var retry: Located<RetryPolicy>?
    /// Keys that were present but invalid: dependent checks are skipped to avoid follow-on noise.
    var invalid: Set<String> = []

    static let keys = [
        "lease", "renew_every", "drift", "placement", "standby_delay", "on_lost_leadership", "timeout",
        "starting_deadline", "jitter", "retry",
    ]
    static let retryKeys = ["attempts", "backoff", "max_backoff"]
}

struct Validator {
    let file: String
    let knownHandlers: [String]
    var errors: [ConfigError] = []

    static let topKeys = ["version", "redis", "defaults", "jobs"]
    static let redisKeys = ["url", "namespace", "password_file", "tls", "sentinel_password", "min_replicas"]
    static let tlsKeys = ["ca_file", "cert_file", "key_file", "server_name", "verify"]
    /// Settings of the whole daemon, allowed only under `defaults:`.
    static let daemonKeys = ["crash_release"]
    static let jobKeys = ["name", "handler", "schedule", "config"] + Settings.keys
    static let scheduleKeys = ["every", "cron", "timezone"]
    static let durationHelp = "expected a number with a unit (ms, s, m, h), e.g. 10s or 1m30s"
    static let scheduleHelp = "expected continuous, {every: 30s} or {cron: \"*/5 * * * *\", timezone: Europe/Berlin}"

    /// The directory part of `path` with its trailing slash, or "" for a bare file name.
    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "" }
        return String(path[...slash])
    }

    init(file: String, knownHandlers: [String]) {
        self.file = file
        self.knownHandlers = knownHandlers
    }

    mutating func error(_ location: SourceLocation, _ message: String) {
        errors.append(ConfigError(location: location, message: message))
    }

    // MARK: generic checks

    /// Reports keys not in `allowed`, with a spelling hint when one is close.
    mutating func checkKeys(_ node: ConfigNode, allowed: [String], context: String) {
        for entry in node.asMapping ?? [] where !allowed.contains(entry.key) {
            if let hint = closest(to: entry.key, in: allowed) {
                error(entry.keyLocation, "unknown key '\(entry.key)' \(context): did you mean '\(hint)'?")
            } else {
                error(
                    entry.keyLocation,
                    "unknown key '\(entry.key)' \(context) (expected one of: \(allowed.joined(separator: ", ")))")
            }
        }
    }

    /// A non-empty scalar's text, or an error naming the key and the type found.
    mutating func string(_ node: ConfigNode, key: String, expected: String = "a string") -> String? {
        guard case .scalar(let text, _, _) = node, !node.isNull else {
            error(node.location, "'\(key)' must be \(expected), got \(node.isNull ? "nothing" : "a \(node.typeName)")")
            return nil
        }
        return text
    }

    mutating func duration(_ node: ConfigNode, key: String) -> Duration? {
        guard let text = string(node, key: key, expected: "a duration such as 10s") else { return nil }
        guard let d = CatalogValue.duration(text) else {
            error(node.location, "invalid duration '\(text)' for '\(key)': \(Validator.durationHelp)")
            return nil
        }
        return d
    }

    // MARK: catalog

    mutating func catalog(_ root: ConfigNode?, checkHandler: (String, ConfigNode?) -> HandlerConfigCheck) -> Catalog? {
        guard let root else {
            error(
                SourceLocation(file: file, line: 1, column: 1),
                "empty catalog: expected a mapping with 'version' and 'jobs'")
            return nil
        }
        guard root.asMapping != nil else {
            error(root.location, "the catalog must be a mapping with 'version' and 'jobs', got a \(root.typeName)")
            return nil
        }
        checkKeys(root, allowed: Validator.topKeys, context: "at top level")

        var version = 1
        if let node = root.value(for: "version") {
            if let text = string(node, key: "version", expected: "the number 1") {
                if text != "1" {
                    error(node.location, "unsupported version '\(text)': expected 1")
                }
                version = Int(text) ?? 1
            }
        } else {
            error(root.location, "missing required key 'version': expected 'version: 1'")
        }

        var redisURL: String?
        var passwordFile: String?
        var tls: CatalogTLS?
        var sentinelPassword: String?
        var minReplicas = 0
        var namespace = "leasehold"
        if let redis = root.value(for: "redis") {
            if redis.asMapping == nil {
                error(
                    redis.location, "'redis' must be a mapping with 'url' and/or 'namespace', got a \(redis.typeName)")
            } else {
                checkKeys(redis, allowed: Validator.redisKeys, context: "in 'redis'")
                if let node = redis.value(for: "url"),
                    let url = string(node, key: "url", expected: "a URL such as redis://127.0.0.1:6379/0")
                {
                    if url.hasPrefix("redis://") || url.hasPrefix("rediss://") || url.hasPrefix("unix://")
                        || url.hasPrefix("redis-sentinel://") || url.hasPrefix("rediss-sentinel://")
                        || url.hasPrefix("redis-cluster://") || url.hasPrefix("rediss-cluster://")
                    {
                        redisURL = url
                    } else {
                        error(
                            node.location,
                            "invalid redis url '\(RedisEndpoint.redactedURL(url))': expected redis://host:port/db, rediss://… or unix:///path"
                        )
                    }
                }
                if let node = redis.value(for: "password_file"),
                    let path = string(node, key: "password_file", expected: "the path of a file holding the password")
                {
                    if path.isEmpty || path.contains("\0") {
                        error(node.location, "invalid password_file: expected the path of a file holding the password")
                    } else {
                        // Relative to the catalog, as a deploy tool writes them side by side.
                        passwordFile = path.hasPrefix("/") ? path : Self.directory(of: file) + path
                    }
                }
                if let node = redis.value(for: "tls") { tls = tlsSettings(node) }
                if let node = redis.value(for: "sentinel_password"),
                    let text = string(node, key: "sentinel_password", expected: "the sentinels' password")
                {
                    // Never echoed: a bad value is reported by its position only.
                    if text.isEmpty || text.contains(where: { $0.isNewline || $0 == "\0" }) {
                        error(node.location, "invalid sentinel_password: expected a non-empty one-line string")
                    } else {
                        sentinelPassword = text
                    }
                }
                if let node = redis.value(for: "min_replicas"),
                    let text = string(node, key: "min_replicas", expected: "a number of replicas (0 disables WAIT)")
                {
                    if let value = Int(text), value >= 0, value <= 100 {
                        minReplicas = value
                    } else {
                        error(
                            node.location,
                            "invalid min_replicas '\(text)': expected a whole number from 0 to 100 (replicas that must acknowledge each lease change)"
                        )
                    }
                }
                if let node = redis.value(for: "namespace"), let ns = string(node, key: "namespace") {
                    let ok = ns.unicodeScalars.allSatisfy {
                        $0.isASCII
                            && ($0.properties.isAlphabetic || ("0"..."9").contains($0)
                                || "_.-".unicodeScalars.contains($0))
                    }
                    if ok {
                        namespace = ns
                    } else {
                        error(node.location, "invalid namespace '\(ns)': expected letters, digits, '_', '.' or '-'")
                    }
                }
            }
        }

        var defaults = Settings()
        var crashRelease = true
        if let node = root.value(for: "defaults") {
            if node.asMapping == nil {
                error(node.location, "'defaults' must be a mapping, got a \(node.typeName)")
            } else {
                checkKeys(node, allowed: Settings.keys + Self.daemonKeys, context: "in 'defaults'")
                defaults = settings(node, fromDefaults: true)
                if let n = node.value(for: "crash_release"),
                    let text = string(n, key: "crash_release", expected: "true or false")
                {
                    switch text {
                    case "true": crashRelease = true
                    case "false": crashRelease = false
                    default: error(n.location, "invalid crash_release '\(text)': expected true or false")
                    }
                }
            }
        }

        var jobs: [JobSpec] = []
        guard let jobsNode = root.value(for: "jobs") else {
            error(root.location, "missing required key 'jobs': expected a list of jobs")
            return nil
        }
        guard let items = jobsNode.asSequence else {
            error(jobsNode.location, "'jobs' must be a list of jobs, got a \(jobsNode.typeName)")
            return nil
        }
        if items.isEmpty {
            error(jobsNode.location, "no jobs defined: 'jobs' must list at least one job")
        }
        var firstByName: [String: SourceLocation] = [:]
        for item in items {
            if let job = job(item, defaults: defaults, firstByName: &firstByName, checkHandler: checkHandler) {
                jobs.append(job)
            }
        }
        var catalog = Catalog(version: version, redisURL: redisURL, namespace: namespace, jobs: jobs, path: file)
        catalog.redisPasswordFile = passwordFile
        catalog.redisTLS = tls
        catalog.redisSentinelPassword = sentinelPassword
        catalog.redisMinReplicas = minReplicas
        catalog.crashRelease = crashRelease
        return catalog
    }

    /// `redis.tls`: file paths relative to the catalog (as `password_file`); the files are
    /// read when a daemon or the CLI connects, after flags had their say.
    mutating func tlsSettings(_ node: ConfigNode) -> CatalogTLS? {
        guard node.asMapping != nil else {
            error(
                node.location,
                "'tls' must be a mapping with ca_file, cert_file, key_file, server_name and/or verify, got a \(node.typeName)"
            )
            return nil
        }
        checkKeys(node, allowed: Validator.tlsKeys, context: "in 'redis.tls'")
        var tls = CatalogTLS(location: node.location)
        func path(_ key: String, _ what: String) -> CatalogTLS.Setting<String>? {
            guard let value = node.value(for: key), let text = string(value, key: key, expected: "the path of \(what)")
            else { return nil }
            if text.isEmpty || text.contains("\0") {
                error(value.location, "invalid \(key): expected the path of \(what)")
                return nil
            }
            return .init(value: text.hasPrefix("/") ? text : Self.directory(of: file) + text, location: value.location)
        }
        tls.caFile = path("ca_file", "a PEM file of CA certificates")
        tls.certFile = path("cert_file", "the client's PEM certificate")
        tls.keyFile = path("key_file", "the client certificate's PEM key")
        if let value = node.value(for: "server_name"),
            let name = string(value, key: "server_name", expected: "the host name the server's certificate carries")
        {
            if name.isEmpty
                || !name.allSatisfy({ ($0.isASCII && ($0.isLetter || $0.isNumber)) || "-._:".contains($0) })
            {
                error(value.location, "invalid server_name '\(name)': expected a host name or IP address")
            } else {
                tls.serverName = .init(value: name, location: value.location)
            }
        }
        if let value = node.value(for: "verify"), let text = string(value, key: "verify", expected: "true or false") {
            switch text {
            case "true": tls.verify = .init(value: true, location: value.location)
            case "false": tls.verify = .init(value: false, location: value.location)
            default: error(value.location, "invalid verify '\(text)': expected true or false")
            }
        }
        let hasCert = node.value(for: "cert_file") != nil
        if hasCert != (node.value(for: "key_file") != nil) {
            error(
                node.location,
                "'redis.tls' needs cert_file and key_file together (a client certificate and its key), got only \(hasCert ? "cert_file" : "key_file")"
            )
        }
        return tls
    }

    // MARK: settings

    mutating func settings(_ node: ConfigNode, fromDefaults: Bool) -> Settings {
        var s = Settings()
        if let n = node.value(for: "lease") {
            if let d = duration(n, key: "lease") {
                if d < .seconds(1) {
                    error(n.location, "lease \(CatalogValue.text(d)) is too short: expected at least 1s")
                    s.invalid.insert("lease")
                } else {
                    s.lease = Located(value: d, location: n.location, fromDefaults: fromDefaults)
                }
            } else {
                s.invalid.insert("lease")
            }
        }
        if let n = node.value(for: "renew_every") {
            if let d = duration(n, key: "renew_every") {
                if d <= .zero {
                    error(n.location, "renew_every must be greater than 0")
                    s.invalid.insert("renew_every")
                } else {
                    s.renewEvery = Located(value: d, location: n.location, fromDefaults: fromDefaults)
                }
            } else {
                s.invalid.insert("renew_every")
            }
        }
        if let n = node.value(for: "drift"), let text = string(n, key: "drift", expected: "a percentage such as 1%") {
            if let f = CatalogValue.percentage(text) {
                if f > 0.1 {
                    error(n.location, "drift \(text) out of range: expected 0% to 10%")
                } else {
                    s.drift = Located(value: f, location: n.location, fromDefaults: fromDefaults)
                }
            } else {
                error(n.location, "invalid drift '\(text)': expected a percentage such as 1% or 0.5%")
            }
        }
        if let n = node.value(for: "placement"), let text = string(n, key: "placement") {
            if let p = PlacementMode(rawValue: text) {
                s.placement = p
            } else {
                error(n.location, "invalid placement '\(text)': expected spread or any")
            }
        }
        if let n = node.value(for: "standby_delay"), let d = duration(n, key: "standby_delay") {
            s.standbyDelay = d
        }
        if let n = node.value(for: "on_lost_leadership"), let text = string(n, key: "on_lost_leadership") {
            if let a = LostLeadershipAction(rawValue: text) {
                s.onLostLeadership = a
            } else {
                error(n.location, "invalid on_lost_leadership '\(text)': expected cancel or exit")
            }
        }
        if let n = node.value(for: "timeout"), let d = duration(n, key: "timeout") {
            if d <= .zero {
                error(n.location, "timeout must be greater than 0 (leave it out for no timeout)")
            } else {
                s.timeout = d
            }
        }
        if let n = node.value(for: "starting_deadline"), let d = duration(n, key: "starting_deadline") {
            if d <= .zero {
                error(n.location, "starting_deadline must be greater than 0 (leave it out to run a missed slot late)")
            } else {
                s.startingDeadline = Located(value: d, location: n.location, fromDefaults: fromDefaults)
            }
        }
        if let n = node.value(for: "jitter"), let d = duration(n, key: "jitter") {
            // 0s is allowed: it switches off a jitter inherited from defaults.
            s.jitter = Located(value: d, location: n.location, fromDefaults: fromDefaults)
        }
        if let n = node.value(for: "retry") {
            s.retry = retry(n).map { Located(value: $0, location: n.location, fromDefaults: fromDefaults) }
        }
        return s
    }

    /// `retry: {attempts: N, backoff: D, max_backoff: D}`; nil (with errors) when invalid.
    mutating func retry(_ node: ConfigNode) -> RetryPolicy? {
        guard node.asMapping != nil else {
            error(
                node.location, "'retry' must be a mapping such as {attempts: 3, backoff: 10s}, got a \(node.typeName)")
            return nil
        }
        checkKeys(node, allowed: Settings.retryKeys, context: "in 'retry'")
        var policy = RetryPolicy(attempts: 1)
        var ok = true
        if let n = node.value(for: "attempts") {
            if let text = string(n, key: "attempts", expected: "a whole number of tries such as 3") {
                if let value = Int(text), value >= 1, value <= 100 {
                    policy.attempts = value
                } else {
                    error(
                        n.location,
                        "invalid attempts '\(text)': expected a whole number from 1 to 100 (tries including the first)")
                    ok = false
                }
            } else {
                ok = false
            }
        } else {
            error(node.location, "'retry' is missing required key 'attempts' (tries including the first)")
            ok = false
        }
        if let n = node.value(for: "backoff") {
            if let d = duration(n, key: "backoff"), d > .zero {
                policy.backoff = d
            } else {
                if case .scalar = n, CatalogValue.duration(n.asString ?? "") != nil {
                    error(n.location, "backoff must be greater than 0")
                }
                ok = false
            }
        }
        if let n = node.value(for: "max_backoff") {
            if let d = duration(n, key: "max_backoff") {
                if d < policy.backoff {
                    error(
                        n.location,
                        "max_backoff \(CatalogValue.text(d)) must not be shorter than backoff \(CatalogValue.text(policy.backoff))"
                    )
                    ok = false
                } else {
                    policy.maxBackoff = d
                }
            } else {
                ok = false
            }
        } else if policy.maxBackoff < policy.backoff {
            // Only the default max_backoff (5m): a longer backoff raises it rather than fail.
            policy.maxBackoff = policy.backoff
        }
        return ok ? policy : nil
    }

    /// The shortest gap between consecutive runs of `schedule` (nil for continuous, or a cron
    /// schedule with fewer than two future fires). For cron, the gaps between the next 50
    /// fires from `now`: exact for every ordinary expression (their shortest gap recurs
    /// within a few fires, DST gaps within a year of hourly ones), cheap to compute.
    static func shortestPeriod(of schedule: JobSchedule, from now: Date = Date()) -> Duration? {
        switch schedule {
        case .continuous: return nil
        case .every(let interval): return interval
        case .cron(let cron):
            var shortest: Double?
            var previous = cron.nextFire(after: now)
            for _ in 0..<50 {
                guard let last = previous, let next = cron.nextFire(after: last) else { break }
                let gap = next.timeIntervalSince(last)
                shortest = min(shortest ?? gap, gap)
                previous = next
            }
            return shortest.map { .milliseconds(Int64(($0 * 1000).rounded())) }
        }
    }

    // MARK: jobs

    mutating func job(
        _ node: ConfigNode, defaults: Settings, firstByName: inout [String: SourceLocation],
        checkHandler: (String, ConfigNode?) -> HandlerConfigCheck
    ) -> JobSpec? {
        guard node.asMapping != nil else {
            error(
                node.location,
                "each job must be a mapping with 'name', 'handler' and 'schedule', got a \(node.typeName)")
            return nil
        }
        var name: String?
        var displayName: String?
        if let n = node.value(for: "name"), let text = string(n, key: "name") {
            displayName = text
            if text.count > 100 {
                error(n.location, "job name too long (\(text.count) characters): expected at most 100")
            } else if !Validator.isValidJobName(text) {
                error(
                    n.location,
                    "invalid job name '\(text)': expected lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
                )
            } else if let first = firstByName[text] {
                error(n.location, "duplicate job name '\(text)' (first defined at line \(first.line))")
            } else {
                firstByName[text] = n.location
                name = text
            }
        } else if node.value(for: "name") == nil {
            error(node.location, "job is missing required key 'name'")
        }
        // Name the job in messages even when its name is itself wrong (duplicate, bad characters).
        let what = displayName.map { "job '\($0)'" } ?? "job"
        checkKeys(node, allowed: Validator.jobKeys + Self.daemonKeys, context: "in \(what)")
        for entry in node.asMapping ?? [] where Self.daemonKeys.contains(entry.key) {
            error(
                entry.keyLocation, "'\(entry.key)' applies to the whole daemon: set it under 'defaults', not in \(what)"
            )
        }

        var handler: String?
        let config = node.value(for: "config")
        if let n = node.value(for: "handler") {
            if let kind = string(n, key: "handler") {
                switch checkHandler(kind, config) {
                case .valid: handler = kind
                case .invalid(let problems): errors.append(contentsOf: problems)
                case .unknownKind:
                    let hint = closest(to: kind, in: knownHandlers).map { "; did you mean '\($0)'?" } ?? ""
                    let known =
                        knownHandlers.isEmpty ? "" : " (known: \(knownHandlers.sorted().joined(separator: ", ")))"
                    error(n.location, "unknown handler '\(kind)'\(hint)\(known)")
                }
            }
        } else {
            error(node.location, "\(what) is missing required key 'handler'")
        }

        var schedule: JobSchedule?
        if let n = node.value(for: "schedule") {
            schedule = self.schedule(n)
        } else {
            error(node.location, "\(what) is missing required key 'schedule': \(Validator.scheduleHelp)")
        }

        let own = settings(node, fromDefaults: false)
        let lease = own.lease ?? (own.invalid.contains("lease") ? nil : defaults.lease)
        let leaseValue = lease?.value ?? .seconds(10)
        var renew = own.renewEvery ?? defaults.renewEvery
        let leaseOK = !own.invalid.contains("lease") && !(lease == nil && defaults.invalid.contains("lease"))
        if leaseOK, let inherited = renew, inherited.fromDefaults, let lease, !lease.fromDefaults,
            inherited.value * 2 >= leaseValue
        {
            // A default renew interval cannot fit every lease a job may set for itself; the
            // job chose a shorter lease, so it gets the default rule (lease / 3) instead of
            // an error the job's author cannot fix without repeating renew_every.
            renew = nil
        }
        if leaseOK, let renew, renew.value * 2 >= leaseValue {
            error(
                renew.location,
                "renew_every \(CatalogValue.text(renew.value)) must be less than half of lease \(CatalogValue.text(leaseValue)), so a failed renewal can be retried before the lease expires"
            )
        }

        // Scheduling settings: inherited ones do not apply to continuous jobs (a default is
        // meant for the scheduled ones); a continuous job that sets one itself is an error.
        var startingDeadline = own.startingDeadline ?? defaults.startingDeadline
        var jitter = own.jitter ?? defaults.jitter
        var retry = own.retry ?? defaults.retry
        if schedule == .continuous {
            for (key, location) in [
                ("starting_deadline", own.startingDeadline?.location), ("jitter", own.jitter?.location),
                ("retry", own.retry?.location),
            ] {
                if let location {
                    error(
                        location,
                        "'\(key)' does not apply to continuous jobs (\(key == "retry" ? "a continuous handler that returns is restarted anyway" : "they have no slots"))"
                    )
                }
            }
            startingDeadline = nil
            jitter = nil
            retry = nil
        }
        if let located = jitter, located.value > .zero, let schedule, let period = Self.shortestPeriod(of: schedule),
            located.value >= period
        {
            error(
                located.location,
                "jitter \(CatalogValue.text(located.value)) must be shorter than the schedule's period \(CatalogValue.text(period))\(located.fromDefaults ? " of \(what)" : ""), or slots would overtake each other"
            )
        }
        if jitter?.value == .zero { jitter = nil }

        guard let name, let handler, let schedule else { return nil }
        return JobSpec(
            name: name, handler: handler, schedule: schedule, lease: leaseValue,
            renewEvery: renew?.value ?? leaseValue / 3,
            drift: own.drift?.value ?? defaults.drift?.value ?? 0.01,
            placement: own.placement ?? defaults.placement ?? .spread,
            standbyDelay: own.standbyDelay ?? defaults.standbyDelay,
            onLostLeadership: own.onLostLeadership ?? defaults.onLostLeadership ?? .cancel,
            timeout: own.timeout ?? defaults.timeout,
            startingDeadline: startingDeadline?.value, jitter: jitter?.value,
            retry: retry.map(\.value).flatMap { $0.attempts > 1 ? $0 : nil },
            config: config, location: node.location)
    }

    mutating func schedule(_ node: ConfigNode) -> JobSchedule? {
        switch node {
        case .scalar(let text, _, _):
            if text == "continuous" { return .continuous }
            error(node.location, "invalid schedule '\(text)': \(Validator.scheduleHelp)")
            return nil
        case .sequence:
            error(node.location, "'schedule' must be continuous or a mapping, got a list")
            return nil
        case .mapping:
            break
        }
        checkKeys(node, allowed: Validator.scheduleKeys, context: "in schedule")
        let every = node.value(for: "every")
        let cron = node.value(for: "cron")
        let zone = node.value(for: "timezone")
        switch (every, cron) {
        case (.some, .some):
            error(node.location, "schedule has both 'every' and 'cron': expected exactly one")
            return nil
        case (nil, nil):
            if node.asMapping?.contains(where: { !Validator.scheduleKeys.contains($0.key) }) == true { return nil }
            error(node.location, "schedule needs 'every' or 'cron': \(Validator.scheduleHelp)")
            return nil
        case (let every?, nil):
            if let zone { error(zone.location, "'timezone' only applies to cron schedules") }
            guard let d = duration(every, key: "every") else { return nil }
            guard d >= .seconds(1) else {
                error(every.location, "'every' \(CatalogValue.text(d)) is too short: expected at least 1s")
                return nil
            }
            return zone == nil ? .every(d) : nil
        case (nil, let cron?):
            var tz: TimeZone? = CronSchedule.utc
            if let zone, let id = string(zone, key: "timezone", expected: "a time zone name such as Europe/Berlin") {
                tz = TimeZone(identifier: id)
                if tz == nil {
                    // TimeZone(identifier:) also accepts abbreviations; only report what it really rejects.
                    let hint =
                        closest(to: id, in: TimeZone.knownTimeZoneIdentifiers).map { ": did you mean '\($0)'?" }
                        ?? ": expected an IANA name such as Europe/Berlin or UTC"
                    error(zone.location, "unknown time zone '\(id)'\(hint)")
                }
            } else if zone != nil {
                tz = nil
            }
            guard let expression = string(cron, key: "cron", expected: "a cron expression such as \"0 3 * * *\"") else {
                return nil
            }
            do {
                let c = try CronSchedule(expression: expression, timeZone: tz ?? CronSchedule.utc)
                return tz == nil ? nil : .cron(c)
            } catch {
                self.error(cron.location, "invalid cron expression '\(expression)': \(error)")
                return nil
            }
        }
    }

    static func isValidJobName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard let first = bytes.first else { return false }
        func alnum(_ b: UInt8) -> Bool { (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) }
        return alnum(first) && bytes.allSatisfy { alnum($0) || $0 == 0x2e || $0 == 0x5f || $0 == 0x2d }
    }
}
