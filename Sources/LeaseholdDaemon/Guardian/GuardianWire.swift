import Leasehold
import RedisClient

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// What the daemon tells its guardian, one line per message over the private socket.
///
/// Lines are `C <json>` (the Redis settings and the owner, once, first), `L <job> <token>
/// <valid-until-ns>` (a lease held, on the supervisor clock), `U <job>` (no longer held),
/// `B` (a job spawn began), `P <pid>` (it started: the supervisor's pid), `F` (it failed),
/// `X <pid>` (that supervisor was reaped) and `S` (graceful stop: stand down). Job names and
/// owner ids never contain spaces or newlines (the catalog and `OwnerID` check them).
enum GuardianMessage: Equatable {
    case configure(GuardianSettings)
    case lease(job: String, token: UInt64, validUntilNs: Int64)
    case unlease(job: String)
    case spawning
    case started(pid: Int32)
    case spawnFailed
    case ended(pid: Int32)
    case standDown

    /// The line, newline included.
    var line: String {
        switch self {
        case .configure(let settings): "C \(settings.encoded())\n"
        case .lease(let job, let token, let valid): "L \(job) \(token) \(valid)\n"
        case .unlease(let job): "U \(job)\n"
        case .spawning: "B\n"
        case .started(let pid): "P \(pid)\n"
        case .spawnFailed: "F\n"
        case .ended(let pid): "X \(pid)\n"
        case .standDown: "S\n"
        }
    }

    /// Parses one line (without its newline); nil when it is not a message.
    init?(line: Substring) {
        let parts = line.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
        let rest = parts.count > 1 ? parts[1] : ""
        let fields = rest.split(separator: " ")
        switch parts.first {
        case "C":
            guard let settings = GuardianSettings(encoded: rest) else { return nil }
            self = .configure(settings)
        case "L":
            guard fields.count == 3, let token = UInt64(fields[1]), let valid = Int64(fields[2]) else { return nil }
            self = .lease(job: String(fields[0]), token: token, validUntilNs: valid)
        case "U":
            guard fields.count == 1 else { return nil }
            self = .unlease(job: String(fields[0]))
        case "B": self = .spawning
        case "P":
            guard let pid = Int32(rest) else { return nil }
            self = .started(pid: pid)
        case "F": self = .spawnFailed
        case "X":
            guard let pid = Int32(rest) else { return nil }
            self = .ended(pid: pid)
        case "S": self = .standDown
        default: return nil
        }
    }
}

/// Everything the guardian needs to release this daemon's leases: where Redis is (with its
/// credentials) and whose leases they are.
struct GuardianSettings: Equatable {
    var redis: RedisConfiguration
    var namespace: String
    var owner: OwnerID

    static func == (a: Self, b: Self) -> Bool {
        a.redis.endpoint == b.redis.endpoint && a.redis.connectTimeout == b.redis.connectTimeout
            && a.redis.commandTimeout == b.redis.commandTimeout && a.namespace == b.namespace && a.owner == b.owner
    }

    /// The one place the Redis configuration is serialized for the guardian: a setting added
    /// to `RedisConfiguration` or `RedisEndpoint` (TLS, Sentinel) is added here and in
    /// `init(encoded:)`, nowhere else.
    private struct Wire: Codable {
        var host: String?
        var port: Int?
        var unixPath: String?
        var username: String?
        var password: String?
        var database: Int
        var connectTimeoutMs: Int64
        var commandTimeoutMs: Int64
        var namespace: String
        var member: String
        var incarnation: String
        var tls: TLSWire?
        var sentinel: SentinelWire?
    }

    private struct TLSWire: Codable {
        var caFile: String?
        var certFile: String?
        var keyFile: String?
        var serverName: String?
        var verify: Bool
    }

    private struct SentinelWire: Codable {
        var nodes: [String]  // hosts, with `ports` at the same index
        var ports: [Int]
        var master: String
        var password: String?
        var tls: Bool
    }

    /// One line of JSON (JSONEncoder escapes newlines inside strings).
    func encoded() -> String {
        let endpoint = redis.endpoint
        var wire = Wire(
            username: endpoint.username, password: endpoint.password, database: endpoint.database,
            connectTimeoutMs: Self.ms(redis.connectTimeout), commandTimeoutMs: Self.ms(redis.commandTimeout),
            namespace: namespace, member: owner.member, incarnation: owner.incarnation)
        switch endpoint.address {
        case .tcp(let host, let port):
            wire.host = host
            wire.port = port
        case .unix(let path):
            wire.unixPath = path
        }
        wire.tls = endpoint.tls.map {
            TLSWire(
                caFile: $0.caFile, certFile: $0.certFile, keyFile: $0.keyFile, serverName: $0.serverName,
                verify: $0.verify)
        }
        wire.sentinel = endpoint.sentinel.map {
            SentinelWire(
                nodes: $0.nodes.map(\.host), ports: $0.nodes.map(\.port), master: $0.master, password: $0.password,
                tls: $0.tls)
        }
        let data = (try? JSONEncoder().encode(wire)) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    init(redis: RedisConfiguration, namespace: String, owner: OwnerID) {
        self.redis = redis
        self.namespace = namespace
        self.owner = owner
    }

    init?(encoded: Substring) {
        guard let wire = try? JSONDecoder().decode(Wire.self, from: Data(encoded.utf8)) else { return nil }
        let address: RedisEndpoint.Address
        if let path = wire.unixPath {
            address = .unix(path: path)
        } else if let host = wire.host, let port = wire.port {
            address = .tcp(host: host, port: port)
        } else {
            return nil
        }
        guard !wire.member.isEmpty, !wire.incarnation.isEmpty else { return nil }
        let owner = OwnerID(member: wire.member, incarnation: wire.incarnation)
        var endpoint = RedisEndpoint(
            address: address, username: wire.username, password: wire.password, database: wire.database)
        endpoint.tls = wire.tls.map {
            RedisTLSConfiguration(
                caFile: $0.caFile, certFile: $0.certFile, keyFile: $0.keyFile, serverName: $0.serverName,
                verify: $0.verify)
        }
        if let sentinel = wire.sentinel {
            guard sentinel.nodes.count == sentinel.ports.count, !sentinel.nodes.isEmpty else { return nil }
            endpoint.sentinel = RedisSentinel(
                nodes: zip(sentinel.nodes, sentinel.ports).map { RedisSentinel.Node(host: $0, port: $1) },
                master: sentinel.master, password: sentinel.password, tls: sentinel.tls)
        }
        redis = RedisConfiguration(
            endpoint: endpoint,
            connectTimeout: .milliseconds(wire.connectTimeoutMs), commandTimeout: .milliseconds(wire.commandTimeoutMs))
        namespace = wire.namespace
        self.owner = owner
    }

    private static func ms(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
