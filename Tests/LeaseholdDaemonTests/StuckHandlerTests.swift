import Foundation
import Leasehold
import LeaseholdDaemon
import LeaseholdTesting
import Logging
import Prometheus
import RedisClient
import Synchronization
import Testing

/// Whether the stubborn handlers of a test may return (keyed by the test's namespace).
private let stubbornGates = Mutex<[String: Bool]>([:])
/// The namespaces whose stubborn handler on member `a` has started.
private let stubbornRunning = Mutex<Set<String>>([])

/// A continuous handler that ignores cancellation on member `a` until its gate opens, as
/// in-process code that blocks in a library call does; on any other member it behaves.
private struct StubbornHandler: JobHandler {
    static let kind = "stubborn"
    let namespace: String
    init(config: HandlerConfig) throws { namespace = try config.string("namespace") ?? "" }

    func run(_ context: LeaseContext) async throws {
        guard context.member == "a" else {
            while !Task.isCancelled { try await Task.sleep(for: .milliseconds(50)) }
            return
        }
        stubbornRunning.withLock { _ = $0.insert(namespace) }
        while stubbornGates.withLock({ $0[namespace] }) != true {
            // A wait that cancellation cannot cut short (Task.sleep would return at once once
            // cancelled, and the loop would spin on a cooperative thread, starving the process).
            await withCheckedContinuation { continuation in
                DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(20)) { continuation.resume() }
            }
        }
    }
}

/// A handler that never returns after losing its lease must not keep the job from running:
/// its member withdraws from the job until the handler returns.
@Suite(.timeLimit(.minutes(2)))
struct StuckHandlerTests {
    static func member(
        _ name: String, namespace: String, redis: RedisServerProcess, registry: PrometheusCollectorRegistry,
        logs: ObsLogCapture
    ) throws -> LeaseholdService {
        var handlers = HandlerRegistry.builtIn
        handlers.register(StubbornHandler.self)
        let config = try YAMLReader.parse(text: "{ namespace: \(namespace) }", file: "<memory>")
        let catalog = Catalog(
            namespace: namespace,
            jobs: [
                JobSpec(
                    name: "sticky", handler: "stubborn", schedule: .continuous, lease: .seconds(2), placement: .any,
                    config: config)
            ],
            path: "<memory>")
        return try LeaseholdService(
            configuration: .init(
                catalog: catalog, redis: redis.endpoint, memberName: name, shutdownTimeout: .seconds(2)),
            registry: handlers, logger: logs.logger(),
            metrics: LeaseholdMetrics(factory: PrometheusMetricsFactory(registry: registry)))
    }

    @Test func aStuckHandlersMemberReleasesTheJobUntilTheHandlerReturns() async throws {
        let redis = try await RedisServerProcess()
        let namespace = "stuck-\(UInt32.random(in: 0 ... .max))"
        let keys = LeaseKeys(namespace: namespace)
        let registry = PrometheusCollectorRegistry()
        let logs = ObsLogCapture(format: .json)
        let a = try Self.member("a", namespace: namespace, redis: redis, registry: registry, logs: logs)
        let runA = Task { try await a.run() }
        let diagnostics = { logs.lines.suffix(20).joined(separator: "\n") + "\n" + registry.emitToString() }
        func stuck() throws -> Double? {
            try obsParsePrometheus(registry.emitToString()).value("leasehold_handler_stuck", ["job": "sticky"])
        }

        let first = try await eventually("a leads", within: .seconds(20), diagnostics: diagnostics) {
            try await redis.lease("sticky", keys: keys)
        }
        #expect(first.owner.member == "a")
        try await eventually("a's handler running", within: .seconds(20), diagnostics: diagnostics) {
            stubbornRunning.withLock { $0.contains(namespace) }
        }
        // Someone deletes the lease: a loses it, its handler ignores the stop. a is the only
        // member, so it takes the lease straight back, and without the fix it kept it (and
        // renewed it) forever while the job never ran again.
        _ = try await redis.command("DEL", keys.lease("sticky"))
        try await eventually("the handler counted as stuck", within: .seconds(20), diagnostics: diagnostics) {
            try stuck() == 1
        }
        try await eventually("a gives the job up", within: .seconds(10), diagnostics: diagnostics) {
            try await redis.lease("sticky", keys: keys)?.owner.member != "a"
        }
        // While a is withdrawn, another member leads the job.
        let b = try Self.member(
            "b", namespace: namespace, redis: redis, registry: PrometheusCollectorRegistry(), logs: logs)
        let runB = Task { try await b.run() }
        let second = try await eventually("b leads", within: .seconds(20), diagnostics: diagnostics) {
            try await redis.lease("sticky", keys: keys).flatMap { $0.owner.member == "b" ? $0 : nil }
        }
        #expect(second.token > first.token)
        try await Task.sleep(for: .seconds(3))  // a must not take it back while stuck
        #expect(try await redis.lease("sticky", keys: keys)?.owner.member == "b")

        // The handler returns at last: a competes again (b keeps the lease it holds).
        stubbornGates.withLock { $0[namespace] = true }
        try await eventually("the stuck gauge back at 0", within: .seconds(10), diagnostics: diagnostics) {
            try stuck() == 0
        }
        #expect(logs.lines.contains { $0.contains("handler stuck") })
        #expect(logs.lines.contains { $0.contains("stuck handler returned") })
        await b.stop()
        try await eventually("a leads again once b is gone", within: .seconds(20), diagnostics: diagnostics) {
            try await redis.lease("sticky", keys: keys)?.owner.member == "a"
        }
        await a.stop()
        _ = try await runA.value
        _ = try await runB.value
    }
}
