import Dispatch
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A Redis Sentinel deployment: the sentinels to ask and the name of the monitored master.
///
/// Parsed from `redis-sentinel://[user:password@]host:port[,host:port...][/db]#master`
/// (the Lettuce form; the user and password are for the data nodes, the sentinels' own
/// password is ``password``, set separately). The sentinel password never appears in
/// `description` or mirrors.
public struct RedisSentinel: Sendable, Hashable, CustomStringConvertible, CustomReflectable {
    /// One sentinel's address.
    public struct Node: Sendable, Hashable, CustomStringConvertible {
        /// Host name or IP address.
        public var host: String
        /// TCP port (26379 by default).
        public var port: Int

        /// Creates a node.
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        /// `host:port` (IPv6 in brackets).
        public var description: String { (host.contains(":") ? "[\(host)]" : host) + ":\(port)" }
    }

    /// The sentinels, asked in turn.
    public var nodes: [Node]
    /// The master name the sentinels monitor (`sentinel monitor <name> ...`).
    public var master: String
    /// The sentinels' own `requirepass`, if any (never printed).
    public var password: String?
    /// Whether the URL asked for TLS (`rediss-sentinel://`).
    public var tls: Bool

    /// Creates a sentinel description.
    public init(nodes: [Node], master: String, password: String? = nil, tls: Bool = false) {
        self.nodes = nodes
        self.master = master
        self.password = password
        self.tls = tls
    }

    /// `host:port,host:port#master`, without any password.
    public var description: String { nodes.map(\.description).joined(separator: ",") + "#\(master)" }

    /// A mirror without the password.
    public var customMirror: Mirror {
        Mirror(
            self,
            children: [
                "nodes": nodes, "master": master, "password": (password == nil ? nil : "***") as Any, "tls": tls,
            ],
            displayStyle: .struct)
    }
}

// MARK: - URL parsing

extension URLParser {
    /// `[user:password@]host[:port][,host[:port]...][/db]#master` after the scheme.
    func parseSentinel(_ rest: Substring, tls: Bool) throws(RedisError) -> RedisEndpoint {
        let expected = "expected redis-sentinel://[user:password@]host:port[,host:port...][/db]#master"
        func fail(_ reason: String) -> RedisError {
            RedisError(
                kind: .invalidURL,
                message: "invalid Redis URL \"\(Self.redact(raw))\": \(reason) — \(expected)")
        }
        var username: String?
        var password: String?
        var body = rest
        if let at = rest.lastIndex(of: "@") {
            let userinfo = rest[..<at]
            body = rest[rest.index(after: at)...]
            guard let colon = userinfo.firstIndex(of: ":") else {
                throw fail("credentials need a ':' (use :PASSWORD@ or USER:PASSWORD@)")
            }
            let user = try percentDecode(userinfo[..<colon], what: "user name")
            let pass = try percentDecode(userinfo[userinfo.index(after: colon)...], what: "password")
            if pass.isEmpty { throw fail("the password is empty") }
            username = user.isEmpty ? nil : user
            password = pass
        }
        guard let hash = body.firstIndex(of: "#") else {
            throw fail("the master name is missing (add #NAME, the name in 'sentinel monitor NAME ...')")
        }
        let master = try percentDecode(body[body.index(after: hash)...], what: "master name")
        if master.isEmpty { throw fail("the master name after '#' is empty") }
        if master.contains(where: { $0.isWhitespace || $0.isNewline }) {
            throw fail("the master name contains whitespace")
        }
        body = body[..<hash]
        if body.contains("?") { throw fail("query parameters are not supported (the database goes in the path: /2)") }
        var hostsPart = body
        var database = 0
        if let slash = body.firstIndex(of: "/") {
            hostsPart = body[..<slash]
            database = try parseDatabase(body[body.index(after: slash)...], allowEmpty: true)
        }
        if hostsPart.isEmpty { throw fail("no sentinel host given") }
        var nodes: [RedisSentinel.Node] = []
        for item in hostsPart.split(separator: ",", omittingEmptySubsequences: false) {
            if item.isEmpty { throw fail("an empty sentinel address (stray ',')") }
            var host: Substring
            var portText: Substring?
            if item.hasPrefix("[") {
                guard let close = item.firstIndex(of: "]") else {
                    throw fail("unterminated IPv6 address (missing ']')")
                }
                host = item[item.index(after: item.startIndex)..<close]
                let after = item[item.index(after: close)...]
                if !after.isEmpty {
                    guard after.hasPrefix(":") else { throw fail("unexpected text after the IPv6 address") }
                    portText = after.dropFirst()
                }
                if host.isEmpty || !host.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) {
                    throw fail("invalid IPv6 address \"\(host)\"")
                }
            } else {
                let parts = item.split(separator: ":", omittingEmptySubsequences: false)
                if parts.count > 2 { throw fail("too many ':' in \"\(item)\" (IPv6 addresses go in brackets)") }
                host = parts[0]
                if parts.count == 2 { portText = parts[1] }
                if host.isEmpty { throw fail("a sentinel host is missing") }
                if !host.allSatisfy({ ($0.isASCII && ($0.isLetter || $0.isNumber)) || "-._".contains($0) }) {
                    throw fail("invalid host \"\(host)\"")
                }
            }
            var port = 26379
            if let portText {
                guard !portText.isEmpty, portText.allSatisfy({ $0.isASCII && $0.isNumber }), let value = Int(portText),
                    (1...65535).contains(value)
                else { throw fail("invalid port \"\(portText)\" (expected 1–65535)") }
                port = value
            }
            nodes.append(RedisSentinel.Node(host: String(host), port: port))
        }
        var endpoint = RedisEndpoint(
            address: .tcp(host: nodes[0].host, port: nodes[0].port), username: username, password: password,
            database: database)
        endpoint.sentinel = RedisSentinel(nodes: nodes, master: master, tls: tls)
        // Sentinels and data nodes share the TLS settings (CA, client certificate).
        if tls { endpoint.tls = RedisTLSConfiguration() }
        return endpoint
    }
}

// MARK: - Discovery and the topology watcher

/// The shared view of one Sentinel deployment in this process: the current primary, a
/// generation that changes whenever it may have changed, and a background thread subscribed
/// to `+switch-master` on one sentinel at a time.
///
/// Connections consult it whenever they make a new context and before each call: a changed
/// generation drops their context, so the next call connects to the new primary without the
/// member restarting. One monitor per (sentinels, master, credentials) in the process,
/// reference-counted by the connections and subscribers that use it; the thread stops with
/// the last of them.
final class SentinelMonitor: Sendable {
    private struct State {
        var primary: RedisSentinel.Node?
        var generation: UInt64 = 1
        var references = 0
        var stopRequested = false
        var preferred = 0  // the sentinel that answered last is asked first
    }

    let sentinel: RedisSentinel
    private let configuration: RedisConfiguration
    private let state = Mutex(State())

    private static let registry = Mutex<[RedisSentinel: SentinelMonitor]>([:])

    private init(sentinel: RedisSentinel, configuration: RedisConfiguration) {
        self.sentinel = sentinel
        self.configuration = configuration
    }

    /// The monitor for `configuration`'s sentinels, with one more reference; starts its
    /// watcher thread on the first reference.
    static func retain(for configuration: RedisConfiguration) -> SentinelMonitor? {
        guard let sentinel = configuration.endpoint.sentinel else { return nil }
        let (monitor, start) = registry.withLock { monitors -> (SentinelMonitor, Bool) in
            let monitor = monitors[sentinel] ?? SentinelMonitor(sentinel: sentinel, configuration: configuration)
            monitors[sentinel] = monitor
            let start = monitor.state.withLock { state -> Bool in
                state.references += 1
                state.stopRequested = false
                return state.references == 1
            }
            return (monitor, start)
        }
        if start {
            DispatchQueue(label: "leasehold.redis.sentinel-watcher").async { monitor.watch() }
        }
        return monitor
    }

    /// Drops one reference; the last one stops the watcher (within ~100 ms or a timeout).
    func release() {
        Self.registry.withLock { monitors in
            let last = state.withLock { state -> Bool in
                state.references -= 1
                if state.references <= 0 { state.stopRequested = true }
                return state.references <= 0
            }
            if last { monitors[sentinel] = nil }
        }
    }

    /// Changes whenever the primary may have changed.
    var generation: UInt64 { state.withLock { $0.generation } }

    /// The primary last discovered, if it is still believed current.
    var knownPrimary: RedisSentinel.Node? { state.withLock { $0.primary } }

    /// Forgets the primary seen at `generation` (READONLY, a lost connection, a wrong role):
    /// the next connect asks the sentinels again.
    func invalidate(generation: UInt64) {
        state.withLock { state in
            if state.generation == generation {
                state.primary = nil
                state.generation += 1
            }
        }
    }

    private func adopt(_ primary: RedisSentinel.Node, preferred: Int?) {
        state.withLock { state in
            if let preferred { state.preferred = preferred }
            if state.primary != primary {
                state.primary = primary
                state.generation += 1
            }
        }
    }

    private var stopRequested: Bool { state.withLock { $0.stopRequested } }

    /// Connects to the primary: asks the sentinels when none is known, connects, and
    /// confirms with `ROLE` that it is a master. Blocking; bounded by the timeouts (one
    /// connect + command per sentinel tried, then the primary's connect and handshake).
    func connectPrimary(_ configuration: RedisConfiguration) throws(RedisError) -> (HiredisContext, UInt64) {
        let (known, generation) = state.withLock { ($0.primary, $0.generation) }
        let primary: RedisSentinel.Node
        let seen: UInt64
        if let known {
            primary = known
            seen = generation
        } else {
            primary = try discover()
            seen = self.generation
        }
        var direct = configuration
        direct.endpoint.sentinel = nil
        direct.endpoint.address = .tcp(host: primary.host, port: primary.port)
        let context: HiredisContext
        do {
            context = try HiredisContext.connect(direct)
        } catch {
            invalidate(generation: seen)
            throw error
        }
        let role = try context.command([Array("ROLE".utf8)])
        if let parts = role.array, let name = parts.first?.string, name != "master" {
            invalidate(generation: seen)
            throw RedisError(
                kind: .server,
                message:
                    "\(direct.endpoint) is a \(name), not the primary of '\(sentinel.master)' (a failover in progress?): asking the sentinels again"
            )
        }
        return (context, seen)
    }

    /// Asks each sentinel in turn for the master's address; the first answer wins.
    func discover() throws(RedisError) -> RedisSentinel.Node {
        let start = state.withLock { $0.preferred }
        var reasons: [String] = []
        for offset in 0..<sentinel.nodes.count {
            let index = (start + offset) % sentinel.nodes.count
            let node = sentinel.nodes[index]
            do {
                let context = try HiredisContext.connect(sentinelConfiguration(node))
                let reply = try context.command(
                    ["SENTINEL", "get-master-addr-by-name", sentinel.master].utf8Arguments)
                if let parts = reply.array, parts.count == 2, let host = parts[0].string,
                    let port = parts[1].integer.flatMap({ Int(exactly: $0) })
                {
                    let primary = RedisSentinel.Node(host: host, port: port)
                    adopt(primary, preferred: index)
                    return primary
                }
                if case .error(let text) = reply {
                    reasons.append("\(node): \(text)")
                } else {
                    reasons.append("\(node): does not monitor '\(sentinel.master)'")
                }
            } catch {
                reasons.append("\(node): \(error.kind)")
            }
        }
        throw RedisError(
            kind: .unreachable,
            message:
                "no sentinel gave the primary of '\(sentinel.master)' (tried \(reasons.joined(separator: "; "))) — check the sentinel addresses, the master name after '#' and redis.sentinel_password"
        )
    }

    private func sentinelConfiguration(_ node: RedisSentinel.Node) -> RedisConfiguration {
        var config = configuration
        config.endpoint = RedisEndpoint(
            address: .tcp(host: node.host, port: node.port), password: sentinel.password, database: 0)
        config.endpoint.tls = configuration.endpoint.tls
        return config
    }

    // MARK: The watcher thread

    /// Subscribes to `+switch-master` on one sentinel after another until stopped. After
    /// each (re)subscription it asks the sentinels once, since a switch announced while it
    /// was not subscribed would otherwise go unseen.
    private func watch() {
        var backoff = Backoff(minimum: .milliseconds(100), maximum: configuration.reconnectBackoffMax)
        var index = 0
        while !stopRequested {
            let node = sentinel.nodes[index % sentinel.nodes.count]
            index += 1
            do {
                let context = try HiredisContext.connect(sentinelConfiguration(node))
                try context.append(["SUBSCRIBE", "+switch-master"].utf8Arguments)
                var confirmed = false
                while !confirmed {
                    let reply = try context.readReply()
                    if case .error(let text) = reply {
                        throw RedisError(kind: .server, message: "SUBSCRIBE on sentinel \(node) failed: \(text)")
                    }
                    confirmed = reply.array?.first?.string == "subscribe"
                }
                if let primary = try? discover(), primary != knownPrimary { adopt(primary, preferred: nil) }
                backoff.reset()
                try listen(context)
                return
            } catch {
                if !sleep(backoff.next()) { return }
            }
        }
    }

    private func listen(_ context: HiredisContext) throws(RedisError) {
        var lastActivity = ContinuousClock.now
        var pingSentAt: ContinuousClock.Instant?
        while true {
            if stopRequested { return }
            while let reply = try context.bufferedReply() {
                lastActivity = ContinuousClock.now
                pingSentAt = nil
                handle(reply)
            }
            var descriptor = pollfd(fd: context.fileDescriptor, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, 100)
            if ready > 0 {
                try context.readIntoBuffer()
                continue
            }
            if ready < 0 && errno != EINTR {
                throw RedisError(kind: .connectionClosed, message: "poll failed on the sentinel connection")
            }
            let now = ContinuousClock.now
            if let pingSentAt {
                if now - pingSentAt > configuration.commandTimeout {
                    throw RedisError(kind: .timeout, message: "sentinel did not answer PING")
                }
            } else if now - lastActivity >= .seconds(1) {
                try context.append([[UInt8]("PING".utf8)])
                try context.flush()
                pingSentAt = now
            }
        }
    }

    /// `message +switch-master "<master> <old-ip> <old-port> <new-ip> <new-port>"`.
    private func handle(_ reply: RedisReply) {
        guard let parts = reply.array, parts.count == 3, parts[0].string == "message",
            let payload = parts[2].string
        else { return }
        let fields = payload.split(separator: " ")
        guard fields.count == 5, fields[0] == sentinel.master, let port = Int(fields[4]) else { return }
        adopt(RedisSentinel.Node(host: String(fields[3]), port: port), preferred: nil)
    }

    private func sleep(_ duration: Duration) -> Bool {
        let deadline = ContinuousClock.now + duration
        while ContinuousClock.now < deadline {
            if stopRequested { return false }
            let left = min(deadline - ContinuousClock.now, .milliseconds(50))
            if left > .zero { usleep(UInt32(max(1, left.nanoseconds / 1000))) }
        }
        return !stopRequested
    }
}

extension HiredisContext {
    /// A new context for `configuration`: directly, or through `monitor` to the current
    /// primary. Returns the monitor generation it was made for (0 without one).
    static func connect(_ configuration: RedisConfiguration, via monitor: SentinelMonitor?) throws(RedisError) -> (
        HiredisContext, UInt64
    ) {
        guard let monitor else { return (try connect(configuration), 0) }
        return try monitor.connectPrimary(configuration)
    }
}
