import Testing

@testable import Leasehold

@Test(arguments: [
    ("250ms", Duration.milliseconds(250)), ("10s", .seconds(10)), ("2m", .seconds(120)), ("1h", .seconds(3600)),
    ("1m30s", .seconds(90)), ("1h2m3s500ms", .milliseconds(3_723_500)), ("0s", .zero), ("90s", .seconds(90)),
    ("1h30m", .seconds(5400)), ("48h", .seconds(172_800)), ("007s", .seconds(7)),
])
func goodDurations(_ text: String, _ expected: Duration) {
    #expect(CatalogValue.duration(text) == expected)
}

@Test(arguments: [
    "", "10", "-5s", "+5s", "10x", "1.5s", "s", "10 s", " 10s", "10s ", "1s1m", "1m1m", "1d", "10S", "ms", "1h2", "abc",
    "99999999999999999999s", "9223372036854775807h", "10s-", "1m 30s",
])
func badDurations(_ text: String) {
    #expect(CatalogValue.duration(text) == nil)
}

@Test(arguments: [
    (Duration.milliseconds(250), "250ms"), (.seconds(90), "1m30s"), (.seconds(10), "10s"), (.zero, "0s"),
    (.milliseconds(3_723_500), "1h2m3s500ms"), (.seconds(7200), "2h"), (.seconds(-90), "-1m30s"),
])
func formatting(_ d: Duration, _ text: String) {
    #expect(CatalogValue.text(d) == text)
}

@Test func formatParseRoundTrip() {
    for ms in [0, 1, 999, 1000, 1001, 59_999, 60_000, 3_599_999, 3_600_000, 86_400_123, 123_456_789] {
        let d = Duration.milliseconds(ms)
        #expect(CatalogValue.duration(CatalogValue.text(d)) == d, "\(ms)ms")
    }
    // Sub-millisecond parts are truncated, not rounded up.
    #expect(CatalogValue.text(.seconds(10) / 3) == "3s333ms")
}

@Test(arguments: [("1%", 0.01), ("0.5%", 0.005), ("10%", 0.1), ("0%", 0.0)])
func goodPercentages(_ text: String, _ expected: Double) {
    #expect(CatalogValue.percentage(text) == expected)
}

@Test(arguments: ["1", "%", "-1%", "1.%", ".5%", "1e1%", "inf%", "1,5%", "1 %", "abc%"])
func badPercentages(_ text: String) {
    #expect(CatalogValue.percentage(text) == nil)
}
