#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Where a Redis server is and how to log in.
///
/// URL forms:
/// - `redis://[[user]:password@]host[:port][/db]` (port 6379 and db 0 by default;
///   IPv6 in brackets: `redis://[::1]:6380/2`; user and password may be percent-encoded)
/// - `rediss://…`, the same over TLS (``tls`` set to the default ``RedisTLSConfiguration``:
///   verify the server against the system trust store and the URL's host)
/// - `unix:///path/redis.sock[?db=N][&username=U][&password=P]`
/// - `redis-sentinel://[user:password@]host:port[,host:port...][/db]#master` (see ``RedisSentinel``)
/// - `redis-cluster://[user:password@]host:port[,host:port...][/0]` (seed nodes, see ``RedisCluster``)
///
/// The password never appears in `description`, `debugDescription`, mirrors or errors.
public struct RedisEndpoint: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    /// Where the server listens.
    public enum Address: Sendable, Hashable {
        case tcp(host: String, port: Int)
        case unix(path: String)
    }

    /// TCP host and port, or a unix socket path.
    public var address: Address
    /// ACL user for AUTH, if any.
    public var username: String?
    /// Password for AUTH, if any; never printed.
    public var password: String?
    /// The database SELECTed after connecting.
    public var database: Int
    /// TLS settings; nil for a plain connection. Only TCP addresses can use TLS.
    public var tls: RedisTLSConfiguration?
    /// Set for a `redis-sentinel://` URL: the primary is discovered through these sentinels
    /// and `address` is only the first sentinel's (never connected to as a data node).
    public var sentinel: RedisSentinel?
    /// Set for a `redis-cluster://` URL: the seed nodes; `address` is only the first seed's
    /// (each call goes to the node owning its key's slot).
    public var cluster: RedisCluster?

    /// Creates an endpoint from its parts.
    public init(
        address: Address, username: String? = nil, password: String? = nil, database: Int = 0,
        tls: RedisTLSConfiguration? = nil
    ) {
        self.address = address
        self.username = username
        self.password = password
        self.database = database
        self.tls = tls
    }

    /// The name the server's certificate must carry: `tls.serverName`, else the URL's host.
    public var tlsServerName: String? {
        guard let tls else { return nil }
        if let name = tls.serverName { return name }
        if case .tcp(let host, _) = address { return host }
        return nil
    }

    /// Parses `redis[s]://[[user]:password@]host[:port][/db]` or `unix:///path[?db=N]`; a malformed URL throws `.invalidURL` saying what is wrong.
    public init(url: String) throws(RedisError) {
        let parser = URLParser(raw: url)
        self = try parser.parse()
    }

    /// The URL with the password replaced by `***`.
    public var description: String {
        if let cluster {
            var text = cluster.tls ? "rediss-cluster://" : "redis-cluster://"
            if password != nil {
                text += (username ?? "") + ":***@"
            } else if let username {
                text += username + "@"
            }
            return text + cluster.description + "/0"
        }
        if let sentinel {
            var text = sentinel.tls ? "rediss-sentinel://" : "redis-sentinel://"
            if password != nil {
                text += (username ?? "") + ":***@"
            } else if let username {
                text += username + "@"
            }
            return text + sentinel.nodes.map(\.description).joined(separator: ",") + "/\(database)#\(sentinel.master)"
        }
        switch address {
        case .tcp(let host, let port):
            var text = tls == nil ? "redis://" : "rediss://"
            if password != nil {
                text += (username ?? "") + ":***@"
            } else if let username {
                text += username + "@"
            }
            text += host.contains(":") ? "[\(host)]" : host
            text += ":\(port)/\(database)"
            return text
        case .unix(let path):
            var text = "unix://\(path)?db=\(database)"
            if let username { text += "&username=\(username)" }
            if password != nil { text += "&password=***" }
            return text
        }
    }

    /// Same as `description`: redacted.
    public var debugDescription: String { "RedisEndpoint(\(description))" }

    /// `url` with anything that may be a password replaced by `***`, for messages about a URL
    /// that was rejected before it could be parsed (the catalog validator's scheme check).
    package static func redactedURL(_ url: String) -> String { URLParser.redact(url) }

    /// A mirror without the password, so `dump` and debuggers cannot leak it.
    public var customMirror: Mirror {
        Mirror(
            self,
            children: [
                "address": address as Any, "username": username as Any,
                "password": (password == nil ? nil : "***") as Any, "database": database, "tls": tls as Any,
                "sentinel": sentinel as Any, "cluster": cluster as Any,
            ],
            displayStyle: .struct)
    }
}

// MARK: - Parsing

struct URLParser {
    let raw: String

    static let expected =
        "expected redis://[[user]:password@]host[:port][/db], rediss://… (TLS) or unix:///path/redis.sock[?db=N]"

    func fail(_ reason: String) -> RedisError {
        RedisError(
            kind: .invalidURL,
            message: "invalid Redis URL \"\(Self.redact(raw))\": \(reason) — \(Self.expected)")
    }

    /// The raw input with anything that may be a password replaced by `***`: the userinfo of
    /// `scheme://user:pw@host` keeps its user, and malformed forms without `://` (`:pw@host`,
    /// `redis:/:pw@h`, `redis:pw@h`) lose everything between the scheme and the last `@`.
    static func redact(_ raw: String) -> String {
        var text = raw
        if let schemeEnd = text.firstRange(of: "://"), let at = text[schemeEnd.upperBound...].lastIndex(of: "@") {
            let userinfo = text[schemeEnd.upperBound..<at]
            let replacement: String
            if let colon = userinfo.firstIndex(of: ":") {
                replacement = String(userinfo[..<colon]) + ":***"
            } else {
                replacement = "***"
            }
            text.replaceSubrange(schemeEnd.upperBound..<at, with: replacement)
        } else if text.firstRange(of: "://") == nil, let at = text.lastIndex(of: "@") {
            // A scheme-like prefix (`redis:`, `redis:/`) stays; the rest up to the '@' may be a password.
            var start = text.startIndex
            if let colon = text[..<at].firstIndex(of: ":"), colon > text.startIndex,
                text[..<colon].allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "+.-".contains($0)) })
            {
                start = text.index(after: colon)
                while start < at, text[start] == "/" { start = text.index(after: start) }
            }
            if start < at { text.replaceSubrange(start..<at, with: "***") }
        }
        if let query = text.firstIndex(of: "?") {
            let head = text[...query]
            let items = text[text.index(after: query)...].split(separator: "&", omittingEmptySubsequences: false)
                .map { item -> String in
                    let lower = item.lowercased()
                    if lower.hasPrefix("password=") || lower.hasPrefix("pass=") || lower.hasPrefix("requirepass=") {
                        return item.split(separator: "=", maxSplits: 1)[0] + "=***"
                    }
                    return String(item)
                }
            text = head + items.joined(separator: "&")
        }
        return text
    }

    func parse() throws(RedisError) -> RedisEndpoint {
        let trimmed = raw
        if trimmed.isEmpty { throw fail("the URL is empty") }
        if trimmed.contains(where: { $0.isWhitespace }) { throw fail("it contains whitespace") }
        guard let schemeEnd = trimmed.firstRange(of: "://") else {
            throw fail("missing scheme")
        }
        let scheme = trimmed[..<schemeEnd.lowerBound].lowercased()
        let rest = trimmed[schemeEnd.upperBound...]
        switch scheme {
        case "redis": return try parseTCP(rest)
        case "unix": return try parseUnix(rest)
        case "rediss":
            var endpoint = try parseTCP(rest)
            endpoint.tls = RedisTLSConfiguration()
            return endpoint
        case "redis-sentinel", "rediss-sentinel": return try parseSentinel(rest, tls: scheme == "rediss-sentinel")
        case "redis-cluster", "rediss-cluster":
            var endpoint = try parseCluster(rest, tls: scheme == "rediss-cluster")
            // Every node shares the TLS settings (CA, client certificate).
            if scheme == "rediss-cluster" { endpoint.tls = RedisTLSConfiguration() }
            return endpoint
        default: throw fail("unsupported scheme \"\(scheme)\"")
        }
    }

    func parseTCP(_ rest: Substring) throws(RedisError) -> RedisEndpoint {
        var username: String?
        var password: String?
        var hostPart = rest
        // Lenient about an unencoded '@' in the password: the userinfo ends at the last '@'.
        if let at = rest.lastIndex(of: "@") {
            let userinfo = rest[..<at]
            hostPart = rest[rest.index(after: at)...]
            guard let colon = userinfo.firstIndex(of: ":") else {
                throw fail("credentials need a ':' (use redis://:PASSWORD@host or redis://USER:PASSWORD@host)")
            }
            let user = try percentDecode(userinfo[..<colon], what: "user name")
            let pass = try percentDecode(userinfo[userinfo.index(after: colon)...], what: "password")
            if pass.isEmpty { throw fail("the password is empty") }
            username = user.isEmpty ? nil : user
            password = pass
        }
        if hostPart.contains("?") || hostPart.contains("#") {
            throw fail(
                "query parameters and fragments are not supported in redis:// and rediss:// URLs (the database goes in the path: /2)"
            )
        }
        let authority: Substring
        let path: Substring
        if let slash = hostPart.firstIndex(of: "/") {
            authority = hostPart[..<slash]
            path = hostPart[hostPart.index(after: slash)...]
        } else {
            authority = hostPart
            path = ""
        }

        var host: String
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                throw fail("unterminated IPv6 address (missing ']')")
            }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw fail("unexpected text after the IPv6 address") }
                portText = after.dropFirst()
            }
            if host.isEmpty || !host.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) {
                throw fail("invalid IPv6 address \"\(host)\"")
            }
        } else {
            let parts = authority.split(separator: ":", omittingEmptySubsequences: false)
            if parts.count > 2 {
                throw fail("too many ':' in the host (IPv6 addresses go in brackets: redis://[::1]:6379)")
            }
            host = String(parts[0])
            if parts.count == 2 { portText = parts[1] }
            if host.isEmpty { throw fail("the host is missing") }
            if !host.allSatisfy({ ($0.isASCII && ($0.isLetter || $0.isNumber)) || $0 == "-" || $0 == "." || $0 == "_" })
            {
                throw fail("invalid host \"\(host)\"")
            }
        }

        var port = 6379
        if let portText {
            guard !portText.isEmpty, portText.allSatisfy({ $0.isASCII && $0.isNumber }), let value = Int(portText),
                (1...65535).contains(value)
            else {
                throw fail("invalid port \"\(portText)\" (expected 1–65535)")
            }
            port = value
        }

        let database = try parseDatabase(path, allowEmpty: true)
        return RedisEndpoint(
            address: .tcp(host: host, port: port), username: username, password: password, database: database)
    }

    func parseDatabase(_ text: Substring, allowEmpty: Bool) throws(RedisError) -> Int {
        if text.isEmpty && allowEmpty { return 0 }
        guard !text.isEmpty, text.count <= 9, text.allSatisfy({ $0.isASCII && $0.isNumber }), let value = Int(text)
        else {
            throw fail("invalid database \"\(text)\" (expected a number ≥ 0, e.g. /0)")
        }
        return value
    }

    func parseUnix(_ rest: Substring) throws(RedisError) -> RedisEndpoint {
        let pathPart: Substring
        var query: Substring = ""
        if let q = rest.firstIndex(of: "?") {
            pathPart = rest[..<q]
            query = rest[rest.index(after: q)...]
        } else {
            pathPart = rest
        }
        guard pathPart.hasPrefix("/"), pathPart.count > 1 else {
            throw fail("a unix socket URL needs an absolute path (unix:///path/redis.sock)")
        }
        if pathPart.hasSuffix("/") { throw fail("the socket path names a directory") }
        let path = try percentDecode(pathPart, what: "path")
        var endpoint = RedisEndpoint(address: .unix(path: path))
        if !query.isEmpty {
            for item in query.split(separator: "&", omittingEmptySubsequences: false) {
                let pair = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                guard pair.count == 2 else { throw fail("malformed query item (expected key=value)") }
                let key = pair[0].lowercased()
                switch key {
                case "db":
                    endpoint.database = try parseDatabase(pair[1], allowEmpty: false)
                case "password":
                    let value = try percentDecode(pair[1], what: "password")
                    if value.isEmpty { throw fail("the password is empty") }
                    endpoint.password = value
                case "username", "user":
                    let value = try percentDecode(pair[1], what: "user name")
                    endpoint.username = value.isEmpty ? nil : value
                default:
                    throw fail("unknown query parameter \"\(key)\" (supported: db, username, password)")
                }
            }
        }
        return endpoint
    }

    func percentDecode(_ text: Substring, what: String) throws(RedisError) -> String {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8)[...]
        while let byte = iterator.popFirst() {
            if byte == UInt8(ascii: "%") {
                guard iterator.count >= 2, let high = hexValue(iterator.popFirst()!),
                    let low = hexValue(iterator.popFirst()!)
                else {
                    throw fail("bad percent-encoding in the \(what)")
                }
                bytes.append(high << 4 | low)
            } else {
                bytes.append(byte)
            }
        }
        guard let decoded = String(validating: bytes, as: UTF8.self) else {
            throw fail("the \(what) is not valid UTF-8 after percent-decoding")
        }
        return decoded
    }

    func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
