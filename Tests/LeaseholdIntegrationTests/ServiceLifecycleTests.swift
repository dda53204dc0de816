import LeaseholdTesting
import Logging
import RedisClient
import ServiceLifecycle
import Testing

@testable import Leasehold

/// README's pattern: the user's own service reads the events until graceful shutdown, then,
/// its work stopped, gives every lease back.
private struct ReleasingWorker: Service {
    let manager: LeaseManager

    func run() async throws {
        for await _ in manager.events.cancelOnGracefulShutdown() {}
        manager.releaseAll()
    }
}

/// `LeaseManager` as a swift-service-lifecycle `Service`: graceful shutdown releases,
/// cancellation abandons.
@Suite("LeaseManager as a Service", .timeLimit(.minutes(1)))
struct ServiceLifecycleTests {
    private func manager(_ server: RedisServerProcess, _ name: String) -> LeaseManager {
        LeaseManager(
            configuration: .init(
                redis: server.configuration(), keys: keys, member: .init(owner: OwnerID(member: name))),
            jobs: jobs(["a", "b"], ttl: .seconds(10)), logger: quietLogger("service-test"))
    }

    private func bothLed(by manager: LeaseManager, on server: RedisServerProcess) async throws {
        try await eventually("both leases held by \(manager.owner)") {
            let leases = try await server.leases(["a", "b"], keys: keys)
            return leases.count == 2 && leases.values.allSatisfy { $0.owner == manager.owner }
        }
    }

    /// When the member announced its leave (ms since the epoch); nil while it counts as live.
    private func leftAt(_ member: String, on server: RedisServerProcess) async throws -> Int64? {
        try await server.command("HGET", keys.member(member), "left_at").string.flatMap { Int64($0) }
    }

    @Test func gracefulShutdownOfTheGroupReleasesEveryLeaseAndLeaves() async throws {
        let server = try await RedisServerProcess()
        let manager = manager(server, "graceful")
        let group = ServiceGroup(
            services: [manager, ReleasingWorker(manager: manager)], gracefulShutdownSignals: [],
            cancellationSignals: [],
            logger: quietLogger("service-test"))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            try await bothLed(by: manager, on: server)
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        #expect(try await server.leases(["a", "b"], keys: keys).isEmpty, "a lease survived a graceful shutdown")
        // The member left at once instead of waiting for its heartbeat to lapse.
        #expect(try await leftAt("graceful", on: server) != nil)
    }

    @Test func cancellingRunAbandonsEveryLeaseAsACrashWould() async throws {
        let server = try await RedisServerProcess()
        let manager = manager(server, "cancelled")
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await manager.run() }
            try await bothLed(by: manager, on: server)
            let cancelledAt = ContinuousClock.now
            tasks.cancelAll()
            _ = try? await tasks.next()
            // `run()` returns promptly once cancelled: nothing waits for a release.
            #expect(
                ContinuousClock.now - cancelledAt < .seconds(5),
                "run() took \(ContinuousClock.now - cancelledAt) to return")
        }
        let leases = try await server.leases(["a", "b"], keys: keys)
        #expect(
            leases.count == 2 && leases.values.allSatisfy { $0.owner == manager.owner },
            "leases after cancellation: \(leases)")
        #expect(try await server.leasePTTL("a") > 0)
        #expect(try await leftAt("cancelled", on: server) == nil, "a cancelled member must not announce a leave")
    }
}
