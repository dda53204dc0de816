import LeaseholdTesting
import Synchronization
import Testing

@testable import RedisClient

/// Expects `body` to throw a RedisError; returns it and how long the call took.
func expectRedisError(
    _ body: () async throws -> RedisReply, sourceLocation: SourceLocation = #_sourceLocation
) async -> (RedisError?, Duration) {
    let start = ContinuousClock.now
    do {
        let reply = try await body()
        Issue.record("expected an error, got \(reply)", sourceLocation: sourceLocation)
        return (nil, ContinuousClock.now - start)
    } catch let error as RedisError {
        return (error, ContinuousClock.now - start)
    } catch {
        Issue.record("expected a RedisError, got \(error)", sourceLocation: sourceLocation)
        return (nil, ContinuousClock.now - start)
    }
}

func ping(_ connection: RedisConnection) async -> Bool {
    (try? await connection.send(["PING"])) == .status("PONG")
}

@Suite("RedisConnection against redis-server", .timeLimit(.minutes(1)))
struct ConnectionIntegrationTests {
    @Test func setGetIsBinarySafeAndErrorRepliesAreReturned() async throws {
        let server = try await RedisServerProcess()
        let connection = RedisConnection(configuration: server.configuration())
        let key: [UInt8] = [0x6b, 0x00, 0x0d, 0x0a, 0xff]
        let value: [UInt8] = Array(0...255) + [0, 0, 13, 10]
        #expect(try await connection.send([Array("SET".utf8), key, value]) == .status("OK"))
        #expect(try await connection.send([Array("GET".utf8), key]) == .bulk(value))
        #expect(try await connection.send([Array("SET".utf8), Array("empty".utf8), []]) == .status("OK"))
        #expect(try await connection.send(["GET", "empty"]) == .bulk([]))
        #expect(try await connection.send(["GET", "missing"]) == .null)
        #expect(try await connection.send(["SET", "s", "héllo ✓"]) == .status("OK"))
        #expect(try await connection.send(["GET", "s"]).string == "héllo ✓")
        let wrongType = try await connection.send(["LPUSH", "s", "x"])
        #expect(wrongType.errorMessage?.hasPrefix("WRONGTYPE") == true)
        #expect(try await connection.send(["INCRBY", "n", "-5"]) == .integer(-5))
        #expect(try await connection.send(["NOSUCHCOMMAND"]).errorMessage?.contains("unknown command") == true)
    }

    @Test func pipelineReturnsRepliesInOrder() async throws {
        let server = try await RedisServerProcess()
        let connection = RedisConnection(configuration: server.configuration())
        let commands = (0..<1000).map { _ in ["INCR", "counter"] }
        let replies = try await connection.pipeline(commands)
        #expect(replies == (1...1000).map { RedisReply.integer(Int64($0)) })
        let mixed = try await connection.pipeline([
            ["SET", "k", "v"], ["LPUSH", "k", "x"], ["GET", "k"], ["RPUSH", "l", "a", "b"], ["LRANGE", "l", "0", "-1"],
        ])
        #expect(mixed.count == 5)
        #expect(mixed[0] == .status("OK"))
        #expect(mixed[1].errorMessage?.hasPrefix("WRONGTYPE") == true)
        #expect(mixed[2] == .bulk(Array("v".utf8)))
        #expect(mixed[3] == .integer(2))
        #expect(mixed[4] == .array([.bulk(Array("a".utf8)), .bulk(Array("b".utf8))]))
        #expect(try await connection.pipeline([] as [[String]]) == [])
    }

    @Test func evaluateUsesEVALSHAAndFallsBackOnNOSCRIPT() async throws {
        let server = try await RedisServerProcess()
        let connection = RedisConnection(configuration: server.configuration())
        let script = RedisScript(
            "redis.call('SET', KEYS[1], ARGV[1]); return {redis.call('INCR', KEYS[2]), {ARGV[1], false, {1, 'deep'}}}")
        let expected = { (n: Int64) -> RedisReply in
            .array([
                .integer(n),
                .array([.bulk(Array("v".utf8)), .null, .array([.integer(1), .bulk(Array("deep".utf8))])]),
            ])
        }
        #expect(try await connection.evaluate(script, keys: ["k", "n"], arguments: ["v"]) == expected(1))
        #expect(try await server.commandCount("evalsha") == 1)
        #expect(try await server.commandCount("eval") == 1)  // the NOSCRIPT fallback: cache was empty
        #expect(try await connection.evaluate(script, keys: ["k", "n"], arguments: ["v"]) == expected(2))
        #expect(try await server.commandCount("evalsha") == 2)
        #expect(try await server.commandCount("eval") == 1)  // served from the script cache

        #expect(try await connection.send(["SCRIPT", "FLUSH"]) == .status("OK"))
        #expect(try await connection.evaluate(script, keys: ["k", "n"], arguments: ["v"]) == expected(3))
        #expect(try await server.commandCount("eval") == 2)
        #expect(try await connection.evaluate(script, keys: ["k", "n"], arguments: ["v"]) == expected(4))
        #expect(try await server.commandCount("evalsha") == 4)
        #expect(try await server.commandCount("eval") == 2)

        let failing = RedisScript("return redis.error_reply('boom')")
        let failed = try await connection.evaluate(failing, keys: [], arguments: [])
        #expect(failed.errorMessage?.hasSuffix("boom") == true, "\(failed)")
    }

    @Test func wrongPasswordIsAuthenticationFailed() async throws {
        let server = try await RedisServerProcess(.init(password: "right-pass"))
        var endpoint = server.endpoint
        #expect(try await RedisConnection(configuration: .init(endpoint: endpoint)).send(["PING"]) == .status("PONG"))

        endpoint.password = "wrong-pass"
        let (error, _) = await expectRedisError {
            try await RedisConnection(configuration: .init(endpoint: endpoint)).send(["PING"])
        }
        #expect(error?.kind == .authenticationFailed)
        #expect(error?.message.contains("wrong-pass") == false)
        #expect(error?.message.contains("redis://:***@127.0.0.1:\(server.port)/0") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("check the user and password in the Redis URL") == true)

        endpoint.password = nil
        let (noPassword, _) = await expectRedisError {
            try await RedisConnection(configuration: .init(endpoint: endpoint)).send(["PING"])
        }
        #expect(noPassword?.kind == .authenticationFailed)

        // SELECT during the handshake also reveals a missing password.
        endpoint.database = 2
        let (noPasswordSelect, _) = await expectRedisError {
            try await RedisConnection(configuration: .init(endpoint: endpoint)).send(["PING"])
        }
        #expect(noPasswordSelect?.kind == .authenticationFailed)
    }

    @Test func aclUserAndPasswordWork() async throws {
        let server = try await RedisServerProcess()
        #expect(
            try await server.command("ACL", "SETUSER", "app", "on", ">app-pass", "~*", "&*", "+@all") == .status("OK"))
        let good = try RedisEndpoint(url: "redis://app:app-pass@127.0.0.1:\(server.port)/0")
        let connection = RedisConnection(configuration: .init(endpoint: good))
        #expect(try await connection.send(["ACL", "WHOAMI"]).string == "app")

        let bad = try RedisEndpoint(url: "redis://app:nope@127.0.0.1:\(server.port)/0")
        let (error, _) = await expectRedisError {
            try await RedisConnection(configuration: .init(endpoint: bad)).send(["PING"])
        }
        #expect(error?.kind == .authenticationFailed)
        #expect(error?.message.contains("nope") == false)
        #expect(error?.message.contains("WRONGPASS") == true)
    }

    @Test func selectsTheDatabase() async throws {
        let server = try await RedisServerProcess()
        let db3 = RedisConnection(configuration: .init(endpoint: try RedisEndpoint(url: server.url(database: 3))))
        let db0 = RedisConnection(configuration: server.configuration())
        #expect(try await db3.send(["SET", "where", "three"]) == .status("OK"))
        #expect(try await db0.send(["GET", "where"]) == .null)
        #expect(try await db3.send(["GET", "where"]).string == "three")
        #expect(try await db0.send(["SELECT", "3"]) == .status("OK"))
        #expect(try await db0.send(["GET", "where"]).string == "three")

        let (error, _) = await expectRedisError {
            try await RedisConnection(configuration: .init(endpoint: try! RedisEndpoint(url: server.url(database: 99))))
                .send(["PING"])
        }
        #expect(error?.kind == .server)
        #expect(error?.message.contains("SELECT 99") == true)
    }

    @Test func unixSocketURLWorks() async throws {
        let server = try await RedisServerProcess(.init(password: "sock-pass", unixSocket: true))
        let path = try #require(server.unixSocketPath)
        let endpoint = try RedisEndpoint(url: "unix://\(path)?db=1&password=sock-pass")
        let connection = RedisConnection(configuration: .init(endpoint: endpoint))
        #expect(try await connection.send(["SET", "via", "unix"]) == .status("OK"))
        #expect(try await connection.send(["CLIENT", "INFO"]).string?.contains("db=1") == true)
        #expect(try await server.command("GET", "via") == .null)  // db 0 over TCP

        let missing = RedisConnection(configuration: .init(endpoint: try RedisEndpoint(url: "unix://\(path).missing")))
        let (error, _) = await expectRedisError { try await missing.send(["PING"]) }
        #expect(error?.kind == .connectionRefused)
    }

    @Test func connectionRefusedIsFastAndBacksOff() async throws {
        let port = FreePort.next()
        let connection = RedisConnection(
            configuration: .init(
                endpoint: try RedisEndpoint(url: "redis://127.0.0.1:\(port)"), connectTimeout: .seconds(5),
                reconnectBackoffMin: .seconds(5)))
        let (error, elapsed) = await expectRedisError { try await connection.send(["PING"]) }
        #expect(error?.kind == .connectionRefused)
        // A refusal must not wait for the connect timeout (generous: the machine may be loaded).
        #expect(elapsed < .seconds(2))
        // In backoff: fail fast with the last error's text, no sleeping, no connect attempt.
        let (again, fast) = await expectRedisError { try await connection.send(["PING"]) }
        #expect(again?.kind == .unavailable)
        #expect(again?.message.contains("refused") == true, "\(again?.message ?? "")")
        #expect(fast < .seconds(2))
    }

    @Test func unreachableHostFailsWithinConnectTimeout() async throws {
        // 192.0.2.1 is TEST-NET-1 (RFC 5737): never routed, so connect must time out or fail.
        // Depending on the host's firewall that is a timeout, "no route" or a REJECT (refused).
        let connection = RedisConnection(
            configuration: .init(
                endpoint: try RedisEndpoint(url: "redis://192.0.2.1:6379"), connectTimeout: .milliseconds(300)))
        let (error, elapsed) = await expectRedisError { try await connection.send(["PING"]) }
        #expect(
            [RedisError.Kind.timeout, .unreachable, .connectionRefused].contains(error?.kind),
            "\(String(describing: error))")
        #expect(elapsed < .seconds(2))
    }

    @Test(arguments: [("http", FakeTCPServer.Behavior.http), ("garbage", FakeTCPServer.Behavior.garbage)])
    func nonRedisPeerIsProtocolError(_ name: String, _ behavior: FakeTCPServer.Behavior) async throws {
        let fake = try FakeTCPServer(behavior: behavior)
        defer { fake.stop() }
        let connection = RedisConnection(
            configuration: .init(
                endpoint: try RedisEndpoint(url: fake.url), connectTimeout: .milliseconds(500),
                commandTimeout: .milliseconds(500)))
        let (error, elapsed) = await expectRedisError { try await connection.send(["PING"]) }
        #expect(error?.kind == .protocolError, "\(name): \(String(describing: error))")
        // Under the default timeouts (2 s) this would take 2 s; the bound leaves room for a
        // loaded machine (1.3 s seen with two CPU hogs and the whole suite running).
        #expect(elapsed < .milliseconds(1_800))
        #expect(await connection.isConnected == false)
    }

    @Test func silentOrClosingPeerFailsWithinTimeouts() async throws {
        let silent = try FakeTCPServer(behavior: .silent)
        defer { silent.stop() }
        let quiet = RedisConnection(
            configuration: .init(endpoint: try RedisEndpoint(url: silent.url), commandTimeout: .milliseconds(300)))
        let (timeout, elapsed) = await expectRedisError { try await quiet.send(["PING"]) }
        #expect(timeout?.kind == .timeout)
        #expect(timeout?.message.contains("outcome is unknown") == true)
        // The configured 300 ms, not the 2 s default; generous above for a loaded machine.
        #expect(elapsed >= .milliseconds(250) && elapsed < .milliseconds(1_800))

        let closing = try FakeTCPServer(behavior: .close)
        defer { closing.stop() }
        let closed = RedisConnection(configuration: .init(endpoint: try RedisEndpoint(url: closing.url)))
        let (error, _) = await expectRedisError { try await closed.send(["PING"]) }
        #expect(error?.kind == .connectionClosed, "\(String(describing: error))")
    }

    @Test func reconnectsAfterServerRestart() async throws {
        let server = try await RedisServerProcess()
        let connection = RedisConnection(configuration: server.configuration(connectTimeout: .milliseconds(500)))
        #expect(try await connection.send(["SET", "before", "1"]) == .status("OK"))
        await server.stop()
        let (error, _) = await expectRedisError { try await connection.send(["PING"]) }
        #expect(error?.kind == .connectionClosed || error?.kind == .connectionRefused, "\(String(describing: error))")
        #expect(await connection.isConnected == false)
        let (down, _) = await expectRedisError { try await connection.send(["PING"]) }
        #expect([RedisError.Kind.connectionRefused, .unavailable].contains(down?.kind), "\(String(describing: down))")

        try await server.restart()
        _ = try await eventually("reconnect after restart") { await ping(connection) ? true : nil }
        #expect(try await connection.send(["GET", "before"]) == .null)  // no persistence
    }

    @Test func commandTimeoutThenRecovers() async throws {
        let server = try await RedisServerProcess()
        let connection = RedisConnection(configuration: server.configuration(commandTimeout: .milliseconds(300)))
        #expect(try await connection.send(["PING"]) == .status("PONG"))
        let pausedAt = ContinuousClock.now
        #expect(try await server.command("CLIENT", "PAUSE", "1500", "ALL") == .status("OK"))
        let (error, elapsed) = await expectRedisError { try await connection.send(["SET", "k", "v"]) }
        #expect(error?.kind == .timeout, "\(String(describing: error))")
        #expect(elapsed >= .milliseconds(250) && elapsed < .milliseconds(1000))
        _ = try await eventually("the connection to work after the pause") { await ping(connection) ? true : nil }
        #expect(ContinuousClock.now - pausedAt >= .milliseconds(1400))
        // The timed-out SET has an unknown outcome (Redis drops a closed client's queued
        // input, but a partition could deliver it): either answer is legal, nothing else is.
        let outcome = try await connection.send(["GET", "k"])
        #expect(outcome == .null || outcome == .bulk(Array("v".utf8)))
    }

    @Test func blockingCallsRunOnTheConnectionsOwnQueue() async throws {
        let server = try await RedisServerProcess()
        let connection = RedisConnection(configuration: server.configuration())
        #expect(await ping(connection))
        #expect(await connection.isRunningOnOwnQueue)
        #expect(RedisConnection(configuration: server.configuration()).configuration.endpoint == server.endpoint)
    }

    @Test func closeMakesLaterCallsFail() async throws {
        let server = try await RedisServerProcess()
        let connection = RedisConnection(configuration: server.configuration())
        #expect(await ping(connection))
        await connection.close()
        let (error, _) = await expectRedisError { try await connection.send(["PING"]) }
        #expect(error?.kind == .unavailable)
    }
}

/// Collects a subscriber's stream so tests can wait for conditions with a deadline.
final class MessageCollector: Sendable {
    private let task: Task<Void, Never>

    init(_ subscriber: RedisSubscriber) {
        let box = Box()
        task = Task { for await message in subscriber.messages { box.append(message) } }
        self.box = box
    }

    private let box: Box
    final class Box: Sendable {
        let items = Mutex<[RedisMessage]>([])
        func append(_ message: RedisMessage) { items.withLock { $0.append(message) } }
    }

    var messages: [RedisMessage] { box.items.withLock { $0 } }
    func count(where predicate: (RedisMessage) -> Bool) -> Int { messages.filter(predicate).count }
    func finished() async { await task.value }
}

@Suite("RedisSubscriber against redis-server", .timeLimit(.minutes(1)))
struct SubscriberIntegrationTests {
    static func isSubscribed(_ message: RedisMessage) -> Bool {
        if case .subscribed = message { return true }
        return false
    }

    static func isDisconnected(_ message: RedisMessage) -> Bool {
        if case .disconnected = message { return true }
        return false
    }

    @Test func receivesMessagesAndResubscribesAfterRestart() async throws {
        let server = try await RedisServerProcess(.init(password: "sub-pass"))
        let subscriber = RedisSubscriber(
            configuration: server.configuration(connectTimeout: .milliseconds(500)), channels: ["alpha", "beta"])
        let collector = MessageCollector(subscriber)
        _ = try await eventually("first subscription") { collector.count(where: Self.isSubscribed) == 1 ? true : nil }
        #expect(collector.messages.first == .subscribed(channels: ["alpha", "beta"]))

        #expect(try await server.command("PUBLISH", "alpha", "hello") == .integer(1))
        #expect(try await server.command("PUBLISH", "beta", "\u{0}bin") == .integer(1))
        #expect(try await server.command("PUBLISH", "gamma", "ignored") == .integer(0))
        _ = try await eventually("two messages") {
            collector.messages.contains(.message(channel: "beta", payload: Array("\u{0}bin".utf8))) ? true : nil
        }
        #expect(collector.messages.contains(.message(channel: "alpha", payload: Array("hello".utf8))))

        try await server.restart()
        _ = try await eventually("resubscription after restart") {
            collector.count(where: Self.isSubscribed) == 2 ? true : nil
        }
        #expect(collector.count(where: Self.isDisconnected) == 1)
        #expect(try await server.command("PUBLISH", "alpha", "again") == .integer(1))
        _ = try await eventually("message after restart") {
            collector.messages.contains(.message(channel: "alpha", payload: Array("again".utf8))) ? true : nil
        }

        await subscriber.stop()
        await collector.finished()
        #expect(try await server.command("PUBSUB", "NUMSUB", "alpha").array?.last == .integer(0))
    }

    @Test func reportsDisconnectOnceAndStopsPromptlyWhileDown() async throws {
        let port = FreePort.next()
        let subscriber = RedisSubscriber(
            configuration: .init(
                endpoint: try RedisEndpoint(url: "redis://127.0.0.1:\(port)"), reconnectBackoffMin: .milliseconds(10),
                reconnectBackoffMax: .milliseconds(50)),
            channels: ["x"])
        let collector = MessageCollector(subscriber)
        let error = try await eventually("a disconnected report") { () -> RedisError? in
            for case .disconnected(let error) in collector.messages { return error }
            return nil
        }
        #expect(error.kind == .connectionRefused)
        let start = ContinuousClock.now
        await subscriber.stop()
        await collector.finished()
        #expect(ContinuousClock.now - start < .seconds(1))
        #expect(collector.count(where: Self.isDisconnected) == 1)  // once per transition, not per attempt
    }
}
