/// An error from the Redis client: transport, authentication, timeouts, bad URLs.
///
/// Error *replies* from the server (WRONGTYPE, a Lua error, ...) are not thrown; they are
/// returned as ``RedisReply/error(_:)``. The message is one line, never contains a password,
/// and says what to check where that is useful.
public struct RedisError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong, for callers that react differently to each.
    ///
    /// A struct rather than an enum so that a new kind is not a breaking change: compare with
    /// `==` or match with `case .timeout:`, and keep a `default:` branch.
    public struct Kind: Sendable, Hashable, CustomStringConvertible {
        private enum Code: String, Sendable, Hashable {
            case invalidURL, connectionRefused, unreachable, timeout, authenticationFailed
            case server, protocolError, connectionClosed, unavailable, tls, readOnly
        }

        private let code: Code
        private init(_ code: Code) { self.code = code }

        /// The URL, or a setting derived from it, cannot be used.
        public static let invalidURL = Kind(.invalidURL)
        /// Nothing listens at the address.
        public static let connectionRefused = Kind(.connectionRefused)
        /// The host cannot be resolved or reached.
        public static let unreachable = Kind(.unreachable)
        /// A connect or command timed out. For a command the outcome is unknown: it may
        /// have run on the server.
        public static let timeout = Kind(.timeout)
        /// The server refused the credentials (or wanted some and got none).
        public static let authenticationFailed = Kind(.authenticationFailed)
        /// The server refused the connection setup (e.g. SELECT of a database that does not exist).
        public static let server = Kind(.server)
        /// Something other than Redis answered, or the reply stream was corrupt.
        public static let protocolError = Kind(.protocolError)
        /// The server or the network closed the connection.
        public static let connectionClosed = Kind(.connectionClosed)
        /// The TLS session failed: the server's certificate did not verify or name the expected
        /// host, the server wants a client certificate, or the peer does not speak TLS.
        public static let tls = Kind(.tls)
        /// The connection is in reconnect backoff after a failure, or was closed with `close()`.
        /// The message carries the last error's text.
        public static let unavailable = Kind(.unavailable)
        /// The server answered READONLY: it is a replica now (a failover demoted it). The
        /// connection was dropped and the primary is rediscovered; the command's outcome is
        /// unknown (a script may have run up to its first write).
        public static let readOnly = Kind(.readOnly)

        /// The kind's name, e.g. `timeout`.
        public var description: String { code.rawValue }
    }

    /// The category.
    public var kind: Kind
    /// One clear line (never with a password).
    public var message: String

    /// Creates an error.
    public init(kind: Kind, message: String) {
        self.kind = kind
        self.message = message
    }

    /// The message.
    public var description: String { message }
}

extension Duration {
    /// "300 ms", "2 s", "1.5 s": for error messages.
    var shortDescription: String {
        let (seconds, attoseconds) = components
        let totalMilliseconds = seconds * 1000 + attoseconds / 1_000_000_000_000_000
        if totalMilliseconds < 1000 || totalMilliseconds % 1000 != 0 && totalMilliseconds < 10_000 {
            if totalMilliseconds < 1000 { return "\(totalMilliseconds) ms" }
            let tenths = totalMilliseconds / 100
            return "\(tenths / 10).\(tenths % 10) s"
        }
        return "\(totalMilliseconds / 1000) s"
    }
}
