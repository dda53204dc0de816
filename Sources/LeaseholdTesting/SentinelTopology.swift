import Foundation
import RedisClient

/// A primary, replicas and sentinels on loopback for tests: `redis-server --replicaof` for
/// the replicas, `redis-server sentinel.conf --sentinel` for the sentinels (each with its own
/// writable config: `sentinel monitor <master> 127.0.0.1 <primary> <quorum>`, 1 s
/// down-after, 5 s failover timeout). Everything is SIGKILLed when the topology is
/// deinitialised; use ``withSentinelTopology(replicas:sentinels:sentinelPassword:_:)``.
public final class SentinelTopology: Sendable {
    /// The master name the sentinels monitor.
    public let master = "m"
    /// The data nodes: the first primary, then the replicas.
    public let servers: [RedisServerProcess]
    /// The sentinels.
    public let sentinels: [RedisServerProcess]
    /// The sentinels' `requirepass`, if any.
    public let sentinelPassword: String?

    /// Starts the data nodes, waits until the replicas are in sync, then the sentinels, and
    /// waits until every sentinel sees every replica and the other sentinels.
    public init(replicas: Int = 2, sentinels sentinelCount: Int = 3, sentinelPassword: String? = nil) async throws {
        self.sentinelPassword = sentinelPassword
        let primary = try await RedisServerProcess()
        var servers = [primary]
        for _ in 0..<replicas {
            servers.append(
                try await RedisServerProcess(
                    .init(extraArguments: ["--replicaof", "127.0.0.1", String(primary.port)])))
        }
        self.servers = servers
        try await eventually("\(replicas) replicas in sync with the primary", within: .seconds(20)) {
            let info = (try? await primary.command("INFO", "replication").string) ?? ""
            return Self.field("connected_slaves", info) == String(replicas)
                && info.components(separatedBy: "state=online").count - 1 == replicas
        }
        let quorum = sentinelCount / 2 + 1
        var sentinels: [RedisServerProcess] = []
        for _ in 0..<sentinelCount {
            var options = RedisServerProcess.Options()
            var lines = [
                "sentinel monitor m 127.0.0.1 \(primary.port) \(quorum)",
                "sentinel down-after-milliseconds m 1000",
                "sentinel failover-timeout m 5000",
                "sentinel parallel-syncs m 2",
            ]
            if let sentinelPassword { lines.append("requirepass \(sentinelPassword)") }
            options.sentinelConfig = lines
            options.password = sentinelPassword
            sentinels.append(try await RedisServerProcess(options))
        }
        self.sentinels = sentinels
        for sentinel in sentinels {
            try await eventually(
                "sentinel \(sentinel.port) sees the replicas and the other sentinels", within: .seconds(30)
            ) {
                guard let reply = try? await sentinel.command("SENTINEL", "master", "m"), let parts = reply.array
                else { return false }
                var fields: [String: String] = [:]
                var index = 0
                while index + 1 < parts.count {
                    if let key = parts[index].string { fields[key] = parts[index + 1].string }
                    index += 2
                }
                return fields["num-slaves"] == String(replicas)
                    && fields["num-other-sentinels"] == String(sentinelCount - 1)
            }
        }
    }

    /// `redis-sentinel://127.0.0.1:<s1>,...#m` (the sentinel password is given separately).
    public var url: String {
        "redis-sentinel://" + sentinels.map { "127.0.0.1:\($0.port)" }.joined(separator: ",") + "/0#\(master)"
    }

    /// The sentinel endpoint with the sentinel password set.
    public var endpoint: RedisEndpoint {
        var endpoint = try! RedisEndpoint(url: url)
        endpoint.sentinel?.password = sentinelPassword
        return endpoint
    }

    /// A configuration for ``endpoint``.
    public func configuration(
        commandTimeout: Duration = .seconds(2), connectTimeout: Duration = .seconds(2)
    ) -> RedisConfiguration {
        RedisConfiguration(endpoint: endpoint, connectTimeout: connectTimeout, commandTimeout: commandTimeout)
    }

    /// The port of the primary, as the first sentinel that answers says.
    public func primaryPort() async throws -> Int {
        for sentinel in sentinels where sentinel.isRunning {
            if let reply = try? await sentinel.command("SENTINEL", "get-master-addr-by-name", master),
                let parts = reply.array, parts.count == 2, let port = parts[1].integer
            {
                return Int(port)
            }
        }
        throw TestSupportError("no sentinel answered get-master-addr-by-name")
    }

    /// The data node that is the primary now.
    public func primary() async throws -> RedisServerProcess {
        let port = try await primaryPort()
        guard let server = servers.first(where: { $0.port == port }) else {
            throw TestSupportError("the sentinels name port \(port), not one of the data nodes")
        }
        return server
    }

    /// `SENTINEL FAILOVER m` on the first running sentinel, then waits until the sentinels
    /// name a different primary that says `ROLE master`; returns it.
    @discardableResult
    public func failover(within timeout: Duration = .seconds(30)) async throws -> RedisServerProcess {
        let old = try await primaryPort()
        guard let sentinel = sentinels.first(where: \.isRunning) else { throw TestSupportError("no sentinel runs") }
        let reply = try await sentinel.command("SENTINEL", "FAILOVER", master)
        if case .error(let text) = reply { throw TestSupportError("SENTINEL FAILOVER: \(text)") }
        return try await waitForNewPrimary(other: old, within: timeout)
    }

    /// Waits until the sentinels name a primary other than port `old` that says `ROLE master`.
    @discardableResult
    public func waitForNewPrimary(other old: Int, within timeout: Duration = .seconds(30)) async throws
        -> RedisServerProcess
    {
        try await eventually("a primary other than \(old)", within: timeout, every: .milliseconds(100)) {
            guard let port = try? await primaryPort(), port != old,
                let server = servers.first(where: { $0.port == port }),
                let role = try? await server.command("ROLE"), role.array?.first?.string == "master"
            else { return nil }
            return server
        }
    }

    static func field(_ name: String, _ info: String) -> String? {
        for line in info.split(whereSeparator: \.isNewline) where line.hasPrefix(name + ":") {
            return String(line.dropFirst(name.count + 1))
        }
        return nil
    }
}

/// Runs `body` with a fresh ``SentinelTopology`` and tears every process down afterwards,
/// whether `body` returns or throws.
public func withSentinelTopology<T>(
    replicas: Int = 2, sentinels: Int = 3, sentinelPassword: String? = nil,
    _ body: (SentinelTopology) async throws -> T
) async throws -> T {
    let topology = try await SentinelTopology(
        replicas: replicas, sentinels: sentinels, sentinelPassword: sentinelPassword)
    do {
        let result = try await body(topology)
        await topology.tearDown()
        return result
    } catch {
        await topology.tearDown()
        throw error
    }
}

extension SentinelTopology {
    /// SIGKILLs every sentinel and data node (sentinels first, so none starts a failover).
    public func tearDown() async {
        for sentinel in sentinels { await sentinel.kill() }
        for server in servers { await server.kill() }
    }
}
