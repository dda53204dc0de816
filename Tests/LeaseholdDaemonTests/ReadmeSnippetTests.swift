import Leasehold
import LeaseholdDaemon
import Logging
import RedisClient
import ServiceLifecycle
import Testing

// The library examples of README.md, kept compiling: if an API they use changes, this file
// stops building and the README gets fixed with it.

private struct PublishReport: JobHandler {
    static let kind = "publish-report"
    init(config: HandlerConfig) throws {}

    func run(_ context: LeaseContext) async throws {
        try context.checkLeadership()
        // Pass context.token to the store you write to: it rejects lower tokens.
        _ = try await context.redis.set("reports:latest", to: "token \(context.token)")
    }
}

/// README's leader-election example: the user's service beside the manager.
private struct Billing: Service {
    let manager: LeaseManager

    func run() async throws {
        for await event in manager.events.cancelOnGracefulShutdown() {
            if case .acquired(let grant, _, _) = event { print("leading \(grant.job) with token \(grant.token)") }
        }
        // The work has stopped: give the leases back so a standby takes over at once.
        manager.releaseAll()
    }
}

/// README's leader-election example, up to the point where it would run the group.
private func leaderElectionExample() throws -> (LeaseManager, ServiceGroup) {
    let manager = LeaseManager(
        configuration: .init(
            redis: RedisConfiguration(endpoint: try RedisEndpoint(url: "redis://127.0.0.1:6379")),
            member: .init(owner: OwnerID(member: "web-1"))),
        jobs: [LeaseJob(name: "billing", timing: LeaseTiming(ttl: .seconds(10)))])
    let group = ServiceGroup(
        services: [manager, Billing(manager: manager)], gracefulShutdownSignals: [.sigterm],
        logger: Logger(label: "billing"))
    return (manager, group)
}

@Test("README examples compile and register")
func readmeExamples() throws {
    var registry = HandlerRegistry.builtIn
    registry.register(PublishReport.self)
    #expect(registry.kinds.contains("publish-report"))
    #expect(try leaderElectionExample().0.jobs.map(\.name) == ["billing"])
}
