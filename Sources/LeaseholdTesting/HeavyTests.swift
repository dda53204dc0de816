#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// The switch for suites that take minutes of CPU (the seeded fault suite, the schedule
/// simulator): they run only where asked, so plain `swift test` on a busy 2-core machine does
/// not starve the timing-sensitive suites beside them. `make test` runs them in passes of their
/// own with `LEASEHOLD_HEAVY_TESTS=1`.
public enum HeavyTests {
    /// The environment variable that turns the heavy suites on.
    public static let environmentVariable = "LEASEHOLD_HEAVY_TESTS"

    /// Whether this run asked for the heavy suites.
    public static var enabled: Bool {
        ProcessInfo.processInfo.environment[environmentVariable].map { $0 == "1" || $0 == "true" } ?? false
    }

    /// Why they were skipped, for the test report.
    public static let skipReason = "heavy suite: set LEASEHOLD_HEAVY_TESTS=1 (make test does) to run it"
}
