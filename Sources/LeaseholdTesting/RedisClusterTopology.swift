import Foundation
import RedisClient

/// A Redis Cluster of primaries on loopback for tests: each a `redis-server --cluster-enabled
/// yes` with its own `nodes.conf` in its own directory, joined by `redis-cli --cluster create
/// … --cluster-replicas 0` (run on its own thread, off the cooperative pool). Everything is
/// SIGKILLed when the topology is deinitialised; use ``withRedisCluster(primaries:_:)``.
public final class RedisClusterTopology: Sendable {
    /// The primaries, in the order the slots were given out (the first has slot 0).
    public let servers: [RedisServerProcess]

    /// Starts the primaries, forms the cluster and waits until every node says
    /// `cluster_state:ok` and sees every slot assigned.
    public init(primaries: Int = 3) async throws {
        var servers: [RedisServerProcess] = []
        for _ in 0..<primaries {
            // The server retries a taken client port itself, but not a taken bus port (another
            // test may take it between FreePort and the bind): start afresh with a new one.
            var attempt = 0
            while true {
                do {
                    servers.append(
                        try await RedisServerProcess(
                            .init(extraArguments: [
                                // Relative to --dir: each node keeps its own file in its own directory.
                                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                "--cluster-node-timeout", "5000",
                                // The bus port is port + 10000 unless given, too high for the kernel's free ports.
                                "--cluster-port", String(FreePort.next()),
                            ])))
                    break
                } catch {
                    attempt += 1
                    if attempt >= 3 { throw error }
                }
            }
        }
        self.servers = servers
        let (status, output) = await runTool(
            ["redis-cli", "--cluster", "create"] + servers.map { "127.0.0.1:\($0.port)" } + [
                "--cluster-replicas", "0", "--cluster-yes",
            ])
        if status != 0 {
            throw TestSupportError("redis-cli --cluster create failed (\(status)): \(output.suffix(800))")
        }
        for server in servers {
            try await eventually("node \(server.port) says cluster_state:ok", within: .seconds(30)) {
                let info = (try? await server.command("CLUSTER", "INFO").string) ?? ""
                return info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
                    && info.contains("cluster_known_nodes:\(primaries)")
            }
        }
    }

    /// `redis-cluster://127.0.0.1:<p1>,127.0.0.1:<p2>,…/0`.
    public var url: String {
        "redis-cluster://" + servers.map { "127.0.0.1:\($0.port)" }.joined(separator: ",") + "/0"
    }

    /// A configuration for ``url``.
    public func configuration(commandTimeout: Duration = .seconds(2), connectTimeout: Duration = .seconds(2))
        -> RedisConfiguration
    {
        RedisConfiguration(
            endpoint: try! RedisEndpoint(url: url), connectTimeout: connectTimeout, commandTimeout: commandTimeout)
    }

    /// The node's cluster ID (`CLUSTER MYID`).
    public func nodeID(_ server: RedisServerProcess) async throws -> String {
        guard let id = try await server.command("CLUSTER", "MYID").string else {
            throw TestSupportError("CLUSTER MYID gave no ID on \(server.port)")
        }
        return id
    }

    /// The primary serving `slot`, as the given node's (default: the first's) slot map says.
    public func owner(of slot: Int, asking: RedisServerProcess? = nil) async throws -> RedisServerProcess {
        let reply = try await (asking ?? servers[0]).command("CLUSTER", "SLOTS")
        for entry in reply.array ?? [] {
            guard let parts = entry.array, parts.count >= 3, let first = parts[0].integer, let last = parts[1].integer,
                let port = parts[2].array?[1].integer
            else { continue }
            if first <= slot && slot <= last, let server = servers.first(where: { $0.port == Int(port) }) {
                return server
            }
        }
        throw TestSupportError("no node serves slot \(slot)")
    }

    /// Step 1 of moving `slot` by hand: `SETSLOT IMPORTING` on the target, `MIGRATING` on the
    /// source. From now on the source answers ASK for keys it no longer has.
    public func beginMigration(slot: Int, from source: RedisServerProcess, to target: RedisServerProcess)
        async throws
    {
        try await expectOK(target.command("CLUSTER", "SETSLOT", String(slot), "IMPORTING", nodeID(source)))
        try await expectOK(source.command("CLUSTER", "SETSLOT", String(slot), "MIGRATING", nodeID(target)))
    }

    /// Step 2: `MIGRATE`s every key of `slot` from the source to the target; returns how many.
    @discardableResult
    public func moveKeys(slot: Int, from source: RedisServerProcess, to target: RedisServerProcess) async throws
        -> Int
    {
        var moved = 0
        while true {
            let keys = try await source.command("CLUSTER", "GETKEYSINSLOT", String(slot), "100").array ?? []
            let names = keys.compactMap(\.string)
            if names.isEmpty { return moved }
            let reply = try await source.command(
                ["MIGRATE", "127.0.0.1", String(target.port), "", "0", "5000", "KEYS"] + names)
            if case .error(let text) = reply { throw TestSupportError("MIGRATE: \(text)") }
            moved += names.count
        }
    }

    /// Step 3: `SETSLOT NODE <target>` on the target, the source, then the other nodes.
    public func finishMigration(slot: Int, from source: RedisServerProcess, to target: RedisServerProcess)
        async throws
    {
        let id = try await nodeID(target)
        let order = [target, source] + servers.filter { $0 !== target && $0 !== source }
        for server in order { try await expectOK(server.command("CLUSTER", "SETSLOT", String(slot), "NODE", id)) }
    }

    /// Moves `slot` (and its keys) from its owner to `target` (default: the next node).
    @discardableResult
    public func migrate(slot: Int, to target: RedisServerProcess? = nil) async throws -> RedisServerProcess {
        let source = try await owner(of: slot)
        let destination =
            target ?? servers[(servers.firstIndex { $0 === source }! + 1) % servers.count]
        try await beginMigration(slot: slot, from: source, to: destination)
        try await moveKeys(slot: slot, from: source, to: destination)
        try await finishMigration(slot: slot, from: source, to: destination)
        return destination
    }

    private func expectOK(_ reply: RedisReply) throws {
        if case .error(let text) = reply { throw TestSupportError("CLUSTER SETSLOT: \(text)") }
    }
}

/// Runs a command line to its end on its own thread (never blocking the cooperative pool);
/// returns the exit status and the combined output.
func runTool(_ argv: [String]) async -> (Int32, String) {
    await withCheckedContinuation { continuation in
        Thread {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = argv
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = pipe
            process.standardInput = FileHandle.nullDevice
            do { try process.run() } catch {
                continuation.resume(returning: (-1, "\(argv[0]) failed to start: \(error)"))
                return
            }
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            continuation.resume(returning: (process.terminationStatus, String(decoding: data, as: UTF8.self)))
        }.start()
    }
}

/// Runs `body` with a fresh ``RedisClusterTopology`` and tears every node down afterwards,
/// whether `body` returns or throws.
public func withRedisCluster<T>(primaries: Int = 3, _ body: (RedisClusterTopology) async throws -> T)
    async throws -> T
{
    let cluster = try await RedisClusterTopology(primaries: primaries)
    defer { withExtendedLifetime(cluster) {} }
    let result: T
    do {
        result = try await body(cluster)
    } catch {
        for server in cluster.servers { await server.kill() }
        throw error
    }
    for server in cluster.servers { await server.kill() }
    return result
}
