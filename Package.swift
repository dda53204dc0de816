// swift-tools-version:6.2
import PackageDescription

// House rules for every Swift target of this package: a warning fails the build. SwiftPM
// ignores warning settings of packages used as dependencies, so users are not affected.
let houseRules: [SwiftSetting] = [.treatAllWarnings(as: .error)]

let package = Package(
    name: "Leasehold",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Leasehold", targets: ["Leasehold"]),
        .library(name: "LeaseholdElection", targets: ["LeaseholdElection"]),
        .library(name: "LeaseholdDaemon", targets: ["LeaseholdDaemon"]),
        .library(name: "RedisClient", targets: ["RedisClient"]),
        .executable(name: "leaseholdd", targets: ["leaseholdd"]),
        .executable(name: "leasehold", targets: ["leasehold"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        // C shims: they know nothing of leases.
        .systemLibrary(name: "CHiredis", path: "Sources/CHiredis"),
        .systemLibrary(name: "CLibYAML", path: "Sources/CLibYAML"),
        .target(name: "CProcessSupervisor"),
        // TLS sessions over OpenSSL (Debian libssl-dev) for the transport under hiredis 0.14.
        .target(name: "CRedisTLS", linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto")]),
        .target(name: "RedisClient", dependencies: ["CHiredis", "CRedisTLS"]),
        // Leader election on its own: Redis client, engine, placement, scripts, LeaseManager.
        // It must never depend on CLibYAML or CProcessSupervisor (checked by
        // scripts/check-modules.py in `make lint` and `make test`).
        .target(
            name: "LeaseholdElection",
            dependencies: [
                "RedisClient",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The job framework on top of it: catalog, schedules, runtime, handlers, supervisor.
        // `import Leasehold` re-exports the election.
        .target(
            name: "Leasehold",
            dependencies: [
                "LeaseholdElection", "RedisClient", "CLibYAML", "CProcessSupervisor",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ]
        ),
        // The daemon as a library, so users can build their own with their own handlers.
        .target(
            name: "LeaseholdDaemon",
            dependencies: [
                "Leasehold", "LeaseholdElection", "RedisClient", "CProcessSupervisor",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .executableTarget(name: "leaseholdd", dependencies: ["LeaseholdDaemon"]),
        // The operator CLI: its logic in a library so table output can be tested.
        .target(
            name: "LeaseholdCLI",
            dependencies: [
                "Leasehold", "RedisClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(name: "leasehold", dependencies: ["LeaseholdCLI"]),
        .executableTarget(
            name: "LeaseholdBench",
            dependencies: [
                "Leasehold", "RedisClient", "LeaseholdTesting", .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "FencedCounterExample", dependencies: ["LeaseholdDaemon", "Leasehold", "RedisClient"],
            path: "Examples/FencedCounter",
            exclude: ["jobs.yaml"]
        ),
        // A user-built daemon whose handler traps on request: the crash-release tests run it.
        .executableTarget(
            name: "TrappingHandlerExample", dependencies: ["LeaseholdDaemon", "Leasehold"],
            path: "Examples/TrappingHandler"
        ),

        // What the tests, the fault suite and the bench share: real redis-server processes,
        // the fault proxy, the daemon process, in-process members, the fake-clock engine
        // driver and `eventually` (HummingbirdTesting is the model).
        .target(
            name: "LeaseholdTesting",
            dependencies: ["LeaseholdElection", "RedisClient", .product(name: "Logging", package: "swift-log")]
        ),
        .testTarget(name: "RedisClientTests", dependencies: ["RedisClient", "CHiredis", "LeaseholdTesting"]),
        .testTarget(name: "LeaseholdTests", dependencies: ["Leasehold", "RedisClient", "LeaseholdTesting"]),
        .testTarget(name: "LeaseholdSimulationTests", dependencies: ["Leasehold", "LeaseholdTesting"]),
        .testTarget(
            name: "LeaseholdIntegrationTests",
            dependencies: [
                "Leasehold", "RedisClient", "LeaseholdTesting", .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The daemon end to end: real leaseholdd processes, their HTTP endpoints, README code.
        .testTarget(
            name: "LeaseholdDaemonTests",
            dependencies: [
                "LeaseholdDaemon", "Leasehold", "RedisClient", "LeaseholdTesting",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The operator CLI against a real Redis and in-process members.
        .testTarget(
            name: "LeaseholdCLITests", dependencies: ["LeaseholdCLI", "Leasehold", "RedisClient", "LeaseholdTesting"]),
        // The multi-process fault suite and the regressions it found (`make test` runs the
        // seeded schedules on their own).
        .testTarget(name: "LeaseholdFaultTests", dependencies: ["Leasehold", "RedisClient", "LeaseholdTesting"]),
    ]
)

// Every Swift target of this package follows the house rules (the C targets have none).
for target in package.targets
where target.type != .system && target.name != "CProcessSupervisor" && target.name != "CRedisTLS" {
    target.swiftSettings = (target.swiftSettings ?? []) + houseRules
}
