/// An error from the Redis client: transport, authentication, timeouts, bad URLs.
///
/// Error *replies* from the server (WRONGTYPE, a Lua error, ...) are not thrown; they are
/// returned as ``RedisReply/error(_:)``. The message is one line, never contains a password,
/// and says what to check where that is useful.
public struct RedisError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong, for callers that react differently to each.
    public enum Kind: Sendable, Hashable {
        case invalidURL
        case connectionRefused
        case unreachable
        /// A connect or command timed out. For a command the outcome is unknown: it may
        /// have run on the server.
        case timeout
        case authenticationFailed
        /// The server refused the connection setup (e.g. SELECT of a database that does not exist).
        case server
        /// Something other than Redis answered, or the reply stream was corrupt.
        case protocolError
        case connectionClosed
        /// The connection is in reconnect backoff after a failure, or was closed with `close()`.
        /// The message carries the last error's text.
        case unavailable
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
