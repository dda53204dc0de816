#if canImport(FoundationEssentials)
    import FoundationEssentials
    import FoundationInternationalization  // named time zones (ICU)
#else
    import Foundation
#endif

extension JobSchedule {
    /// The schedule as stable text (`every:<ms>`, `cron:<expression>;tz=<zone>`), nil for `continuous`.
    ///
    /// It is stored beside `next_run_at` in Redis, so members with different catalogs can tell
    /// which schedule computed a slot; `JobSchedule(fingerprint:)` reads it back.
    public var fingerprint: String? {
        switch self {
        case .continuous: return nil
        case .every(let interval): return "every:\(interval.wholeMilliseconds)"
        case .cron(let cron): return "cron:\(cron.expression);tz=\(cron.timeZone.identifier)"
        }
    }

    /// Reads a `fingerprint` back; nil for text it cannot turn into a schedule (an unknown time
    /// zone, a bad expression, a non-positive interval, anything else).
    package init?(fingerprint: String) {
        if fingerprint.hasPrefix("every:") {
            let digits = fingerprint.dropFirst("every:".count)
            guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let ms = Int64(digits), ms > 0
            else { return nil }
            self = .every(.milliseconds(ms))
        } else if fingerprint.hasPrefix("cron:") {
            // The zone comes last and never contains ';', so the last marker is the separator.
            let body = fingerprint.dropFirst("cron:".count)
            guard let semicolon = body.lastIndex(of: ";"), body[semicolon...].hasPrefix(";tz="),
                let zone = TimeZone(identifier: String(body[semicolon...].dropFirst(";tz=".count))),
                let cron = try? CronSchedule(expression: String(body[..<semicolon]), timeZone: zone)
            else { return nil }
            self = .cron(cron)
        } else {
            return nil
        }
    }
}

extension JobSpec {
    /// A 16-hex-digit hash of every setting that changes how the job runs (not where it is
    /// written in the file), so a reload can tell changed jobs from unchanged ones.
    public var fingerprint: String { Fingerprint.hex(StableHash.hash64(fingerprintText.utf8)) }

    /// The canonical text `fingerprint` hashes: every value length-prefixed, so no two
    /// different specs can produce the same text.
    package var fingerprintText: String {
        var text = Fingerprint.Text()
        text.field("name", name)
        text.field("handler", handler)
        text.field("schedule", schedule.fingerprint ?? "continuous")
        text.field("lease", Fingerprint.exact(lease))
        text.field("renew_every", Fingerprint.exact(renewEvery))
        text.field("drift", drift.description)
        text.field("placement", placement.rawValue)
        text.field("standby_delay", standbyDelay.map(Fingerprint.exact) ?? "-")
        text.field("on_lost_leadership", onLostLeadership.rawValue)
        text.field("timeout", timeout.map(Fingerprint.exact) ?? "-")
        // Added after the other fields and only when set, so a job that sets none of them keeps
        // the fingerprint it had before they existed (a rolling deploy changes nothing).
        if let startingDeadline { text.field("starting_deadline", Fingerprint.exact(startingDeadline)) }
        if let jitter { text.field("jitter", Fingerprint.exact(jitter)) }
        if let retry {
            text.field(
                "retry",
                "\(retry.attempts)/\(Fingerprint.exact(retry.backoff))/\(Fingerprint.exact(retry.maxBackoff))")
        }
        text.field("config", config.map(Fingerprint.canonical) ?? "-")
        return text.value
    }
}

extension Catalog {
    /// A 16-hex-digit hash of the job set: the same digest means the same jobs with the same
    /// settings, whatever their order. Redis settings and the namespace are not part of it.
    public var digest: String {
        var text = Fingerprint.Text()
        for (name, fingerprint) in jobs.map({ ($0.name, $0.fingerprint) }).sorted(by: { $0 < $1 }) {
            text.field(name, fingerprint)
        }
        return Fingerprint.hex(StableHash.hash64(text.value.utf8))
    }
}

/// The shared pieces of the fingerprints.
enum Fingerprint {
    /// Length-prefixed `key=value` pairs.
    struct Text {
        var value = ""

        mutating func field(_ key: String, _ item: String) {
            value += Fingerprint.prefixed(key) + "=" + Fingerprint.prefixed(item) + ";"
        }
    }

    /// `<utf8 length>:<text>`.
    static func prefixed(_ text: String) -> String { "\(text.utf8.count):\(text)" }

    /// 16 lowercase hex digits, leading zeros kept, so every fingerprint has the same width.
    static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    /// The duration to the attosecond: two durations give the same text only when they are equal.
    static func exact(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        return "\(seconds)s\(attoseconds)as"
    }

    /// A config node without its locations: a scalar with its quoted flag (a handler may read
    /// `"1"` and `1` differently), lists, and mappings in document order.
    static func canonical(_ node: ConfigNode) -> String {
        switch node {
        case .scalar(let text, _, let quoted): return (quoted ? "q" : "p") + prefixed(text)
        case .sequence(let items, _): return "[" + items.map(canonical).joined(separator: ",") + "]"
        case .mapping(let entries, _):
            return "{" + entries.map { prefixed($0.key) + ":" + canonical($0.value) }.joined(separator: ",") + "}"
        }
    }
}
