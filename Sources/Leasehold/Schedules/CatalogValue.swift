/// The catalog's value syntax for durations (`250ms`, `1m30s`) and percentages (`0.5%`):
/// what `jobs.yaml`, the CLI flags and the logs read and write.
public enum CatalogValue {
    /// Parses a duration such as `250ms`, `10s`, `2m`, `1h`, `1m30s` or `1h2m3s500ms`.
    ///
    /// Units must appear largest first and at most once each, and numbers are whole, so a typo
    /// like `30s1m` or `1.5.s` is rejected instead of being guessed at. Returns nil for empty,
    /// signed, unit-less, unknown-unit or overflowing input. `0s` is accepted (callers enforce minimums).
    public static func duration(_ text: String) -> Duration? {
        let units: [(name: String, millis: Int64)] = [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)]
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty else { return nil }
        var i = 0
        var total: Int64 = 0
        var lastUnitIndex = -1
        while i < bytes.count {
            var value: Int64 = 0
            let digitsStart = i
            while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 {
                let (m, o1) = value.multipliedReportingOverflow(by: 10)
                let (a, o2) = m.addingReportingOverflow(Int64(bytes[i] - 0x30))
                if o1 || o2 { return nil }
                value = a
                i += 1
            }
            guard i > digitsStart else { return nil }
            let unitStart = i
            while i < bytes.count, bytes[i] >= 0x61 && bytes[i] <= 0x7a { i += 1 }
            let unit = String(decoding: bytes[unitStart..<i], as: UTF8.self)
            guard let index = units.firstIndex(where: { $0.name == unit }), index > lastUnitIndex else { return nil }
            lastUnitIndex = index
            let (part, o1) = value.multipliedReportingOverflow(by: units[index].millis)
            let (sum, o2) = total.addingReportingOverflow(part)
            if o1 || o2 { return nil }
            total = sum
        }
        // Keep the total representable as seconds*1000 with headroom for later arithmetic (lease / 3 etc.).
        return .milliseconds(total)
    }

    /// Formats a duration compactly (`1m30s`, `250ms`, `0s`), the inverse of `duration(_:)` for whole milliseconds.
    ///
    /// Sub-millisecond remainders are truncated: logs and the CLI never need them and the parser
    /// could not read them back.
    public static func text(_ duration: Duration) -> String {
        let (seconds, attos) = duration.components
        // Total whole milliseconds; durations beyond ~292 million years fall back to seconds.
        let (ms, overflow) = seconds.multipliedReportingOverflow(by: 1000)
        guard !overflow else { return "\(seconds)s" }
        let total = ms + attos / 1_000_000_000_000_000
        if total == 0 { return "0s" }
        let magnitude = total.magnitude
        var out = total < 0 ? "-" : ""
        let h = magnitude / 3_600_000
        let m = (magnitude / 60_000) % 60
        let s = (magnitude / 1000) % 60
        let rest = magnitude % 1000
        if h > 0 { out += "\(h)h" }
        if m > 0 { out += "\(m)m" }
        if s > 0 { out += "\(s)s" }
        if rest > 0 { out += "\(rest)ms" }
        return out
    }

    /// Parses a percentage such as `1%` or `0.5%` into a fraction (0.01, 0.005); nil if malformed or negative.
    public static func percentage(_ text: String) -> Double? {
        guard text.hasSuffix("%") else { return nil }
        let number = text.dropLast()
        // Only digits and one dot: Double() would also accept "inf", "1e3" and hex.
        var dots = 0
        var digits = 0
        for c in number {
            if c == "." { dots += 1 } else if c.isASCII, c.isNumber { digits += 1 } else { return nil }
        }
        guard digits > 0, dots <= 1, !number.hasPrefix("."), !number.hasSuffix("."), let v = Double(number) else {
            return nil
        }
        return v / 100
    }
}
