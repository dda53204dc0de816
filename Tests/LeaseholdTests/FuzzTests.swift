import Foundation
import RedisClient
import Testing

@testable import Leasehold

/// Bad-input robustness with a fixed corpus: hand-written nasties plus inputs generated from
/// a fixed seed. The only requirement is "no crash, only clear errors".
@Suite("Fuzz: catalog loader and script reply codec")
struct FuzzTests {
    struct Rand {
        var generator: SplitMix64
        init(state: UInt64) { generator = SplitMix64(seed: state) }
        mutating func next() -> UInt64 { generator.next() }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(n, 1))) }
    }

    static let validCatalog = """
        version: 1
        defaults:
          lease: 10s
        jobs:
          - name: report
            handler: log
            schedule: { cron: "*/5 * * * *" }
          - name: sync
            handler: shell
            schedule: { every: 5s }
            config: { command: ["/bin/true"] }
        """

    /// Parses bytes (which may be invalid UTF-8) through the byte-level reader and the text API.
    private func parseBytes(_ bytes: [UInt8]) -> [String] {
        let read = YAMLReader.read(bytes: bytes, file: "fuzz.yaml")
        let viaText = catalogErrors(String(decoding: bytes, as: UTF8.self))
        for error in read.errors + [] { #expect(!error.message.isEmpty) }
        for line in viaText { #expect(line.hasPrefix("jobs.yaml:"), "error without a location: \(line)") }
        return viaText
    }

    @Test("hand-written hostile catalogs give errors, not crashes")
    func handWrittenCatalogs() {
        let deep = String(repeating: "[", count: 10_000)
        let deepMap = String(repeating: "{a: ", count: 10_000)
        let bomb = """
            a: &a ["x","x","x","x","x","x","x","x","x","x"]
            b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]
            c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]
            d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]
            e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]
            f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]
            g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]
            jobs: *g
            """
        let huge =
            "jobs:\n  big:\n    handler: log\n    description: \"" + String(repeating: "x", count: 1_000_000) + "\"\n"
        let cases: [(String, String)] = [
            ("empty", ""), ("only a comment", "# nothing"), ("null", "~"), ("scalar root", "hello"),
            ("list root", "- a\n- b"), ("jobs is a scalar", "jobs: 3"), ("jobs is a list", "jobs: [1, 2]"),
            ("tab indentation", "jobs:\n\treport:\n\t\thandler: log"), ("unterminated quote", "jobs:\n  a: \"open"),
            ("unterminated flow", "jobs: {a: [1, 2"), ("deep sequence", deep), ("deep mapping", deepMap),
            ("alias bomb", bomb), ("unknown alias", "jobs: *nope"), ("self alias", "a: &a [*a]"),
            ("duplicate keys", "jobs:\n  a:\n    handler: log\n  a:\n    handler: log"),
            ("1 MB scalar", huge), ("NUL bytes", "jobs:\u{0}\n  a: b"), ("BOM + garbage", "\u{FEFF}\u{1}\u{2}::: ]]]"),
            ("multiple documents", "jobs: {}\n---\njobs: {}\n"), ("directive only", "%YAML 1.1\n---"),
            ("weird ttl", "jobs:\n  a:\n    handler: log\n    ttl: -1e309s"),
            ("truncated valid", String(Self.validCatalog.prefix(60))),
        ]
        for (name, text) in cases {
            let errors = catalogErrors(text)
            for line in errors { #expect(line.hasPrefix("jobs.yaml:"), "\(name): \(line)") }
            if ["deep sequence", "alias bomb", "unterminated quote", "jobs is a scalar", "unknown alias"].contains(name)
            {
                #expect(!errors.isEmpty, "\(name) must be rejected")
            }
        }
    }

    @Test("10,000 jobs load")
    func manyJobs() throws {
        var text = "jobs:\n"
        for i in 0..<10_000 { text += "  - name: job\(i)\n    handler: log\n    schedule: { every: 5s }\n" }
        text = "version: 1\n" + text
        let catalog = try loadCatalog(text)
        #expect(catalog.jobs.count == 10_000)
    }

    @Test("invalid UTF-8 and binary garbage give errors, not crashes")
    func binaryGarbage() {
        var rng = Rand(state: 0xF022)
        var corpus: [[UInt8]] = [
            [0xFF, 0xFE, 0xFD], [0xC3], [0x6A, 0x6F, 0x62, 0x73, 0x3A, 0x20, 0xED, 0xA0, 0x80],
            Array("jobs:\n  a: \u{7F}".utf8) + [0x80, 0x80],
        ]
        for _ in 0..<300 {
            corpus.append((0..<rng.below(400)).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
        }
        for bytes in corpus { _ = parseBytes(bytes) }
    }

    @Test("mutations and truncations of a valid catalog give errors, not crashes")
    func mutatedCatalogs() {
        var rng = Rand(state: 0x5EED)
        #expect(
            catalogErrors(Self.validCatalog).isEmpty,
            "the seed catalog must be valid: \(catalogErrors(Self.validCatalog))")
        let base = Array(Self.validCatalog.utf8)
        let alphabet = Array("[]{}:,-&*!|>'\"#%@` \n\t?0123456789abcxyz\\".utf8)
        for cut in stride(from: 0, through: base.count, by: 3) { _ = parseBytes(Array(base[..<cut])) }
        for _ in 0..<1_500 {
            var bytes = base
            for _ in 0..<(1 + rng.below(6)) {
                let i = rng.below(bytes.count)
                switch rng.below(4) {
                case 0: bytes[i] = alphabet[rng.below(alphabet.count)]
                case 1: bytes.insert(alphabet[rng.below(alphabet.count)], at: i)
                case 2: bytes.remove(at: i)
                default:
                    bytes.insert(contentsOf: bytes[i..<min(bytes.count, i + rng.below(40))], at: rng.below(bytes.count))
                }
                if bytes.isEmpty { break }
            }
            _ = parseBytes(bytes)
        }
    }

    // MARK: - Script replies

    static func randomReply(_ rng: inout Rand, depth: Int) -> RedisReply {
        switch rng.below(depth > 4 ? 6 : 8) {
        case 0: return .integer(Int64(bitPattern: rng.next()) >> rng.below(64))
        case 1: return .integer([0, 1, 2, -1, -2, Int64.max, Int64.min][rng.below(7)])
        case 2:
            return .bulk(
                Array(
                    [
                        "1", "0", "2", "acquired", "expired_takeover", "", "1.5e300", "nan", "inf", "-1",
                        "18446744073709551616", "m@i:7",
                    ][rng.below(12)].utf8))
        case 3: return .bulk((0..<rng.below(12)).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
        case 4: return [RedisReply.null, .status("OK"), .error("ERR boom")][rng.below(3)]
        case 5: return .status(String(rng.next()))
        default: return .array((0..<rng.below(7)).map { _ in randomReply(&rng, depth: depth + 1) })
        }
    }

    static let codec = LeaseScriptCodec(keys: LeaseKeys(namespace: "fz"), owner: OwnerID(member: "m", incarnation: "i"))

    private func decodeAll(_ reply: RedisReply, count: Int) {
        do { _ = try Self.codec.decodeAcquire(reply, count: count) } catch { #expect(!error.message.isEmpty) }
        do { _ = try Self.codec.decodeRenew(reply, count: count) } catch { #expect(!error.message.isEmpty) }
        do { _ = try Self.codec.decodeRelease(reply, count: count) } catch { #expect(!error.message.isEmpty) }
    }

    @Test("random and malformed reply trees decode or fail cleanly")
    func randomReplies() {
        var rng = Rand(state: 0xC0DEC)
        for _ in 0..<20_000 {
            decodeAll(Self.randomReply(&rng, depth: 0), count: rng.below(4))
        }
    }

    @Test("hand-written malformed replies fail with clear errors")
    func handWrittenReplies() {
        var deep = RedisReply.array([])
        for _ in 0..<10_000 { deep = .array([deep]) }
        let hugeArray = RedisReply.array(Array(repeating: .integer(1), count: 1_000_001))
        let cases: [(RedisReply, Int)] = [
            (.null, 1), (.error("NOSCRIPT No matching script"), 1), (.integer(5), 0), (.array([]), 0), (.array([]), 3),
            (deep, 1), (hugeArray, 1_000_000), (hugeArray, 3),
            (
                .array([
                    .integer(1),
                    .array([.integer(1), .bulk(Array("notanumber".utf8)), .bulk(Array("acquired".utf8)), .null]),
                ]), 1
            ),
            (.array([.integer(1), .array([.integer(0), .bulk(Array("x".utf8))])]), 1),
            (.array([.integer(1), .array([.integer(9)])]), 1),
            (
                .array([
                    .integer(1), .array([.integer(1), .integer(1)]),
                    .array([.bulk(Array("m".utf8)), .bulk(Array("nan".utf8)), .bulk(Array("1".utf8))]), .null,
                    .array([]),
                ]), 2
            ),
            (
                .array([
                    .integer(1), .array([]), .array([.bulk(Array("m".utf8)), .bulk(Array("1e400".utf8))]), .bulk([]),
                    .integer(3),
                ]), 0
            ),
            (
                .array([
                    .integer(1), .array([]),
                    .array([.bulk(Array("m".utf8)), .bulk(Array("9e30".utf8)), .bulk(Array("1".utf8))]), .bulk([]),
                    .array([]),
                ]), 0
            ),
        ]
        for (reply, count) in cases { decodeAll(reply, count: count) }
        // A well-formed reply still decodes.
        let good = RedisReply.array([.integer(5), .array([.integer(2), .bulk(Array("7".utf8))])])
        #expect((try? Self.codec.decodeAcquire(good, count: 1))?.outcomes == [.alreadyHeld(token: 7)])
    }
}
