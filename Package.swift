// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Leasehold",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Leasehold", targets: ["Leasehold"]),
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
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        // C shims: they know nothing of leases.
        .systemLibrary(name: "CHiredis", path: "Sources/CHiredis"),
        .systemLibrary(name: "CLibYAML", path: "Sources/CLibYAML"),
        .target(name: "CProcessSupervisor"),
        .target(name: "RedisClient", dependencies: ["CHiredis"]),
        // The library users import.
        .target(
            name: "Leasehold",
            dependencies: [
                "RedisClient", "CLibYAML", "CProcessSupervisor",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // The daemon as a library, so users can build their own with their own handlers.
        .target(
            name: "LeaseholdDaemon",
            dependencies: [
                "Leasehold", "RedisClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
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
        .executableTarget(name: "LeaseholdBench", dependencies: ["Leasehold", "RedisClient", "LeaseholdTestSupport"]),
        .executableTarget(
            name: "FencedCounterExample", dependencies: ["LeaseholdDaemon"], path: "Examples/FencedCounter",
            exclude: ["jobs.yaml"]
        ),

        .target(name: "LeaseholdTestSupport", dependencies: ["RedisClient"], path: "Tests/LeaseholdTestSupport"),
        .testTarget(name: "RedisClientTests", dependencies: ["RedisClient", "LeaseholdTestSupport"]),
        .testTarget(name: "LeaseholdTests", dependencies: ["Leasehold"]),
        .testTarget(name: "LeaseholdSimulationTests", dependencies: ["Leasehold"]),
        .testTarget(
            name: "LeaseholdIntegrationTests",
            dependencies: ["Leasehold", "RedisClient", "LeaseholdTestSupport"]
        ),
        .testTarget(
            name: "LeaseholdDaemonTests",
            dependencies: ["LeaseholdDaemon", "LeaseholdCLI", "Leasehold", "RedisClient", "LeaseholdTestSupport"]
        ),
    ]
)
