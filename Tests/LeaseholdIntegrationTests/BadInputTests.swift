import LeaseholdTesting
import RedisClient
import Testing

@testable import Leasehold

/// What a member does when the Redis it is given is wrong: bad URL, wrong password, nothing
/// listening, or something else listening. Never a crash, a hang or an acquisition.
@Suite("Bad Redis settings at the manager level", .timeLimit(.minutes(1)))
struct BadInputTests {
    /// Runs a member against `redis` until it reports Redis down; checks it acquired nothing
    /// and stops promptly. Returns the down event's detail.
    func downDetail(_ redis: RedisConfiguration, observeFor window: Duration = .milliseconds(500)) async throws
        -> String
    {
        try await withMember("alpha", redis: redis, jobs: jobs(["j"], ttl: .seconds(2)), options: options()) { member in
            let down = try await eventually("a redis-down event", within: .seconds(10)) {
                member.log.availability.first { !$0.up }
            }
            // Asserting an absence needs a window: keep watching a little while it retries.
            try await Task.sleep(for: window)
            #expect(member.log.acquisitions.isEmpty)
            #expect(member.manager.currentGrants.isEmpty)
            #expect(!member.log.availability.contains { $0.up })
            let stopping = await member.stop()
            #expect(stopping < .seconds(4), "stop took \(stopping.ms) ms")
            return down.detail ?? ""
        }
    }

    @Test func wrongPasswordSurfacesAnAuthenticationError() async throws {
        let server = try await RedisServerProcess(.init(password: "correct-horse"))
        var wrong = server.configuration()
        wrong.endpoint.password = "battery-staple"

        // The connection says what went wrong, without the password.
        let connection = RedisConnection(configuration: wrong)
        do {
            _ = try await connection.send(["PING"])
            Issue.record("PING with a wrong password succeeded")
        } catch {
            #expect(error.kind == .authenticationFailed)
            #expect(!error.message.contains("battery-staple"))
        }

        let detail = try await downDetail(wrong)
        #expect(detail.contains("authentication failed"), "\(detail)")
        #expect(!detail.contains("battery-staple"))
        #expect(try await server.command("EXISTS", keys.lease("j")).integer == 0)

        // No password at all: NOAUTH is an authentication error too.
        var none = server.configuration()
        none.endpoint.password = nil
        let noneDetail = try await downDetail(none, observeFor: .milliseconds(200))
        #expect(noneDetail.contains("authentication failed"), "\(noneDetail)")
        #expect(try await server.command("EXISTS", keys.lease("j")).integer == 0)

        // The right password works (the server itself is fine).
        try await withMember(
            "alpha", redis: server.configuration(), jobs: jobs(["j"], ttl: .seconds(2)), options: options()
        ) { member in
            _ = try await eventually("the right password leads") { member.log.acquisitions.first }
        }
    }

    @Test(arguments: [
        "", "redis//127.0.0.1:6379", "http://127.0.0.1:6379/0", "redis://127.0.0.1:notaport/0",
        "redis://127.0.0.1:99999/0", "redis://127.0.0.1:6379/db", "redis://:pass word@host/0",
    ])
    func malformedURLIsAClearError(_ url: String) throws {
        do {
            let endpoint = try RedisEndpoint(url: url)
            Issue.record("accepted \"\(url)\" as \(endpoint)")
        } catch {
            #expect(error.kind == .invalidURL)
            #expect(error.message.contains("invalid Redis URL"))
            #expect(error.message.contains("expected redis://"), "\(error.message)")
            #expect(!error.message.contains("pass word"), "password leaked: \(error.message)")
        }
    }

    @Test func unreachablePortGivesRedisDownEventsNotAHang() async throws {
        let port = FreePort.next()  // nothing listens here
        let config = RedisConfiguration(
            endpoint: RedisEndpoint(address: .tcp(host: "127.0.0.1", port: port)),
            connectTimeout: .milliseconds(500), commandTimeout: .milliseconds(500))
        let detail = try await downDetail(config)
        #expect(detail.contains("refused"), "\(detail)")
    }

    @Test(arguments: ["http", "garbage"])
    func somethingElseListeningIsAProtocolError(_ kind: String) async throws {
        let fake = try FakeTCPServer(behavior: kind == "http" ? .http : .garbage)
        defer { fake.stop() }
        let config = RedisConfiguration(
            endpoint: try RedisEndpoint(url: fake.url), connectTimeout: .milliseconds(500),
            commandTimeout: .milliseconds(500))
        let detail = try await downDetail(config)
        #expect(detail.contains("protocol error") || detail.contains("closed the connection"), "\(detail)")
    }

    @Test func silentServerTimesOutWithoutHanging() async throws {
        let fake = try FakeTCPServer(behavior: .silent)
        defer { fake.stop() }
        let config = RedisConfiguration(
            endpoint: try RedisEndpoint(url: fake.url), connectTimeout: .milliseconds(300),
            commandTimeout: .milliseconds(300))
        let detail = try await downDetail(config)
        #expect(detail.contains("no reply") || detail.contains("timed out"), "\(detail)")
    }
}
