import Testing

@testable import RedisClient

@Suite("RedisEndpoint URLs")
struct EndpointTests {
    struct Valid: Sendable, CustomTestStringConvertible {
        let url: String
        let address: RedisEndpoint.Address
        let username: String?
        let password: String?
        let database: Int
        var testDescription: String { url }
    }

    static let valid: [Valid] = [
        Valid(
            url: "redis://localhost", address: .tcp(host: "localhost", port: 6379), username: nil, password: nil,
            database: 0),
        Valid(
            url: "redis://127.0.0.1:6390", address: .tcp(host: "127.0.0.1", port: 6390), username: nil, password: nil,
            database: 0),
        Valid(
            url: "redis://127.0.0.1:6390/3", address: .tcp(host: "127.0.0.1", port: 6390), username: nil, password: nil,
            database: 3),
        Valid(url: "redis://host/", address: .tcp(host: "host", port: 6379), username: nil, password: nil, database: 0),
        Valid(
            url: "redis://:s3cret@redis.internal:7000/1", address: .tcp(host: "redis.internal", port: 7000),
            username: nil, password: "s3cret", database: 1),
        Valid(
            url: "redis://app:pw@10.0.0.5", address: .tcp(host: "10.0.0.5", port: 6379), username: "app",
            password: "pw", database: 0),
        Valid(url: "REDIS://h", address: .tcp(host: "h", port: 6379), username: nil, password: nil, database: 0),
        Valid(
            url: "redis://[::1]:6380/2", address: .tcp(host: "::1", port: 6380), username: nil, password: nil,
            database: 2),
        Valid(url: "redis://[::1]", address: .tcp(host: "::1", port: 6379), username: nil, password: nil, database: 0),
        Valid(
            url: "redis://:p%40ss%3Aw%2Frd@h", address: .tcp(host: "h", port: 6379), username: nil,
            password: "p@ss:w/rd", database: 0),
        Valid(
            url: "redis://:p@ss@h:1", address: .tcp(host: "h", port: 1), username: nil, password: "p@ss", database: 0),
        Valid(
            url: "unix:///tmp/redis.sock", address: .unix(path: "/tmp/redis.sock"), username: nil, password: nil,
            database: 0),
        Valid(
            url: "unix:///var/run/r.sock?db=4", address: .unix(path: "/var/run/r.sock"), username: nil, password: nil,
            database: 4),
        Valid(
            url: "unix:///r.sock?db=1&password=x%26y&username=bob", address: .unix(path: "/r.sock"), username: "bob",
            password: "x&y", database: 1),
    ]

    @Test(arguments: valid)
    func parsesValidURL(_ example: Valid) throws {
        let endpoint = try RedisEndpoint(url: example.url)
        #expect(endpoint.address == example.address)
        #expect(endpoint.username == example.username)
        #expect(endpoint.password == example.password)
        #expect(endpoint.database == example.database)
    }

    static let malformed: [(String, String)] = [
        ("", "empty"),
        ("localhost:6379", "missing scheme"),
        ("http://localhost", "unsupported scheme"),
        ("rediss://h:0", "invalid port"),
        ("rediss://h?verify=false", "query parameters"),
        ("redis://", "host is missing"),
        ("redis://:6379", "host is missing"),
        ("redis://h:abc", "invalid port"),
        ("redis://h:0", "invalid port"),
        ("redis://h:70000", "invalid port"),
        ("redis://h:", "invalid port"),
        ("redis://h/abc", "invalid database"),
        ("redis://h/-1", "invalid database"),
        ("redis://h/0/1", "invalid database"),
        ("redis://[::1", "unterminated IPv6"),
        ("redis://::1:6379", "IPv6 addresses go in brackets"),
        ("redis://h?db=1", "query parameters"),
        ("redis://ho st", "whitespace"),
        ("redis://h!x", "invalid host"),
        ("redis://user@h", "need a ':'"),
        ("redis://user:@h", "password is empty"),
        ("redis://:%zz@h", "bad percent-encoding"),
        ("unix://", "absolute path"),
        ("unix://relative.sock", "absolute path"),
        ("unix:///tmp/?db=1", "directory"),
        ("unix:///tmp/r.sock?db=x", "invalid database"),
        ("unix:///tmp/r.sock?foo=1", "unknown query parameter"),
        ("unix:///tmp/r.sock?db", "malformed query item"),
    ]

    @Test(arguments: malformed)
    func rejectsMalformedURL(_ url: String, _ reason: String) {
        #expect {
            _ = try RedisEndpoint(url: url)
        } throws: { error in
            guard let error = error as? RedisError else { return false }
            return error.kind == .invalidURL && error.message.contains(reason)
                && error.message.contains("expected redis://")
                && !error.message.contains("\n")
        }
    }

    @Test func descriptionRedactsPassword() throws {
        let endpoint = try RedisEndpoint(url: "redis://app:hunter2@127.0.0.1:6390/0")
        #expect(endpoint.description == "redis://app:***@127.0.0.1:6390/0")
        #expect(!endpoint.debugDescription.contains("hunter2"))
        #expect(!String(reflecting: endpoint).contains("hunter2"))
        var dumped = ""
        dump(endpoint, to: &dumped)
        #expect(!dumped.contains("hunter2"))
        let configuration = RedisConfiguration(endpoint: endpoint)
        #expect(!String(describing: configuration).contains("hunter2"))
        #expect(!String(reflecting: configuration).contains("hunter2"))

        let onlyPassword = try RedisEndpoint(url: "redis://:hunter2@[::1]")
        #expect(onlyPassword.description == "redis://:***@[::1]:6379/0")
        let unix = try RedisEndpoint(url: "unix:///tmp/r.sock?password=hunter2&db=2")
        #expect(unix.description == "unix:///tmp/r.sock?db=2&password=***")
        #expect(try RedisEndpoint(url: "redis://h").description == "redis://h:6379/0")
    }

    @Test(arguments: [
        "redis://app:hunter2@h:notaport",
        "redis://:hunter2@h/x",
        "unix:///tmp/r.sock?password=hunter2&bogus=1",
        "rediss://:hunter2@h/x",
        "redis://:hunter2@ho st",
        ":hunter2@host",
        "redis:/:hunter2@h",
        "redis:hunter2@h",
        "app:hunter2@host:6379",
        "redis//app:hunter2@h",
    ])
    func errorsRedactPassword(_ url: String) {
        do {
            _ = try RedisEndpoint(url: url)
            Issue.record("expected \(url) to be rejected")
        } catch {
            #expect(error.kind == .invalidURL)
            #expect(!error.message.contains("hunter2"), "\(error.message)")
            #expect(!String(describing: error).contains("hunter2"))
            #expect(error.message.contains("***"))
        }
    }

    @Test func parsesTLSURL() throws {
        let endpoint = try RedisEndpoint(url: "rediss://app:hunter2@cache.example.com:6380/3")
        #expect(endpoint.address == .tcp(host: "cache.example.com", port: 6380))
        #expect(endpoint.username == "app")
        #expect(endpoint.password == "hunter2")
        #expect(endpoint.database == 3)
        #expect(endpoint.tls == RedisTLSConfiguration())
        #expect(endpoint.tls?.verify == true)
        #expect(endpoint.tlsServerName == "cache.example.com")
        #expect(endpoint.description == "rediss://app:***@cache.example.com:6380/3")
        var dumped = ""
        dump(endpoint, to: &dumped)
        #expect(!dumped.contains("hunter2"))
        #expect(try RedisEndpoint(url: "rediss://h").description == "rediss://h:6379/0")
        #expect(try RedisEndpoint(url: "redis://h").tls == nil)
        var named = endpoint
        named.tls?.serverName = "other.example.com"
        #expect(named.tlsServerName == "other.example.com")
    }

    @Test func backoffIsCappedAndJittered() {
        var backoff = Backoff(minimum: .milliseconds(50), maximum: .seconds(2))
        var delays: [Duration] = []
        for _ in 0..<12 { delays.append(backoff.next()) }
        #expect(delays[0] >= .milliseconds(25) && delays[0] <= .milliseconds(50))
        #expect(delays[1] >= .milliseconds(50) && delays[1] <= .milliseconds(100))
        for delay in delays { #expect(delay <= .seconds(2)) }
        #expect(delays.last! >= .seconds(1))
        backoff.reset()
        #expect(backoff.next() <= .milliseconds(50))
    }
}
