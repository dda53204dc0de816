import LeaseholdTesting
import Testing

@testable import RedisClient

@Suite("redis-sentinel:// URLs")
struct SentinelURLTests {
    @Test func parsesTheLettuceForms() throws {
        let one = try RedisEndpoint(url: "redis-sentinel://127.0.0.1:26379#mymaster")
        #expect(one.sentinel == RedisSentinel(nodes: [.init(host: "127.0.0.1", port: 26379)], master: "mymaster"))
        #expect(one.database == 0 && one.password == nil)

        let many = try RedisEndpoint(url: "redis-sentinel://app:hunter2@s1:26380,s2,[::1]:26381/3#cache%2Emain")
        #expect(
            many.sentinel?.nodes == [
                .init(host: "s1", port: 26380), .init(host: "s2", port: 26379), .init(host: "::1", port: 26381),
            ])
        #expect(many.sentinel?.master == "cache.main")
        #expect(many.sentinel?.tls == false)
        #expect(many.username == "app" && many.password == "hunter2" && many.database == 3)
        #expect(many.sentinel?.password == nil)  // the URL's password is for the data nodes

        let secure = try RedisEndpoint(url: "rediss-sentinel://:hunter2@h:26379#m")
        #expect(secure.sentinel?.tls == true && secure.tls != nil)

        let onlyPassword = try RedisEndpoint(url: "REDIS-SENTINEL://:p%40ss@h:1#m")
        #expect(onlyPassword.password == "p@ss" && onlyPassword.username == nil)
    }

    @Test func descriptionAndMirrorRedactBothPasswords() throws {
        var endpoint = try RedisEndpoint(url: "redis-sentinel://app:hunter2@s1:26380,s2:26381/2#m")
        endpoint.sentinel?.password = "sentinelsecret"
        #expect(endpoint.description == "redis-sentinel://app:***@s1:26380,s2:26381/2#m")
        var dumped = ""
        dump(endpoint, to: &dumped)
        let configuration = RedisConfiguration(endpoint: endpoint)
        for text in [
            dumped, endpoint.debugDescription, String(reflecting: endpoint), String(describing: configuration),
        ] {
            #expect(!text.contains("hunter2") && !text.contains("sentinelsecret"), "\(text)")
        }
    }

    @Test(arguments: [
        ("redis-sentinel://h:26379", "the master name is missing"),
        ("redis-sentinel://h:26379#", "the master name after '#' is empty"),
        ("redis-sentinel://#m", "no sentinel host given"),
        ("redis-sentinel://h1,,h2#m", "an empty sentinel address"),
        ("redis-sentinel://h:0#m", "invalid port"),
        ("redis-sentinel://h:99999#m", "invalid port"),
        ("redis-sentinel://h/x#m", "invalid database"),
        ("redis-sentinel://h?db=1#m", "query parameters are not supported"),
        ("redis-sentinel://a:b:c#m", "too many ':'"),
        ("redis-sentinel://user:hunter2@h:bad#m", "invalid port"),
        ("redis-sentinel://user@h#m", "credentials need a ':'"),
        ("redis-sentinel://:@h#m", "the password is empty"),
    ])
    func rejectsMalformedURLsWithoutLeakingThePassword(_ url: String, _ reason: String) {
        #expect {
            _ = try RedisEndpoint(url: url)
        } throws: { error in
            guard let error = error as? RedisError else { return false }
            return error.kind == .invalidURL && error.message.contains(reason)
                && error.message.contains("redis-sentinel://") && !error.message.contains("hunter2")
                && !error.message.contains("\n")
        }
    }
}

/// Real primaries, replicas and sentinels (a topology takes a few seconds to settle), one
/// test at a time so their failovers do not slow each other down.
@Suite("Sentinel against redis-server", .serialized, .timeLimit(.minutes(3)))
struct SentinelIntegrationTests {
    @Test func discoversThePrimaryWithOneSentinelDownAndNamesEverySentinelWhenAllAre() async throws {
        try await withSentinelTopology(sentinelPassword: "sentinelsecret") { topology in
            await topology.sentinels[0].kill()
            let connection = RedisConnection(configuration: topology.configuration())
            #expect(try await connection.send(["SET", "k", "v"]) == .status("OK"))
            let info = try await connection.send(["INFO", "server"]).string ?? ""
            #expect(info.contains("tcp_port:\(try await topology.primaryPort())"))
            await connection.close()

            var wrong = topology.configuration()
            wrong.endpoint.sentinel?.password = "wrong-password"
            let refused = RedisConnection(configuration: wrong)
            let (error, _) = await expectRedisError { try await refused.send(["PING"]) }
            #expect(
                error?.message.contains("no sentinel gave the primary of 'm'") == true, "\(String(describing: error))")
            #expect(error?.message.contains("wrong-password") == false)
            await refused.close()

            for sentinel in topology.sentinels { await sentinel.kill() }
            let fresh = RedisConnection(configuration: topology.configuration(commandTimeout: .seconds(1)))
            let (down, elapsed) = await expectRedisError { try await fresh.send(["PING"]) }
            let message = down?.message ?? ""
            for sentinel in topology.sentinels { #expect(message.contains("127.0.0.1:\(sentinel.port)"), "\(message)") }
            #expect(!message.contains("sentinelsecret") && !message.contains("\n"))
            #expect(elapsed < .seconds(10))
            await fresh.close()
        }
    }

    @Test func aConnectionAndASubscriberFollowAFailoverWithoutBeingRecreated() async throws {
        try await withSentinelTopology { topology in
            let connection = RedisConnection(configuration: topology.configuration())
            let subscriber = RedisSubscriber(configuration: topology.configuration(), channels: ["ch"])
            var messages = subscriber.messages.makeAsyncIterator()
            guard case .subscribed = await messages.next() else {
                Issue.record("the subscriber did not subscribe")
                return
            }
            #expect(try await connection.send(["SET", "before", "1"]) == .status("OK"))
            // The process-wide watcher, shared with the connection and the subscriber.
            let monitor = try #require(SentinelMonitor.retain(for: topology.configuration()))
            defer { monitor.release() }
            let old = try await topology.primaryPort()
            #expect(monitor.knownPrimary?.port == old)
            let new = try await topology.failover()
            #expect(new.port != old)
            // +switch-master alone moves the shared view, before any call fails.
            try await eventually("the watcher saw +switch-master", within: .seconds(10)) {
                monitor.knownPrimary?.port == new.port
            }
            try await eventually("the same connection talks to the new primary", within: .seconds(30)) {
                let info = (try? await connection.send(["INFO", "server"]).string) ?? ""
                return info.contains("tcp_port:\(new.port)")
            }
            #expect(try await connection.send(["SET", "after", "1"]) == .status("OK"))
            #expect(try await new.command("GET", "after") == .bulk(Array("1".utf8)))
            // The subscriber moved too: a message published on the new primary arrives.
            try await eventually("the subscriber resubscribed on the new primary", within: .seconds(30)) {
                (try? await new.command("PUBSUB", "NUMSUB", "ch"))?.array?.last?.integer == 1
            }
            _ = try await new.command("PUBLISH", "ch", "hello")
            var received = false
            while !received, let message = await messages.next() {
                if case .message(_, let payload) = message { received = payload == Array("hello".utf8) }
            }
            #expect(received)
            await subscriber.stop()
            await connection.close()
        }
    }

    @Test func readOnlyDropsTheContextAndTheOutcomeCountsAsUnknown() async throws {
        try await withSentinelTopology { topology in
            let connection = RedisConnection(configuration: topology.configuration())
            #expect(try await connection.send(["SET", "k", "1"]) == .status("OK"))
            let primary = try await topology.primary()
            let replica = topology.servers.first { $0.port != primary.port }!
            // Demote the primary behind the sentinels' back: the next write is refused.
            #expect(try await primary.command("REPLICAOF", "127.0.0.1", String(replica.port)) == .status("OK"))
            let (error, _) = await expectRedisError { try await connection.send(["SET", "k", "2"]) }
            #expect(error?.kind == .readOnly, "\(String(describing: error))")
            #expect(await connection.isConnected == false)
            // Rediscovery: the sentinels still name the demoted node, and ROLE catches it.
            let (role, _) = await expectRedisError { try await connection.send(["SET", "k", "3"]) }
            #expect(role?.kind == .server || role?.kind == .unavailable, "\(String(describing: role))")
            #expect(role?.message.contains("not the primary") == true, "\(String(describing: role))")
            _ = try await primary.command("REPLICAOF", "NO", "ONE")
            try await eventually("writes work again once a primary is back", within: .seconds(30)) {
                (try? await connection.send(["SET", "k", "4"])) == .status("OK")
            }
            await connection.close()
        }
    }

    @Test func waitCountsReplicaAcknowledgementsInTheSameRoundTrip() async throws {
        try await withSentinelTopology(sentinels: 0) { topology in
            let primary = topology.servers[0]
            let connection = RedisConnection(configuration: primary.configuration())
            let script = RedisScript("return redis.call('INCR', KEYS[1])")
            _ = try await connection.send(["SCRIPT", "FLUSH"])  // the NOSCRIPT fallback is part of the test
            let (reply, acknowledged) = try await connection.evaluate(
                script, keys: ["n"], arguments: [], waitingFor: 2, timeout: .milliseconds(1500))
            // WAIT returns as soon as both replicas acknowledged: the longer timeout (under the 2 s
            // command timeout that bounds the round trip) only waits
            // out a loaded machine (500 ms was not enough beside two CPU hogs).
            #expect(reply == .integer(1) && acknowledged == 2)
            for replica in topology.servers.dropFirst() { await replica.kill() }
            let start = ContinuousClock.now
            let (again, none) = try await connection.evaluate(
                script, keys: ["n"], arguments: [], waitingFor: 1, timeout: .milliseconds(300))
            #expect(again == .integer(2) && none == 0)
            #expect(ContinuousClock.now - start >= .milliseconds(250))
            await connection.close()
        }
    }
}
