#if canImport(FoundationEssentials)
    import FoundationEssentials
    import FoundationInternationalization  // named time zones (ICU)
#else
    import Foundation
#endif

/// Why a cron expression was rejected; `field` names the offending field when there is one.
public struct CronError: Error, Sendable, Hashable, CustomStringConvertible {
    /// `minute`, `hour`, `day-of-month`, `month` or `day-of-week`; nil for whole-expression problems.
    public var field: String?
    /// What is wrong and what is expected, one line.
    public var message: String

    /// Creates an error.
    public init(field: String?, message: String) {
        self.field = field
        self.message = message
    }

    /// `hour field: value 25 out of range 0-23`.
    public var description: String { field.map { "\($0) field: \(message)" } ?? message }
}

/// A standard 5-field cron schedule (minute hour day-of-month month day-of-week) evaluated in a time zone.
///
/// Semantics follow Vixie cron: lists, ranges, steps, month/day names, day-of-week 0-7 (both 0 and 7
/// are Sunday), and when both day fields are restricted a day matches if *either* matches. As in Vixie
/// cron, a day field that starts with `*` (including `*/2`) counts as unrestricted for that rule.
///
/// Daylight saving time: a local time that does not exist (spring-forward gap) fires once at the first
/// instant after the gap (e.g. 02:30 on the Berlin spring-forward day fires at 03:00 CEST); a local time
/// that occurs twice (fall-back) fires only at its first occurrence.
public struct CronSchedule: Sendable, Hashable, CustomStringConvertible {
    /// The expression as given (macros are kept as written).
    public let expression: String
    /// The zone the fields are interpreted in.
    public let timeZone: TimeZone

    // One bit per allowed value; day-of-week is normalised to 0-6.
    let minutes: UInt64
    let hours: UInt64
    let daysOfMonth: UInt64
    let months: UInt64
    let daysOfWeek: UInt64
    let domStar: Bool
    let dowStar: Bool

    /// UTC, the default zone for schedules without `timezone:`.
    public static let utc = TimeZone(identifier: "UTC") ?? TimeZone(secondsFromGMT: 0)!

    /// Parses `expression`; throws a `CronError` naming the field and the problem.
    public init(expression: String, timeZone: TimeZone = CronSchedule.utc) throws(CronError) {
        self.expression = expression
        self.timeZone = timeZone
        var fields = expression.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        if fields.count == 1, let macro = fields.first, macro.hasPrefix("@") {
            guard let expanded = CronSchedule.macros[macro.lowercased()] else {
                throw CronError(
                    field: nil,
                    message:
                        "unknown macro '\(macro)': expected one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly"
                )
            }
            fields = expanded.split(separator: " ").map(String.init)
        }
        guard fields.count == 5 else {
            throw CronError(
                field: nil,
                message: "expected 5 fields (minute hour day-of-month month day-of-week), got \(fields.count)")
        }
        minutes = try CronSchedule.parseField(fields[0], name: "minute", range: 0...59, names: [:])
        hours = try CronSchedule.parseField(fields[1], name: "hour", range: 0...23, names: [:])
        daysOfMonth = try CronSchedule.parseField(fields[2], name: "day-of-month", range: 1...31, names: [:])
        months = try CronSchedule.parseField(fields[3], name: "month", range: 1...12, names: CronSchedule.monthNames)
        var dow = try CronSchedule.parseField(
            fields[4], name: "day-of-week", range: 0...7, names: CronSchedule.dayNames)
        if dow & (1 << 7) != 0 { dow = (dow | 1) & ~(1 << 7) }
        daysOfWeek = dow
        domStar = fields[2].hasPrefix("*")
        dowStar = fields[4].hasPrefix("*")
    }

    /// The expression and zone, for logs.
    public var description: String { "\(expression) (\(timeZone.identifier))" }

    static let macros: [String: String] = [
        "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
        "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
    ]
    static let monthNames: [String: Int] = [
        "jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6,
        "jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12,
    ]
    static let dayNames: [String: Int] = ["sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6]

    static func parseField(_ text: String, name: String, range: ClosedRange<Int>, names: [String: Int])
        throws(CronError) -> UInt64
    {
        let expected =
            "expected a number \(range.lowerBound)-\(range.upperBound)"
            + (names.isEmpty ? "" : (name == "month" ? " or a name jan-dec" : " or a name sun-sat"))
        func value(_ s: Substring) throws(CronError) -> Int {
            if let v = Int(s), s.allSatisfy(\.isASCII) {
                guard range.contains(v) else {
                    throw CronError(
                        field: name, message: "value \(v) out of range \(range.lowerBound)-\(range.upperBound)")
                }
                return v
            }
            if let v = names[s.lowercased()] { return v }
            throw CronError(field: name, message: "invalid value '\(s)': \(expected)")
        }
        var bits: UInt64 = 0
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard !item.isEmpty else { throw CronError(field: name, message: "empty list item in '\(text)'") }
            let parts = item.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count <= 2 else {
                throw CronError(field: name, message: "invalid step in '\(item)': expected at most one '/'")
            }
            var step = 1
            if parts.count == 2 {
                guard let s = Int(parts[1]), s > 0, parts[1].allSatisfy(\.isASCII) else {
                    throw CronError(
                        field: name, message: "invalid step '\(parts[1])' in '\(item)': expected a positive number")
                }
                step = s
            }
            let base = parts[0]
            var low: Int
            var high: Int
            if base == "*" {
                (low, high) = (range.lowerBound, range.upperBound)
            } else if let dash = base.firstIndex(of: "-") {
                low = try value(base[..<dash])
                high = try value(base[base.index(after: dash)...])
                guard low <= high else {
                    throw CronError(
                        field: name, message: "range '\(base)' is backwards: the start must not be after the end")
                }
            } else {
                low = try value(base)
                // "5/15" means "from 5 to the end, every 15" (as cronie reads it).
                high = parts.count == 2 ? range.upperBound : low
            }
            for v in stride(from: low, through: high, by: step) { bits |= 1 << UInt64(v) }
        }
        return bits
    }

    // MARK: - Evaluation

    /// The first fire time strictly after `after`, or nil if the expression never matches (e.g. `0 0 30 2 *`).
    public func nextFire(after: Date) -> Date? {
        let afterSeconds = after.timeIntervalSince1970
        let offset = timeZone.secondsFromGMT(for: after)
        // Local wall-clock minute containing `after`; candidates start one minute later.
        let localMinute = ((afterSeconds + Double(offset)) / 60).rounded(.down)
        guard localMinute.isFinite, abs(localMinute) < 1e14 else { return nil }
        var civil = Civil(epochSeconds: Int64(localMinute) * 60)
        // Each iteration moves to a strictly later local time; only first occurrences of repeated
        // (fall-back) times that lie before `after` are skipped, so this loop is short.
        for _ in 0..<100_000 {
            guard let next = nextCivil(after: civil) else { return nil }
            let instant = firstInstant(of: next)
            if instant > afterSeconds { return Date(timeIntervalSince1970: instant) }
            civil = next
        }
        return nil
    }

    /// The earliest instant at which the local clock shows `civil`, or the end of the gap if it never does.
    func firstInstant(of civil: Civil) -> Double {
        let naive = civil.epochSeconds
        let before = timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(naive - 86_400)))
        let after = timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(naive + 86_400)))
        var valid: [Int64] = []
        for o in Set([before, after]) {
            let instant = naive - Int64(o)
            if timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(instant))) == o { valid.append(instant) }
        }
        if let first = valid.min() { return Double(first) }
        // In a gap: the transition lies between the two readings; find it by bisection (≤ 17 steps for a day).
        var lo = naive - Int64(max(before, after))
        var hi = naive - Int64(min(before, after))
        let target = timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(hi)))
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2
            if timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(mid))) == target {
                hi = mid
            } else {
                lo = mid
            }
        }
        return Double(hi)
    }

    func dayMatches(year: Int, month: Int, day: Int) -> Bool {
        let dom = daysOfMonth & (1 << UInt64(day)) != 0
        let dow = daysOfWeek & (1 << UInt64(Civil.weekday(year: year, month: month, day: day))) != 0
        return (domStar || dowStar) ? (dom && dow) : (dom || dow)
    }

    /// The smallest matching local time strictly after `civil`, skipping by field (never minute by minute).
    func nextCivil(after civil: Civil) -> Civil? {
        let start = Civil(epochSeconds: civil.epochSeconds + 60)
        // The Gregorian calendar repeats every 400 years, so no match in 401 years means none ever.
        for year in start.year...(start.year + 401) {
            let firstYear = year == start.year
            for month in (firstYear ? start.month : 1)...12 where months & (1 << UInt64(month)) != 0 {
                let firstMonth = firstYear && month == start.month
                let dim = Civil.daysInMonth(year: year, month: month)
                let d0 = firstMonth ? start.day : 1
                guard d0 <= dim else { continue }
                for day in d0...dim where dayMatches(year: year, month: month, day: day) {
                    let firstDay = firstMonth && day == start.day
                    for hour in (firstDay ? start.hour : 0)...23 where hours & (1 << UInt64(hour)) != 0 {
                        let m0 = (firstDay && hour == start.hour) ? start.minute : 0
                        let candidates = minutes >> UInt64(m0)
                        if candidates != 0 {
                            return Civil(
                                year: year, month: month, day: day, hour: hour,
                                minute: m0 + candidates.trailingZeroBitCount)
                        }
                    }
                }
            }
        }
        return nil
    }
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01), without Foundation's
/// calendar machinery (Howard Hinnant's civil_from_days): cron evaluation and the CLI's UTC
/// timestamps both need it on hot or simple paths.
package func civilDate(fromDays days: Int64) -> (year: Int, month: Int, day: Int) {
    let z = days + 719_468
    let era = (z >= 0 ? z : z - 146_096) / 146_097
    let doe = z - era * 146_097
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    let mp = (5 * doy + 2) / 153
    let day = doy - (153 * mp + 2) / 5 + 1
    let month = mp < 10 ? mp + 3 : mp - 9
    return (Int(yoe + era * 400 + (month <= 2 ? 1 : 0)), Int(month), Int(day))
}

/// A wall-clock time with no zone, in the proleptic Gregorian calendar.
struct Civil: Hashable {
    var year: Int, month: Int, day: Int, hour: Int, minute: Int

    init(year: Int, month: Int, day: Int, hour: Int, minute: Int) {
        (self.year, self.month, self.day, self.hour, self.minute) = (year, month, day, hour, minute)
    }

    /// Reads seconds since 1970 as if the wall clock were UTC (seconds are dropped).
    init(epochSeconds: Int64) {
        var days = epochSeconds / 86_400
        var rest = epochSeconds % 86_400
        if rest < 0 {
            rest += 86_400
            days -= 1
        }
        (year, month, day) = civilDate(fromDays: days)
        hour = Int(rest / 3600)
        minute = Int(rest % 3600 / 60)
    }

    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int64 {
        let y = Int64(month <= 2 ? year - 1 : year)
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let m = Int64(month)
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + Int64(day) - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    /// Seconds since 1970 reading this wall-clock time as UTC.
    var epochSeconds: Int64 {
        Civil.daysFromCivil(year: year, month: month, day: day) * 86_400 + Int64(hour * 3600 + minute * 60)
    }

    /// 0 = Sunday.
    static func weekday(year: Int, month: Int, day: Int) -> Int {
        let days = daysFromCivil(year: year, month: month, day: day)
        return Int(((days % 7) + 11) % 7)  // 1970-01-01 was a Thursday (4)
    }

    static func daysInMonth(year: Int, month: Int) -> Int {
        switch month {
        case 2: return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }
}
