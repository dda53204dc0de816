import CHiredis
import Testing

@testable import RedisClient

@Suite("SHA-1 and scripts")
struct ScriptTests {
    @Test(arguments: [
        ("", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
        ("abc", "a9993e364706816aba3e25717850c26c9cd0d89d"),
        ("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "84983e441c3bd26ebaae4aa1f95129e5e54670f1"),
        ("The quick brown fox jumps over the lazy dog", "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12"),
        ("return 1", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"),
    ])
    func knownVectors(_ input: String, _ expected: String) {
        #expect(SHA1.hex(Array(input.utf8)) == expected)
    }

    @Test func millionAs() {
        #expect(
            SHA1.hex([UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000))
                == "34aa973cd4c4daa4f61eeb2bdbad27316534016f")
    }

    @Test func paddingBoundaries() {
        // 55, 56, 63, 64 and 65 bytes straddle the length-field boundary.
        let expected: [Int: String] = [
            55: "c1c8bbdc22796e28c0e15163d20899b65621d65a",
            56: "c2db330f6083854c99d4b5bfb6e8f29f201be699",
            64: "0098ba824b5c16427bd7a1122a5a442a25ec644d",
        ]
        for (count, digest) in expected {
            #expect(SHA1.hex([UInt8](repeating: UInt8(ascii: "a"), count: count)) == digest, "length \(count)")
        }
    }

    @Test func scriptCarriesSHA() {
        let script = RedisScript("return 1")
        #expect(script.sha1 == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db")
        #expect(script == RedisScript("return 1"))
    }
}

@Suite("RedisReply")
struct ReplyTests {
    @Test func accessors() {
        #expect(RedisReply.status("OK").string == "OK")
        #expect(RedisReply.bulk(Array("42".utf8)).integer == 42)
        #expect(RedisReply.bulk(Array("x".utf8)).integer == nil)
        #expect(RedisReply.integer(-7).integer == -7)
        #expect(RedisReply.bulk([0xff, 0xfe]).string == nil)
        #expect(RedisReply.bulk([0xff, 0xfe]).bytes == [0xff, 0xfe])
        #expect(RedisReply.null.isNull)
        #expect(!RedisReply.bulk([]).isNull)
        #expect(RedisReply.error("ERR x").errorMessage == "ERR x")
        #expect(RedisReply.error("ERR x").string == nil)
        #expect(RedisReply.array([.integer(1)]).array == [.integer(1)])
        #expect(RedisReply.integer(1).array == nil)
    }

    /// Builds hiredis reply structs by hand and converts them.
    @Test func convertsHiredisTree() {
        var allocations: [UnsafeMutableRawPointer] = []
        defer { for allocation in allocations { allocation.deallocate() } }
        func leaf(_ type: Int32, bytes: [UInt8] = [], integer: Int64 = 0) -> UnsafeMutablePointer<redisReply> {
            let node = UnsafeMutablePointer<redisReply>.allocate(capacity: 1)
            allocations.append(UnsafeMutableRawPointer(node))
            let storage = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count + 1)
            allocations.append(UnsafeMutableRawPointer(storage))
            for (index, byte) in bytes.enumerated() { storage[index] = CChar(bitPattern: byte) }
            node.initialize(
                to: redisReply(type: type, integer: integer, len: bytes.count, str: storage, elements: 0, element: nil))
            return node
        }
        func array(_ children: [UnsafeMutablePointer<redisReply>?]) -> UnsafeMutablePointer<redisReply> {
            let node = UnsafeMutablePointer<redisReply>.allocate(capacity: 1)
            allocations.append(UnsafeMutableRawPointer(node))
            let elements = UnsafeMutablePointer<UnsafeMutablePointer<redisReply>?>.allocate(
                capacity: max(1, children.count))
            allocations.append(UnsafeMutableRawPointer(elements))
            for (index, child) in children.enumerated() { elements[index] = child }
            node.initialize(
                to: redisReply(
                    type: REDIS_REPLY_ARRAY, integer: 0, len: 0, str: nil, elements: children.count, element: elements))
            return node
        }
        let binary: [UInt8] = [0, 1, 0xff, 0x0d, 0x0a, 0]
        var deepest = leaf(REDIS_REPLY_INTEGER, integer: 99)
        for _ in 0..<20 { deepest = array([deepest]) }
        let root = array([
            leaf(REDIS_REPLY_STATUS, bytes: Array("OK".utf8)),
            leaf(REDIS_REPLY_ERROR, bytes: Array("WRONGTYPE bad".utf8)),
            leaf(REDIS_REPLY_INTEGER, integer: Int64.min),
            leaf(REDIS_REPLY_NIL),
            leaf(REDIS_REPLY_STRING, bytes: binary),
            leaf(REDIS_REPLY_STRING, bytes: []),
            array([]),
            nil,
            deepest,
        ])
        let reply = RedisReply(hiredis: UnsafePointer(root))
        var expectedDeep = RedisReply.integer(99)
        for _ in 0..<20 { expectedDeep = .array([expectedDeep]) }
        #expect(
            reply
                == .array([
                    .status("OK"), .error("WRONGTYPE bad"), .integer(Int64.min), .null, .bulk(binary), .bulk([]),
                    .array([]),
                    .null, expectedDeep,
                ]))
    }

    @Test func errorClassification() {
        let configuration = RedisConfiguration(
            endpoint: RedisEndpoint(address: .tcp(host: "h", port: 1), password: "hunter2"))
        func kind(_ code: Int32, _ text: String, _ phase: HiredisContext.Phase = .command) -> RedisError.Kind {
            let error = HiredisContext.classify(code: code, text: text, phase: phase, configuration: configuration)
            #expect(!error.message.contains("hunter2"))
            return error.kind
        }
        #expect(kind(REDIS_ERR_IO, "Connection refused", .connect) == .connectionRefused)
        #expect(kind(REDIS_ERR_IO, "Connection timed out", .connect) == .timeout)
        #expect(kind(REDIS_ERR_IO, "Resource temporarily unavailable") == .timeout)
        #expect(kind(REDIS_ERR_IO, "No route to host", .connect) == .unreachable)
        #expect(kind(REDIS_ERR_IO, "Network is unreachable", .connect) == .unreachable)
        #expect(kind(REDIS_ERR_OTHER, "Name or service not known", .connect) == .unreachable)
        #expect(kind(REDIS_ERR_EOF, "Server closed the connection") == .connectionClosed)
        #expect(kind(REDIS_ERR_IO, "Connection reset by peer") == .connectionClosed)
        #expect(kind(REDIS_ERR_PROTOCOL, "Protocol error, got \"H\" as reply type byte") == .protocolError)
        #expect(HiredisContext.isAuthenticationError("WRONGPASS invalid username-password pair or user is disabled."))
        #expect(HiredisContext.isAuthenticationError("ERR invalid password"))
        #expect(HiredisContext.isAuthenticationError("NOAUTH Authentication required."))
        #expect(
            HiredisContext.isAuthenticationError(
                "ERR AUTH <password> called without any password configured for the default user."))
        #expect(!HiredisContext.isAuthenticationError("ERR unknown command"))
    }
}
