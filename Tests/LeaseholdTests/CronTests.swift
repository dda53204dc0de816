import Foundation
import Testing

@testable import Leasehold

/// Parses an ISO-8601 UTC instant with Foundation, independent of the cron code's own calendar math.
func instant(_ text: String) -> Date {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime]
    guard let d = f.date(from: text) else { fatalError("bad test date \(text)") }
    return d
}

struct CronCase: CustomTestStringConvertible, Sendable {
    let expression: String
    let zone: String
    let after: String
    let expected: String?
    let why: String
    var testDescription: String { "\(expression) [\(zone)] after \(after): \(why)" }
}

let cronCases: [CronCase] = [
    CronCase(
        expression: "* * * * *", zone: "UTC", after: "2026-01-01T00:00:30Z", expected: "2026-01-01T00:01:00Z",
        why: "next whole minute"),
    CronCase(
        expression: "*/5 * * * *", zone: "UTC", after: "2026-01-01T00:03:00Z", expected: "2026-01-01T00:05:00Z",
        why: "step"),
    CronCase(
        expression: "0 3 * * *", zone: "UTC", after: "2026-01-01T03:00:00Z", expected: "2026-01-02T03:00:00Z",
        why: "strictly after"),
    CronCase(
        expression: "1-10/2 * * * *", zone: "UTC", after: "2026-01-01T00:09:00Z", expected: "2026-01-01T01:01:00Z",
        why: "range step wraps to next hour"),
    CronCase(
        expression: "0 0 1 jan *", zone: "UTC", after: "2026-06-01T00:00:00Z", expected: "2027-01-01T00:00:00Z",
        why: "month name, next year"),
    CronCase(
        expression: "0 0 29 2 *", zone: "UTC", after: "2026-03-01T00:00:00Z", expected: "2028-02-29T00:00:00Z",
        why: "leap day"),
    CronCase(
        expression: "0 0 29 2 *", zone: "UTC", after: "2096-03-01T00:00:00Z", expected: "2104-02-29T00:00:00Z",
        why: "2100 is not a leap year"),
    CronCase(expression: "0 0 30 2 *", zone: "UTC", after: "2026-01-01T00:00:00Z", expected: nil, why: "impossible"),
    CronCase(
        expression: "0 0 31 4,6,9,11 *", zone: "UTC", after: "2026-01-01T00:00:00Z", expected: nil,
        why: "impossible list"),
    CronCase(
        expression: "0 0 15 * mon", zone: "UTC", after: "2026-03-10T00:00:00Z", expected: "2026-03-15T00:00:00Z",
        why: "dom/dow OR: the 15th (a Sunday)"),
    CronCase(
        expression: "0 0 15 * mon", zone: "UTC", after: "2026-03-15T00:00:00Z", expected: "2026-03-16T00:00:00Z",
        why: "dom/dow OR: the Monday after"),
    CronCase(
        expression: "0 0 */2 * mon", zone: "UTC", after: "2026-03-01T00:00:00Z", expected: "2026-03-09T00:00:00Z",
        why: "dom starting with * means AND: odd-day Mondays"),
    CronCase(
        expression: "0 9 * * 7", zone: "UTC", after: "2026-03-02T00:00:00Z", expected: "2026-03-08T09:00:00Z",
        why: "7 is Sunday"),
    CronCase(
        expression: "0 9 * * MON-fri", zone: "UTC", after: "2026-03-06T10:00:00Z", expected: "2026-03-09T09:00:00Z",
        why: "names, case-insensitive, weekend skipped"),
    CronCase(
        expression: "@hourly", zone: "UTC", after: "2026-01-01T00:00:00Z", expected: "2026-01-01T01:00:00Z",
        why: "macro"),
    CronCase(
        expression: "@yearly", zone: "UTC", after: "2026-01-01T00:00:00Z", expected: "2027-01-01T00:00:00Z",
        why: "macro"),
    CronCase(
        expression: "59 23 31 12 *", zone: "UTC", after: "2026-12-31T23:59:00Z", expected: "2027-12-31T23:59:00Z",
        why: "year end"),
    CronCase(
        expression: "0 0 31 * *", zone: "UTC", after: "2026-04-01T00:00:00Z", expected: "2026-05-31T00:00:00Z",
        why: "skips 30-day month"),
    CronCase(
        expression: "0 3 * * *", zone: "Europe/Berlin", after: "2026-01-10T12:00:00Z", expected: "2026-01-11T02:00:00Z",
        why: "CET is UTC+1"),
    // Europe/Berlin 2026: 29 Mar 02:00 CET -> 03:00 CEST; 25 Oct 03:00 CEST -> 02:00 CET.
    CronCase(
        expression: "30 2 * * *", zone: "Europe/Berlin", after: "2026-03-28T12:00:00Z",
        expected: "2026-03-29T01:00:00Z", why: "spring gap: 02:30 fires at 03:00 CEST"),
    CronCase(
        expression: "30 2 * * *", zone: "Europe/Berlin", after: "2026-03-29T01:00:00Z",
        expected: "2026-03-30T00:30:00Z", why: "day after the gap, CEST"),
    CronCase(
        expression: "0 3 * * *", zone: "Europe/Berlin", after: "2026-03-28T12:00:00Z", expected: "2026-03-29T01:00:00Z",
        why: "03:00 exists on spring day"),
    CronCase(
        expression: "30 2 * * *", zone: "Europe/Berlin", after: "2026-10-24T12:00:00Z",
        expected: "2026-10-25T00:30:00Z", why: "fall back: first 02:30 (CEST)"),
    CronCase(
        expression: "30 2 * * *", zone: "Europe/Berlin", after: "2026-10-25T00:30:00Z",
        expected: "2026-10-26T01:30:00Z", why: "fall back: second 02:30 (CET) skipped"),
    CronCase(
        expression: "*/30 * * * *", zone: "Europe/Berlin", after: "2026-10-25T00:45:00Z",
        expected: "2026-10-25T02:00:00Z", why: "repeated hour not re-run"),
    // America/New_York 2026: 8 Mar 02:00 EST -> 03:00 EDT; 1 Nov 02:00 EDT -> 01:00 EST.
    CronCase(
        expression: "30 2 * * *", zone: "America/New_York", after: "2026-03-07T12:00:00Z",
        expected: "2026-03-08T07:00:00Z", why: "spring gap: 02:30 fires at 03:00 EDT"),
    CronCase(
        expression: "0 * * * *", zone: "America/New_York", after: "2026-03-08T06:30:00Z",
        expected: "2026-03-08T07:00:00Z", why: "hourly across the gap: 02:00 -> 03:00 EDT"),
    CronCase(
        expression: "0 * * * *", zone: "America/New_York", after: "2026-03-08T07:00:00Z",
        expected: "2026-03-08T08:00:00Z", why: "03:00 EDT fires once"),
    CronCase(
        expression: "30 1 * * *", zone: "America/New_York", after: "2026-10-31T12:00:00Z",
        expected: "2026-11-01T05:30:00Z", why: "fall back: first 01:30 (EDT)"),
    CronCase(
        expression: "30 1 * * *", zone: "America/New_York", after: "2026-11-01T05:30:00Z",
        expected: "2026-11-02T06:30:00Z", why: "fall back: second 01:30 (EST) skipped"),
    CronCase(
        expression: "0 * * * *", zone: "America/New_York", after: "2026-11-01T05:00:00Z",
        expected: "2026-11-01T07:00:00Z", why: "hourly: repeated 01:00 EST skipped"),
]

@Test(arguments: cronCases)
func cronNextFire(_ c: CronCase) throws {
    let zone = try #require(TimeZone(identifier: c.zone))
    let cron = try CronSchedule(expression: c.expression, timeZone: zone)
    #expect(cron.nextFire(after: instant(c.after)) == c.expected.map(instant))
}

@Test func cronTableIsLargeEnough() {
    #expect(Set(cronCases.map(\.expression)).count >= 15)
}

@Test func impossibleExpressionTerminatesQuickly() throws {
    let cron = try CronSchedule(expression: "0 0 30 2 *")
    let clock = ContinuousClock()
    let elapsed = clock.measure { #expect(cron.nextFire(after: instant("2026-01-01T00:00:00Z")) == nil) }
    #expect(elapsed < .seconds(2))
}

@Test func sparseExpressionIsFast() throws {
    // A minute-by-minute scan would take ~4 million steps to reach the next leap day in 2104.
    let cron = try CronSchedule(expression: "0 0 29 2 *", timeZone: TimeZone(identifier: "Europe/Berlin")!)
    var t = instant("2026-01-01T00:00:00Z")
    let clock = ContinuousClock()
    let elapsed = clock.measure {
        for _ in 0..<50 { t = cron.nextFire(after: t)! }
    }
    #expect(elapsed < .seconds(2))
    #expect(t > instant("2200-01-01T00:00:00Z"))
}

@Test(arguments: [
    ("60 * * * *", "minute field: value 60 out of range 0-59"),
    ("* 24 * * *", "hour field: value 24 out of range 0-23"),
    ("* * 0 * *", "day-of-month field: value 0 out of range 1-31"),
    ("* * * 13 *", "month field: value 13 out of range 1-12"),
    ("* * * * 8", "day-of-week field: value 8 out of range 0-7"),
    ("*/0 * * * *", "minute field: invalid step '0' in '*/0': expected a positive number"),
    ("5-1 * * * *", "minute field: range '5-1' is backwards: the start must not be after the end"),
    ("* * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 4"),
    ("* * * * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 6"),
    ("", "expected 5 fields (minute hour day-of-month month day-of-week), got 0"),
    (
        "@reboot",
        "unknown macro '@reboot': expected one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly"
    ),
    (",1 * * * *", "minute field: empty list item in ',1'"),
    ("* * * foo *", "month field: invalid value 'foo': expected a number 1-12 or a name jan-dec"),
    ("1/2/3 * * * *", "minute field: invalid step in '1/2/3': expected at most one '/'"),
])
func badCron(_ expression: String, _ message: String) {
    #expect(throws: CronError.self) { _ = try CronSchedule(expression: expression) }
    do {
        _ = try CronSchedule(expression: expression)
    } catch {
        #expect(error.description == message)
    }
}

@Test func stepFromValueRunsToTheEnd() throws {
    // "50/5" = 50-59/5, as cronie reads it.
    let cron = try CronSchedule(expression: "50/5 * * * *")
    #expect(cron.nextFire(after: instant("2026-01-01T00:51:00Z")) == instant("2026-01-01T00:55:00Z"))
    #expect(cron.nextFire(after: instant("2026-01-01T00:55:00Z")) == instant("2026-01-01T01:50:00Z"))
}
