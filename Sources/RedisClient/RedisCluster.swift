/// A Redis Cluster: the seed nodes to read the slot map from.
///
/// Parsed from `redis-cluster://[user:password@]host:port[,host:port...][/0]`
/// (`rediss-cluster://` with TLS). A cluster has only database 0. A ``RedisConnection`` reads
/// the slot map (`CLUSTER SLOTS`) from the first seed that answers, routes each call to the
/// node owning the slot of its first key, and follows `MOVED` and `ASK` redirects.
public struct RedisCluster: Sendable, Hashable, CustomStringConvertible {
    /// The seed nodes, asked in turn for the slot map.
    public var nodes: [RedisSentinel.Node]
    /// Whether the URL asked for TLS (`rediss-cluster://`).
    public var tls: Bool

    /// Creates a cluster description.
    public init(nodes: [RedisSentinel.Node], tls: Bool = false) {
        self.nodes = nodes
        self.tls = tls
    }

    /// `host:port,host:port`.
    public var description: String { nodes.map(\.description).joined(separator: ",") }

    /// The number of hash slots of every Redis Cluster.
    public static let slotCount = 16384

    /// The slot of `key`: CRC16-XMODEM of the key (or of its hash tag, the text between the
    /// first `{` and the next `}` when that is not empty) modulo 16384, as the server computes it.
    public static func slot(of key: String) -> Int { slot(of: Array(key.utf8)) }

    /// Binary-safe variant.
    public static func slot(of key: [UInt8]) -> Int {
        var hashed = key[...]
        if let open = key.firstIndex(of: UInt8(ascii: "{")),
            let close = key[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1
        {
            hashed = key[(open + 1)..<close]
        }
        var crc: UInt16 = 0
        for byte in hashed {
            crc ^= UInt16(byte) << 8
            for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        }
        return Int(crc) % slotCount
    }

    /// Commands without keys: they may run on any node.
    static let keylessCommands: Set<String> = [
        "PING", "ECHO", "TIME", "PUBLISH", "SCRIPT", "INFO", "WAIT", "CLUSTER", "ROLE", "AUTH", "SELECT", "HELLO",
        "CLIENT", "CONFIG", "DBSIZE", "COMMAND", "DEBUG", "READONLY", "READWRITE", "ASKING", "LASTSAVE", "MULTI",
        "EXEC", "DISCARD", "FLUSHALL", "FLUSHDB", "SCAN", "KEYS", "RANDOMKEY", "SUBSCRIBE", "UNSUBSCRIBE",
        "PSUBSCRIBE", "PUNSUBSCRIBE", "SAVE", "BGSAVE", "MEMORY", "SLOWLOG", "LATENCY", "ACL", "FUNCTION",
    ]

    /// Keyless commands whose reply in a pipeline does not stop the pipeline from being
    /// re-sent after a redirect: running them twice changes nothing.
    static let repeatableKeyless: Set<String> = ["WAIT", "PING", "ECHO", "TIME"]

    /// The slot a command is routed by: its first key's (EVAL/EVALSHA/FCALL: the first key
    /// after numkeys; other commands: argument 1); nil for a command without keys.
    static func routingSlot(_ command: [[UInt8]]) -> Int? {
        guard let first = command.first else { return nil }
        let name = String(decoding: first, as: UTF8.self).uppercased()
        switch name {
        case "EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO":
            guard command.count > 3, let count = Int(String(decoding: command[2], as: UTF8.self)), count > 0
            else { return nil }
            return slot(of: command[3])
        default:
            if keylessCommands.contains(name) || command.count < 2 { return nil }
            return slot(of: command[1])
        }
    }
}

/// A redirect from a cluster node: `MOVED slot host:port` or `ASK slot host:port`.
enum ClusterRedirect: Equatable {
    case moved(slot: Int, node: RedisSentinel.Node)
    case ask(slot: Int, node: RedisSentinel.Node)

    /// Parses an error reply; nil when it is not a redirect.
    init?(_ reply: RedisReply) {
        guard case .error(let text) = reply else { return nil }
        let parts = text.split(separator: " ")
        guard parts.count == 3, parts[0] == "MOVED" || parts[0] == "ASK", let slot = Int(parts[1]),
            let colon = parts[2].lastIndex(of: ":"), let port = Int(parts[2][parts[2].index(after: colon)...])
        else { return nil }
        var host = String(parts[2][..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let node = RedisSentinel.Node(host: host, port: port)
        self = parts[0] == "MOVED" ? .moved(slot: slot, node: node) : .ask(slot: slot, node: node)
    }

    var node: RedisSentinel.Node {
        switch self {
        case .moved(_, let node), .ask(_, let node): return node
        }
    }
}

/// One connection's view of the slot map: which node serves which slot range.
struct ClusterSlotMap {
    struct Range {
        var first: Int
        var last: Int
        var node: RedisSentinel.Node
    }

    let cluster: RedisCluster
    private(set) var ranges: [Range] = []
    /// Set after a redirect or a lost connection: the next connect reads the map again.
    var isStale = true
    /// The node a MOVED named: asked first for the new map, since it knows it owns the slot
    /// while others may not have learnt it yet.
    private var redirectedTo: RedisSentinel.Node?

    init(cluster: RedisCluster) { self.cluster = cluster }

    /// The node serving `slot`, if the map knows it.
    func owner(of slot: Int) -> RedisSentinel.Node? {
        ranges.first { $0.first <= slot && slot <= $0.last }?.node
    }

    /// Any node of the map (for keyless commands), else the first seed.
    var anyNode: RedisSentinel.Node { ranges.first?.node ?? cluster.nodes[0] }

    /// Records a MOVED at once (before the map is read again).
    mutating func learn(slot: Int, node: RedisSentinel.Node) {
        ranges.removeAll { $0.first == slot && $0.last == slot }
        ranges.insert(Range(first: slot, last: slot, node: node), at: 0)
        redirectedTo = node
        isStale = true
    }

    /// Reads `CLUSTER SLOTS` from the known nodes, then the seeds, in turn. Blocking; each
    /// try is bounded by the connect and command timeouts.
    mutating func refresh(_ configuration: RedisConfiguration, using open: HiredisContext?) throws(RedisError) {
        var reasons: [String] = []
        if let open, !open.isBroken,
            let parsed = try? Self.parse(
                open.command([Array("CLUSTER".utf8), Array("SLOTS".utf8)]), asked: Self.node(of: open))
        {
            ranges = parsed
            isStale = false
            return
        }
        var candidates = redirectedTo.map { [$0] } ?? []
        redirectedTo = nil
        for node in cluster.nodes where !candidates.contains(node) { candidates.append(node) }
        for range in ranges where !candidates.contains(range.node) { candidates.append(range.node) }
        for node in candidates {
            do {
                let context = try HiredisContext.connect(Self.configuration(configuration, node))
                let reply = try context.command([Array("CLUSTER".utf8), Array("SLOTS".utf8)])
                if let parsed = Self.parse(reply, asked: node) {
                    ranges = parsed
                    isStale = false
                    return
                }
                reasons.append("\(node): \(reply.errorMessage ?? "no slot map")")
            } catch {
                reasons.append("\(node): \(error.kind)")
            }
        }
        throw RedisError(
            kind: .unreachable,
            message:
                "no cluster node gave the slot map (CLUSTER SLOTS; tried \(reasons.joined(separator: "; "))) — check the seed addresses of redis-cluster:// and that the nodes run with cluster-enabled yes"
        )
    }

    private static func node(of context: HiredisContext) -> RedisSentinel.Node? {
        if case .tcp(let host, let port) = context.endpoint.address {
            return RedisSentinel.Node(host: host, port: port)
        }
        return nil
    }

    /// `[[first, last, [host, port, id], replicas...], ...]`; an empty host means the node asked.
    static func parse(_ reply: RedisReply, asked: RedisSentinel.Node?) -> [Range]? {
        guard let entries = reply.array, !entries.isEmpty else { return nil }
        var ranges: [Range] = []
        for entry in entries {
            guard let parts = entry.array, parts.count >= 3, let first = parts[0].integer, let last = parts[1].integer,
                let primary = parts[2].array, primary.count >= 2, var host = primary[0].string,
                let port = primary[1].integer
            else { return nil }
            if host.isEmpty, let asked { host = asked.host }
            ranges.append(
                Range(first: Int(first), last: Int(last), node: RedisSentinel.Node(host: host, port: Int(port))))
        }
        return ranges
    }

    /// The configuration of a direct connection to one node of the cluster.
    static func configuration(_ configuration: RedisConfiguration, _ node: RedisSentinel.Node) -> RedisConfiguration {
        var direct = configuration
        direct.endpoint.cluster = nil
        direct.endpoint.address = .tcp(host: node.host, port: node.port)
        return direct
    }
}

// MARK: - URL parsing

extension URLParser {
    /// `[user:password@]host[:port][,host[:port]...][/0]` after the scheme.
    func parseCluster(_ rest: Substring, tls: Bool) throws(RedisError) -> RedisEndpoint {
        let expected = "expected redis-cluster://[user:password@]host:port[,host:port...][/0]"
        func fail(_ reason: String) -> RedisError {
            RedisError(kind: .invalidURL, message: "invalid Redis URL \"\(Self.redact(raw))\": \(reason) — \(expected)")
        }
        if rest.contains("#") { throw fail("a fragment is not supported (a #name belongs to redis-sentinel://)") }
        var hosts = rest
        if let at = hosts.lastIndex(of: "@") { hosts = hosts[hosts.index(after: at)...] }
        if let slash = hosts.firstIndex(of: "/") { hosts = hosts[..<slash] }
        for item in hosts.split(separator: ",") {
            let tail = item.split(separator: "]", omittingEmptySubsequences: false).last ?? item
            guard let colon = tail.lastIndex(of: ":"), !tail[tail.index(after: colon)...].isEmpty else {
                throw fail("the seed \"\(item)\" has no port (write host:port)")
            }
        }
        // The seed list has the same form as a sentinel list; reuse that parser with a dummy master.
        var endpoint: RedisEndpoint
        do {
            endpoint = try URLParser(raw: raw).parseSentinel(rest + "#cluster", tls: tls)
        } catch {
            var reason = Substring(error.message)
            if let start = reason.firstRange(of: "\": ") { reason = reason[start.upperBound...] }
            if let end = reason.firstRange(of: " — ") { reason = reason[..<end.lowerBound] }
            throw fail(String(reason).replacing("sentinel", with: "seed"))
        }
        guard let seeds = endpoint.sentinel?.nodes else { throw fail("no seed host given") }
        if endpoint.database != 0 {
            throw fail("database \(endpoint.database) given, but a Redis Cluster has only database 0")
        }
        endpoint.sentinel = nil
        endpoint.cluster = RedisCluster(nodes: seeds, tls: tls)
        return endpoint
    }
}

extension HiredisContext {
    /// A context to any node of `cluster`, trying the seeds in turn from `start`; returns the
    /// index used (for a subscriber: PUBLISH is broadcast to every node of a cluster).
    static func connectAnyNode(_ configuration: RedisConfiguration, _ cluster: RedisCluster, startingAt start: Int)
        throws(RedisError) -> (HiredisContext, Int)
    {
        var reasons: [String] = []
        for offset in 0..<cluster.nodes.count {
            let index = (start + offset) % cluster.nodes.count
            let node = cluster.nodes[index]
            do {
                return (try connect(ClusterSlotMap.configuration(configuration, node)), index)
            } catch {
                reasons.append("\(node): \(error.kind)")
            }
        }
        throw RedisError(
            kind: .unreachable,
            message:
                "no cluster node reachable (tried \(reasons.joined(separator: "; "))) — check the seeds of redis-cluster://"
        )
    }
}
