// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Leasehold",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Leasehold", targets: ["Leasehold"]),
        .library(name: "RedisClient", targets: ["RedisClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
    ],
    targets: [
        .systemLibrary(name: "CHiredis", path: "Sources/CHiredis"),
        .systemLibrary(name: "CLibYAML", path: "Sources/CLibYAML"),
        .target(name: "RedisClient", dependencies: ["CHiredis"]),
        .target(name: "CProcessSupervisor"),
        .target(
            name: "Leasehold",
            dependencies: [
                "RedisClient", "CLibYAML", "CProcessSupervisor",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        .target(name: "LeaseholdTestSupport", dependencies: ["RedisClient"], path: "Tests/LeaseholdTestSupport"),
        .testTarget(name: "RedisClientTests", dependencies: ["RedisClient", "LeaseholdTestSupport"]),
        .testTarget(name: "LeaseholdTests", dependencies: ["Leasehold"]),
        .testTarget(
            name: "LeaseholdIntegrationTests",
            dependencies: ["Leasehold", "RedisClient", "LeaseholdTestSupport"]
        ),
    ]
)
