import Foundation
import LeaseholdTesting
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
        let good = RedisReply.array([
            .integer(5), .bulk(Array("17".utf8)), .bulk(Array("0".utf8)),
            .array([.integer(2), .bulk(Array("7".utf8))]),
        ])
        let decoded = try? Self.codec.decodeAcquire(good, count: 1)
        #expect(decoded?.outcomes == [.alreadyHeld(token: 7)])
        #expect(decoded?.epoch == NamespaceEpoch(id: "17", quarantineUntilMs: 0))
    }
}

// MARK: - Hostile catalogs

/// Catalogs come through pull requests and CI, so `leasehold validate` and the daemon must be
/// safe on hostile files: everything within the caps (4 MiB per file, 64 KiB per scalar) is
/// validated quickly, and everything beyond them, or not a regular file, is one clear line.
@Suite("Fuzz: hostile catalogs", .enabled(if: HeavyTests.enabled, Comment(rawValue: HeavyTests.skipReason)))
struct HostileCatalogTests {
    /// The target is well under a second; the bound is generous so that a loaded CI box cannot
    /// make it flaky, while a hang, an unbounded read or a quadratic blow-up still fails.
    static let bound: Duration = .seconds(5)

    /// What a finished body returned, handed from its thread to the waiting test.
    final class Outcome<T: Sendable>: @unchecked Sendable {
        private let lock = NSLock()
        private var stored: (T, Duration)?
        func set(_ value: (T, Duration)) { lock.withLock { stored = value } }
        var value: (T, Duration)? { lock.withLock { stored } }
    }

    /// Runs `body` on its own thread and waits for it at most `bound`, so that a hang fails the
    /// test instead of stalling the run; prints the time taken. On a timeout `unblock` releases
    /// the thread if it can (a FIFO reader waiting for a writer).
    func timed<T: Sendable>(
        _ name: String, quiet: Bool = false, unblock: () -> Void = {}, _ body: @escaping @Sendable () -> T
    ) -> T? {
        timedWithDuration(name, quiet: quiet, unblock: unblock, body)?.0
    }

    /// `timed`, also handing back the time taken.
    func timedWithDuration<T: Sendable>(
        _ name: String, quiet: Bool = false, unblock: () -> Void = {}, _ body: @escaping @Sendable () -> T
    ) -> (T, Duration)? {
        let outcome = Outcome<T>()
        let done = DispatchSemaphore(value: 0)
        Thread {
            let clock = ContinuousClock()
            var result: T?
            let elapsed = clock.measure { result = body() }
            outcome.set((result!, elapsed))
            done.signal()
        }.start()
        let seconds = Int(Self.bound.components.seconds)
        guard done.wait(timeout: .now() + .seconds(seconds)) == .success, let (result, elapsed) = outcome.value else {
            Issue.record("\(name): not finished after \(Self.bound)")
            unblock()
            return nil
        }
        if !quiet { print("hostile catalog '\(name)': \(elapsed)") }
        #expect(elapsed < Self.bound, "\(name) took \(elapsed)")
        return (result, elapsed)
    }

    /// The error lines for the file at `path`, as the daemon and `leasehold validate` print them.
    static func loadErrors(_ path: String) -> [String] {
        do {
            _ = try CatalogLoader.load(path: path, knownHandlers: ["shell", "log"], checkHandler: testHandlers)
            return []
        } catch {
            return error.errors.map(\.description)
        }
    }

    /// A fresh directory, removed by the caller.
    static func temporaryDirectory() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "leasehold-hostile-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.path
    }

    static func write(_ bytes: [UInt8], to path: String) throws {
        #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)), "cannot write \(path)")
    }

    /// A valid catalog padded with a comment to exactly `size` bytes.
    static func padded(to size: Int) -> [UInt8] {
        var bytes = Array((FuzzTests.validCatalog + "\n#").utf8)
        bytes += [UInt8](repeating: UInt8(ascii: "x"), count: size - bytes.count - 1) + [UInt8(ascii: "\n")]
        return bytes
    }

    static let tooLarge = "catalog too large: more than \(YAMLReader.maxBytes) bytes (4 MiB)"

    @Test("a file over 4 MiB is one line naming the file; a file of exactly 4 MiB loads")
    func fileSizeCap() throws {
        #expect(YAMLReader.maxBytes == 4 * 1024 * 1024)
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let atCap = dir + "/at-cap.yaml"
        try Self.write(Self.padded(to: YAMLReader.maxBytes), to: atCap)
        #expect(timed("valid catalog of exactly 4 MiB") { Self.loadErrors(atCap) } == [])
        let over = dir + "/over-cap.yaml"
        try Self.write(Self.padded(to: YAMLReader.maxBytes + 1), to: over)
        #expect(timed("catalog of 4 MiB + 1 byte") { Self.loadErrors(over) } == ["\(over): \(Self.tooLarge)"])
        let text = String(decoding: Self.padded(to: YAMLReader.maxBytes + 1), as: UTF8.self)
        #expect(timed("text of 4 MiB + 1 byte") { catalogErrors(text) } == ["jobs.yaml: \(Self.tooLarge)"])
        let huge = dir + "/huge.yaml"
        try Self.write([UInt8](repeating: UInt8(ascii: "#"), count: 16 << 20), to: huge)
        #expect(timed("catalog of 16 MiB") { Self.loadErrors(huge) } == ["\(huge): \(Self.tooLarge)"])
    }

    /// A catalog whose one cron job's time zone is `zone`, and the zone's line and column.
    static func cronCatalog(zone: String) -> (text: String, line: Int, column: Int) {
        let prefix = "    schedule: { cron: \"0 3 * * *\", timezone: "
        return ("version: 1\njobs:\n  - name: a\n    handler: log\n" + prefix + zone + " }\n", 5, prefix.count + 1)
    }

    static func scalarTooLong(_ bytes: Int) -> String {
        "scalar too long: \(bytes) bytes, more than \(YAMLReader.maxScalarBytes) (64 KiB)"
    }

    @Test("a scalar over 64 KiB is one located line, with no follow-on errors")
    func scalarCap() throws {
        #expect(YAMLReader.maxScalarBytes == 64 * 1024)
        for size in [YAMLReader.maxScalarBytes + 1, 1 << 20] {
            let zone = "Europe/" + String(repeating: "x", count: size - 7)
            let c = Self.cronCatalog(zone: zone)
            #expect(
                timed("time zone of \(size) bytes") { catalogErrors(c.text) } == [
                    "jobs.yaml:\(c.line):\(c.column): \(Self.scalarTooLong(size))"
                ])
        }
        // Keys are scalars too; every oversized scalar is reported, in file order.
        let key = String(repeating: "k", count: YAMLReader.maxScalarBytes + 1)
        let value = "\"" + String(repeating: "v", count: YAMLReader.maxScalarBytes + 2) + "\""
        #expect(
            timed("oversized key and value") { catalogErrors("version: 1\n? \(key)\n: 1\njobs: \(value)\n") } == [
                "jobs.yaml:2:3: \(Self.scalarTooLong(YAMLReader.maxScalarBytes + 1))",
                "jobs.yaml:4:7: \(Self.scalarTooLong(YAMLReader.maxScalarBytes + 2))",
            ])
        // A file just under 4 MiB that is a single scalar.
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/one-scalar.yaml"
        try Self.write(
            [UInt8(ascii: "\"")] + [UInt8](repeating: UInt8(ascii: "x"), count: YAMLReader.maxBytes - 3)
                + Array("\"\n".utf8), to: path)
        #expect(
            timed("4 MiB file of one scalar") { Self.loadErrors(path) } == [
                "\(path):1:1: \(Self.scalarTooLong(YAMLReader.maxBytes - 3))"
            ])
    }

    @Test("a 64 KiB time zone or key, just within the cap, validates in well under the bound")
    func longScalarsWithinTheCap() {
        let n = YAMLReader.maxScalarBytes
        let zone = "Europe/" + String(repeating: "x", count: n - 7)
        let c = Self.cronCatalog(zone: zone)
        #expect(
            timed("64 KiB time zone") { catalogErrors(c.text) } == [
                "jobs.yaml:\(c.line):\(c.column): unknown time zone '\(zone)': expected an IANA name such as Europe/Berlin or UTC"
            ])
        let key = String(repeating: "placment", count: n / 8)
        let keys = Validator.topKeys.joined(separator: ", ")
        // An explicit key ('? '): libyaml allows implicit keys of at most 1024 characters.
        #expect(
            timed("64 KiB unknown key") { catalogErrors("version: 1\n? \(key)\n: 1\njobs: []\n") } == [
                "jobs.yaml:2:3: unknown key '\(key)' at top level (expected one of: \(keys))",
                "jobs.yaml:4:7: no jobs defined: 'jobs' must list at least one job",
            ])
    }

    @Test("spelling hints skip long words and stop early, but still find typos")
    func boundedSpellingHints() {
        let zones = TimeZone.knownTimeZoneIdentifiers
        let megabyte = String(repeating: "Europe/Berlin", count: 80_000)
        #expect(timed("1 MB word against every time zone") { closest(to: megabyte, in: zones) } == .some(nil))
        let long = String(repeating: "a", count: maxSuggestionInput + 1)
        #expect(closest(to: long, in: [long]) == nil)
        #expect(closest(to: "Europe/Berln", in: zones) == "Europe/Berlin")
        #expect(closest(to: "placment", in: Settings.keys) == "placement")
        #expect(closest(to: "shel", in: ["log", "shell"]) == "shell")
        #expect(editDistance(Array("kitten"), Array("sitting"), atMost: 3) == 3)
        #expect(editDistance(Array("kitten"), Array("sitting"), atMost: 2) == nil)
        #expect(editDistance(Array(""), Array("abc"), atMost: 3) == 3)
        #expect(editDistance(Array("abc"), Array(""), atMost: 2) == nil)
    }

    @Test("FIFOs, directories and devices are one line, not a hang or an unbounded read")
    func onlyRegularFiles() throws {
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fifo = dir + "/fifo.yaml"
        #expect(mkfifo(fifo, 0o600) == 0)
        let link = dir + "/zero-link.yaml"
        #expect(symlink("/dev/zero", link) == 0)
        for path in [fifo, dir, "/dev/zero", "/dev/null", link] {
            // A reader blocked opening the FIFO is released by a writer appearing (O_RDWR never blocks).
            let errors = timed("\(path)", unblock: { close(open(fifo, O_RDWR | O_NONBLOCK)) }) { Self.loadErrors(path) }
            #expect(errors == ["\(path): cannot read catalog file: not a regular file"])
        }
    }

    @Test("a catalog mounted through symlinks, as Kubernetes mounts a ConfigMap, loads")
    func symlinkedCatalog() throws {
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // The kubelet's layout: jobs.yaml -> ..data/jobs.yaml, ..data -> ..2026_12_03_09_00_00.1/
        try FileManager.default.createDirectory(
            atPath: dir + "/..2026_12_03_09_00_00.1", withIntermediateDirectories: true)
        try Self.write(Array(FuzzTests.validCatalog.utf8), to: dir + "/..2026_12_03_09_00_00.1/jobs.yaml")
        #expect(symlink("..2026_12_03_09_00_00.1", dir + "/..data") == 0)
        #expect(symlink("..data/jobs.yaml", dir + "/jobs.yaml") == 0)
        #expect(Self.loadErrors(dir + "/jobs.yaml") == [])
    }

    @Test("nesting and alias caps hold for files of 4 MiB")
    func nestingAndAliasCaps() {
        let n = YAMLReader.maxBytes
        let deep = String(repeating: "[", count: n)
        #expect(
            timed("4 MiB of '['") { catalogErrors(deep) } == [
                "jobs.yaml:1:201: document nested too deeply: more than \(YAMLReader.maxDepth) levels"
            ])
        let deepMap = String(repeating: "{a: ", count: n / 4)
        #expect(
            timed("4 MiB of '{a: '") { catalogErrors(deepMap) } == [
                "jobs.yaml:1:801: document nested too deeply: more than \(YAMLReader.maxDepth) levels"
            ])
        let block = (0..<300).map { String(repeating: "  ", count: $0) + "a:\n" }.joined()
        #expect(
            timed("300 nested block mappings") { catalogErrors(block) }?.first?.contains("nested too deeply") == true)
        // One anchor and aliases until the file is full: far more nodes than the cap.
        let aliases = "a: &a [x, y]\nb: [" + String(repeating: "*a, ", count: (n - 20) / 4) + "]\n"
        let errors = timed("4 MiB of aliases") { catalogErrors(aliases) }
        #expect(errors?.count == 1)
        #expect(errors?.first?.contains("document too large: more than \(YAMLReader.maxNodes) nodes") == true)
        // Plain scalars alone, no aliases: the node cap applies as well.
        let flat = "[" + String(repeating: "x,", count: (n - 2) / 2) + "]"
        #expect(
            timed("4 MiB flow list of scalars") { catalogErrors(flat) }?.first?.contains("document too large") == true)
    }

    @Test("4 MiB of NUL bytes, invalid UTF-8 or random bytes are errors, quickly")
    func binaryFilesAtTheCap() throws {
        let dir = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var rng = FuzzTests.Rand(state: 0xB16F11E)
        let n = YAMLReader.maxBytes
        let cases: [(String, [UInt8])] = [
            ("NUL bytes", [UInt8](repeating: 0, count: n)),
            ("0xFF bytes", [UInt8](repeating: 0xFF, count: n)),
            (
                "lone UTF-8 continuation bytes",
                Array("version: 1\njobs: ".utf8) + [UInt8](repeating: 0x80, count: n - 17)
            ),
            ("random bytes", (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }),
            ("UTF-16 BOM", [0xFF, 0xFE] + Array(repeating: [UInt8(ascii: "a"), 0], count: n / 2 - 1).joined()),
        ]
        for (name, bytes) in cases {
            let path = dir + "/catalog.yaml"
            try Self.write(bytes, to: path)
            let errors = timed("4 MiB of \(name)") { Self.loadErrors(path) }
            #expect(errors?.isEmpty == false, "\(name) must be rejected")
            for line in errors ?? [] { #expect(line.hasPrefix(path + ":"), "\(name): \(line)") }
        }
    }

    /// 64 KiB values (and runs of YAML punctuation) in every position of a valid catalog: no
    /// check may be slow on a long string the reader lets through.
    @Test("64 KiB values in every position validate in well under the bound")
    func longValuesEverywhere() {
        let n = YAMLReader.maxScalarBytes
        let fillers = ["x", "9", "1h", "*/1,", "0-59/1,", "Europe/Berlin", "é", "%", "redis://", "a-", " "]
        let values = fillers.map { f in String(String(repeating: f, count: n / f.utf8.count + 1).utf8.prefix(n))! }
        let template = """
            version: 1
            redis: { url: "@", namespace: "@", password_file: "@" }
            defaults: { lease: "@", renew_every: "@", drift: "@", placement: "@", on_lost_leadership: "@" }
            jobs:
              - name: "@"
                handler: "@"
                schedule: { cron: "@", timezone: "@" }
                timeout: "@"
                standby_delay: "@"
              - name: b
                handler: shell
                schedule: { every: "@" }
                config: { command: ["@"], "@": 1 }
              - { name: c, handler: log, schedule: "@", "@": x }
            """
        let slots = template.split(separator: "@", omittingEmptySubsequences: false)
        var slowest: (String, Duration) = ("", .zero)
        for (slot, _) in slots.dropLast().enumerated() {
            for (value, filler) in zip(values, fillers) {
                var text = ""
                for (i, part) in slots.enumerated() {
                    text += part
                    if i < slots.count - 1 { text += i == slot ? value : "v" }
                }
                let name = "slot \(slot), '\(filler)' x \(n / filler.utf8.count)"
                let catalog = text
                guard let (errors, elapsed) = timedWithDuration(name, quiet: true, { catalogErrors(catalog) }) else {
                    continue
                }
                if elapsed > slowest.1 { slowest = (name, elapsed) }
                for line in errors { #expect(line.hasPrefix("jobs.yaml:"), "\(name): \(line.prefix(200))") }
            }
        }
        print("hostile catalog: slowest 64 KiB value: \(slowest.0), \(slowest.1)")
    }

    /// Seeded random documents up to the size cap, built from YAML tokens: whatever the shape,
    /// a quick answer (most fail early in libyaml, so the structured catalogs below matter more).
    @Test("seeded random token soups up to 4 MiB finish in well under the bound")
    func randomDocumentsAtTheCap() {
        var rng = FuzzTests.Rand(state: 0x4D1B)
        let tokens = [
            "- ", "a: ", "\n", "  ", "[", "]", "{", "}", ", ", "&a ", "*a ", "\"", "'", "# c\n", "? ", "|\n", ">\n",
            "!!str ", "jobs: ", "version: 1\n", "---\n", "x", String(repeating: "y", count: 1000), "\t", "\\",
        ]
        for round in 0..<12 {
            let size = round < 4 ? YAMLReader.maxBytes : rng.below(YAMLReader.maxBytes / 4)
            var bytes: [UInt8] = []
            bytes.reserveCapacity(size + 1000)
            // Few distinct tokens per document, so that some documents are long runs of one shape.
            let palette = (0..<(1 + rng.below(5))).map { _ in Array(tokens[rng.below(tokens.count)].utf8) }
            while bytes.count < size { bytes += palette[rng.below(palette.count)] }
            let text = String(decoding: bytes, as: UTF8.self)
            let errors = timed("random document \(round), \(bytes.count) bytes") { catalogErrors(text) }
            for line in errors ?? [] { #expect(line.hasPrefix("jobs.yaml"), "round \(round): \(line.prefix(200))") }
        }
    }

    /// A random value for a job key: mostly plausible, sometimes wrong, sometimes nested or long.
    static func randomValue(_ rng: inout FuzzTests.Rand, depth: Int, anchors: inout Int) -> String {
        let words = [
            "5s", "1m30s", "continuous", "log", "shell", "\"*/5 * * * *\"", "\"0 3 * * mon-fri\"", "Europe/Berlin",
            "Europe/Berln", "spread", "any", "cancel", "exit", "1%", "0.5%", "~", "\"\"", "10x", "-1", "\"61 * * * *\"",
            "redis://127.0.0.1:6379/0", "placment", "1h2m3s500ms", "\"@daily\"", "é", "\"a\\nb\"",
        ]
        switch rng.below(depth > 3 ? 10 : 14) {
        case 0 where anchors > 0: return "*a\(rng.below(anchors))"
        case 1:
            return "\""
                + String(
                    repeating: ["x", "9", "*/1,", "Europe/"][rng.below(4)], count: rng.below(4096) >> rng.below(8))
                + "\""
        case 10, 11:
            return "["
                + (0..<rng.below(8)).map { _ in randomValue(&rng, depth: depth + 1, anchors: &anchors) }
                .joined(separator: ", ") + "]"
        case 12, 13:
            let keys = Validator.jobKeys + Validator.scheduleKeys + ["command", "x"]
            let entries = (0..<rng.below(6)).map { i in
                "k\(i)\(keys[rng.below(keys.count)]): \(randomValue(&rng, depth: depth + 1, anchors: &anchors))"
            }
            anchors += 1
            return "&a\(anchors - 1) {" + entries.joined(separator: ", ") + "}"
        default: return words[rng.below(words.count)]
        }
    }

    /// Seeded catalogs that parse: many jobs with random known and unknown keys, plausible and
    /// wrong values, nested values, anchors and aliases, up to the size cap. They reach the
    /// validator, so every check runs on them (with thousands of errors each).
    @Test("seeded structured catalogs up to 4 MiB validate in well under the bound")
    func randomCatalogsAtTheCap() {
        var rng = FuzzTests.Rand(state: 0xCA7A)
        let keys = Validator.jobKeys + ["nmae", "shedule", "x"]
        for round in 0..<8 {
            let size = round < 2 ? YAMLReader.maxBytes - 100_000 : rng.below(YAMLReader.maxBytes / 8)
            var text = "version: 1\ndefaults: { lease: 10s }\njobs:\n"
            var anchors = 0
            var jobs = 0
            while text.utf8.count < size {
                jobs += 1
                var job = "  - name: j\(jobs)\n"
                for key in (0..<rng.below(6)).map({ _ in keys[rng.below(keys.count)] }) where key != "name" {
                    job += "    \(key): \(Self.randomValue(&rng, depth: 0, anchors: &anchors))\n"
                }
                // Duplicate keys are an error of their own; keep the document readable past them.
                text += job
            }
            let catalog = text
            let errors = timed("random catalog \(round): \(jobs) jobs, \(text.utf8.count) bytes") {
                catalogErrors(catalog)
            }
            print("  \(errors?.count ?? 0) errors, first: \(errors?.first?.prefix(120) ?? "none")")
            for line in errors ?? [] { #expect(line.hasPrefix("jobs.yaml:"), "round \(round): \(line.prefix(200))") }
        }
    }
}
