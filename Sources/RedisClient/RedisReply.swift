import CHiredis

/// A RESP2 reply.
public enum RedisReply: Sendable, Hashable {
    case status(String)
    /// An error reply from the server (WRONGTYPE, NOSCRIPT, a Lua error, ...). Returned, not thrown.
    case error(String)
    case integer(Int64)
    /// A bulk string: binary-safe bytes.
    case bulk([UInt8])
    /// A nil bulk or nil array (Lua `false` becomes this too).
    case null
    case array([RedisReply])

    /// Status text, or a bulk string decoded as UTF-8 (nil if it is not valid UTF-8).
    public var string: String? {
        switch self {
        case .status(let text): return text
        case .bulk(let bytes): return String(validating: bytes, as: UTF8.self)
        default: return nil
        }
    }

    /// An integer reply, or a bulk/status string holding a decimal integer.
    public var integer: Int64? {
        switch self {
        case .integer(let value): return value
        case .bulk, .status: return string.flatMap { Int64($0) }
        default: return nil
        }
    }

    /// The elements of an array reply.
    public var array: [RedisReply]? {
        if case .array(let elements) = self { return elements }
        return nil
    }

    /// The raw bytes of a bulk string, or the UTF-8 of a status.
    public var bytes: [UInt8]? {
        switch self {
        case .bulk(let bytes): return bytes
        case .status(let text): return Array(text.utf8)
        default: return nil
        }
    }

    /// The text of an error reply.
    public var errorMessage: String? {
        if case .error(let text) = self { return text }
        return nil
    }

    /// Whether the reply is nil (a missing key, or Lua `false`).
    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }

    /// Whether the server answered with an error reply.
    public var isError: Bool { errorMessage != nil }
}

extension RedisReply {
    /// Converts a hiredis reply tree (recursively; hiredis 0.14 caps nesting at 7 levels).
    init(hiredis reply: UnsafePointer<redisReply>) {
        let r = reply.pointee
        func bytes() -> [UInt8] {
            guard let str = r.str, r.len > 0 else { return [] }
            return UnsafeRawBufferPointer(start: str, count: r.len).map { $0 }
        }
        switch r.type {
        case REDIS_REPLY_STRING:
            self = .bulk(bytes())
        case REDIS_REPLY_STATUS:
            self = .status(String(decoding: bytes(), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            self = .error(String(decoding: bytes(), as: UTF8.self))
        case REDIS_REPLY_INTEGER:
            self = .integer(Int64(r.integer))
        case REDIS_REPLY_NIL:
            self = .null
        case REDIS_REPLY_ARRAY:
            var elements: [RedisReply] = []
            elements.reserveCapacity(r.elements)
            if let element = r.element {
                for index in 0..<r.elements {
                    if let child = element[index] {
                        elements.append(RedisReply(hiredis: UnsafePointer(child)))
                    } else {
                        elements.append(.null)
                    }
                }
            }
            self = .array(elements)
        default:
            self = .error("unsupported hiredis reply type \(r.type)")
        }
    }
}
