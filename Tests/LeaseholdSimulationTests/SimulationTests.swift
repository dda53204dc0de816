import Foundation
import LeaseholdTesting
import Testing

@testable import Leasehold

/// Runs many seeded schedules, split over the available cores; each schedule is independent
/// and deterministic, so the split does not change any result.
///
/// The work runs on dedicated threads, not in the cooperative pool: a minute of synchronous
/// CPU work there would starve every other test running at the same time (their timers,
/// their I/O), which then fail for reasons that have nothing to do with what they check.
func runSchedules(seeds: [UInt64], config: SimConfig) async -> [ScheduleResult] {
    let workers = max(1, min(ProcessInfo.processInfo.activeProcessorCount, 8))
    let parts = await withTaskGroup(of: [ScheduleResult].self) { group in
        for w in 0..<workers {
            let mine = stride(from: w, to: seeds.count, by: workers).map { seeds[$0] }
            group.addTask {
                await withCheckedContinuation { continuation in
                    let thread = Thread {
                        continuation.resume(returning: mine.map { Simulation(seed: $0, config: config).run() })
                    }
                    thread.stackSize = 8 << 20
                    thread.start()
                }
            }
        }
        var all: [ScheduleResult] = []
        for await part in group { all += part }
        return all
    }
    return parts.sorted { $0.seed < $1.seed }
}

private func environment(_ name: String) -> String? { ProcessInfo.processInfo.environment[name] }

@Suite(
    "Simulation: lease engine under faults", .enabled(if: HeavyTests.enabled, Comment(rawValue: HeavyTests.skipReason)))
struct SimulationTests {
    /// Default sized so CI (debug build, 2 cores) runs ≥ 10,000 schedules in under 2 minutes.
    static let defaultSchedules = 10_000

    @Test("no split brain, monotonic tokens and bounded failover over many random schedules")
    func randomSchedules() async {
        let clock = ContinuousClock()
        let started = clock.now
        let seeds: [UInt64]
        if let one = environment("LEASEHOLD_SIM_SEED").flatMap(UInt64.init) {
            seeds = [one]
        } else {
            let count = environment("LEASEHOLD_SIM_SCHEDULES").flatMap(Int.init) ?? Self.defaultSchedules
            let base = environment("LEASEHOLD_SIM_BASE_SEED").flatMap(UInt64.init) ?? 1
            seeds = (0..<UInt64(count)).map { base + $0 }
        }
        let replaying = seeds.count == 1
        var config = SimConfig()
        config.trace = replaying
        let results = await runSchedules(seeds: seeds, config: config)
        let faults = results.map(\.faults).reduce(FaultCounts(), +)
        let failing = results.filter { !$0.violations.isEmpty }
        let violations = failing.map(\.violations.count).reduce(0, +)
        let events = results.map(\.events).reduce(0, +)
        let leaderships = results.map(\.leaderships).reduce(0, +)
        let elapsed = clock.now - started
        print(
            "[simulation] schedules=\(results.count) events=\(events) leaderships=\(leaderships) "
                + "faults=\(faults.total) [\(faults.summary)] violations=\(violations) "
                + "failing-seeds=\(failing.prefix(20).map(\.seed)) elapsed=\(elapsed)")
        if replaying, let only = results.first {
            print("[simulation] seed \(only.seed): \(only.description)")
            for line in only.trace { print("  \(line)") }
        }
        for result in failing.prefix(5) {
            Issue.record(
                """
                seed \(result.seed) (\(result.description)) violated:
                \(result.violations.prefix(5).joined(separator: "\n"))
                replay: LEASEHOLD_SIM_SEED=\(result.seed) swift test --filter Simulation
                """)
        }
    }

    @Test("the same seed replays exactly")
    func deterministic() async {
        let a = Simulation(seed: 4242, config: SimConfig()).run()
        let b = Simulation(seed: 4242, config: SimConfig()).run()
        #expect(a.events == b.events)
        #expect(a.leaderships == b.leaderships)
        #expect(a.violations == b.violations)
        #expect(a.faults.total == b.faults.total)
    }

    @Test("the checker catches a broken configuration: no drift allowance, no margin, slow clocks")
    func checkerCatchesBrokenConfig() async {
        var config = SimConfig()
        config.drift = 0
        config.margin = .zero
        config.forcedClockError = -0.03  // every member's clock 3 % slow: it believes its lease lasts longer
        let results = await runSchedules(seeds: Array(1...150), config: config)
        let overlaps = results.flatMap(\.violations).filter { $0.hasPrefix("(a)") }
        print(
            "[simulation] broken config: \(overlaps.count) split-brain overlaps in \(results.count) schedules; e.g. \(overlaps.first ?? "-")"
        )
        #expect(!overlaps.isEmpty, "with drift 0, margin 0 and 3 % slow clocks the checker must find a split brain")
    }

    @Test("the checker catches a member clock slower than the configured bound")
    func checkerCatchesClockBeyondBound() async {
        var config = SimConfig()
        config.forcedClockError = -0.08  // 8 % slow against a 1 % drift allowance
        let results = await runSchedules(seeds: Array(1...150), config: config)
        let overlaps = results.flatMap(\.violations).filter { $0.hasPrefix("(a)") }
        print("[simulation] clock beyond bound: \(overlaps.count) split-brain overlaps in \(results.count) schedules")
        #expect(!overlaps.isEmpty)
    }

    @Test("clock rates right at the drift bound are safe")
    func clocksAtTheBound() async {
        for error in [-0.01, 0.01] {
            var config = SimConfig()
            config.forcedClockError = error
            let results = await runSchedules(seeds: Array(1...150), config: config)
            let violations = results.flatMap(\.violations)
            #expect(violations.isEmpty, "clock error \(error): \(violations.prefix(3))")
        }
    }
}
