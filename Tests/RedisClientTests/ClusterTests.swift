import LeaseholdTesting
import Testing

@testable import RedisClient

/// Slot computation and `redis-cluster://` parsing, no server needed.
struct ClusterSlotTests {
    /// Values checked against a real `redis-cli CLUSTER KEYSLOT` (Redis 7.0.15).
    @Test func slotsMatchTheServer() {
        #expect(RedisCluster.slot(of: "foo") == 12182)
        #expect(RedisCluster.slot(of: "user1000") == 3443)
        #expect(RedisCluster.slot(of: "{user1000}.following") == 3443)
        #expect(RedisCluster.slot(of: "{user1000}.followers") == 3443)
        #expect(RedisCluster.slot(of: "") == 0)
        // An empty tag does not count: the whole key is hashed.
        #expect(RedisCluster.slot(of: "{}foo") == RedisCluster.slot(of: "{}foo".utf8.map { $0 }))
        #expect(RedisCluster.slot(of: "{}foo") != RedisCluster.slot(of: "foo"))
        // Only the first tag counts.
        #expect(RedisCluster.slot(of: "{leasehold}:{job}:lease") == RedisCluster.slot(of: "leasehold"))
    }

    @Test func routingUsesTheFirstKey() {
        func slot(_ words: String...) -> Int? { RedisCluster.routingSlot(words.map { Array($0.utf8) }) }
        #expect(slot("GET", "foo") == 12182)
        #expect(slot("evalsha", "abc", "2", "{user1000}.a", "foo", "x") == 3443)
        #expect(slot("EVAL", "return 1", "0", "foo") == nil)
        #expect(slot("PING") == nil)
        #expect(slot("PUBLISH", "foo", "x") == nil)
        #expect(slot("SCRIPT", "LOAD", "return 1") == nil)
        #expect(slot("WAIT", "1", "100") == nil)
    }

    @Test func parsesClusterURLs() throws {
        let endpoint = try RedisEndpoint(url: "redis-cluster://u:secret@127.0.0.1:7000,[::1]:7001,h.example:7002")
        #expect(endpoint.cluster?.nodes.map(\.description) == ["127.0.0.1:7000", "[::1]:7001", "h.example:7002"])
        #expect(endpoint.cluster?.tls == false)
        #expect(endpoint.tls == nil)
        #expect(endpoint.username == "u")
        #expect(endpoint.password == "secret")
        #expect(endpoint.description == "redis-cluster://u:***@127.0.0.1:7000,[::1]:7001,h.example:7002/0")
        #expect(!String(reflecting: endpoint).contains("secret"))
        let tls = try RedisEndpoint(url: "rediss-cluster://127.0.0.1:7000/0")
        #expect(tls.cluster?.tls == true)
        #expect(tls.tls != nil)
        #expect(tls.description == "rediss-cluster://127.0.0.1:7000/0")
    }

    @Test func rejectsBadClusterURLs() {
        let cases: [(String, String)] = [
            ("redis-cluster://127.0.0.1:7000/2", "only database 0"),
            ("redis-cluster://127.0.0.1", "has no port"),
            ("redis-cluster://:pw@127.0.0.1:7000,", "stray ','"),
            ("redis-cluster://127.0.0.1:7000#m", "fragment"),
            ("redis-cluster://:@127.0.0.1:7000", "password is empty"),
            ("redis-cluster://", "no seed"),
        ]
        for (url, reason) in cases {
            do {
                _ = try RedisEndpoint(url: url)
                Issue.record("\(url) parsed")
            } catch {
                #expect(error.kind == .invalidURL)
                #expect(error.message.contains(reason), "\(url): \(error.message)")
                #expect(!error.message.contains("\n"))
                #expect(error.message.contains("redis-cluster://[user:password@]host:port"))
            }
        }
        do {
            _ = try RedisEndpoint(url: "redis-cluster://:hunter2@127.0.0.1:7000/3")
        } catch {
            #expect(!error.message.contains("hunter2"))
        }
    }

    @Test func parsesRedirects() {
        #expect(
            ClusterRedirect(.error("MOVED 3999 127.0.0.1:6381"))
                == .moved(slot: 3999, node: .init(host: "127.0.0.1", port: 6381)))
        #expect(ClusterRedirect(.error("ASK 1 [::1]:7000")) == .ask(slot: 1, node: .init(host: "::1", port: 7000)))
        #expect(ClusterRedirect(.error("ERR wrong")) == nil)
        #expect(ClusterRedirect(.status("MOVED 1 a:1")) == nil)
    }
}

/// A ``RedisConnection`` on a real three-primary cluster.
@Suite(.serialized)
struct ClusterConnectionTests {
    /// Keys on different nodes; returns one key per node (by slot owner port).
    static func keysOnEveryNode(_ cluster: RedisClusterTopology) async throws -> [Int: String] {
        var keys: [Int: String] = [:]
        var index = 0
        while keys.count < cluster.servers.count {
            let key = "k\(index)"
            index += 1
            let owner = try await cluster.owner(of: RedisCluster.slot(of: key))
            if keys[owner.port] == nil { keys[owner.port] = key }
        }
        return keys
    }

    @Test(.timeLimit(.minutes(2))) func routesEachCommandToTheOwnerOfItsKey() async throws {
        try await withRedisCluster { cluster in
            let connection = RedisConnection(configuration: cluster.configuration())
            let keys = try await Self.keysOnEveryNode(cluster)
            for (port, key) in keys {
                #expect(try await connection.send(["SET", key, "v\(port)"]) == .status("OK"))
                // The value is really on the owner (asked directly, not through the cluster client).
                let owner = cluster.servers.first { $0.port == port }!
                #expect(try await owner.command("GET", key).string == "v\(port)")
            }
            for (port, key) in keys {
                #expect(try await connection.send(["GET", key]).string == "v\(port)")
                let script = RedisScript("return redis.call('GET', KEYS[1])")
                #expect(try await connection.evaluate(script, keys: [key], arguments: []).string == "v\(port)")
                let replies = try await connection.pipeline([["INCR", "{\(key)}:n"], ["INCR", "{\(key)}:n"]])
                #expect(replies == [.integer(1), .integer(2)])
            }
            #expect(try await connection.send(["PING"]) == .status("PONG"))
            // Cross-slot scripts fail as the server says (LeaseManager's legacy-layout check relies on it).
            let keyList = Array(keys.values)
            let reply = try await connection.evaluate(
                RedisScript("return 1"), keys: [keyList[0], keyList[1]], arguments: [])
            #expect(reply.errorMessage?.hasPrefix("CROSSSLOT") == true, "\(reply)")
            await connection.close()
        }
    }

    @Test(.timeLimit(.minutes(2))) func followsMovedAfterASlotMigrated() async throws {
        try await withRedisCluster { cluster in
            let connection = RedisConnection(configuration: cluster.configuration())
            let key = "{moved}:a"
            let slot = RedisCluster.slot(of: key)
            #expect(try await connection.send(["SET", key, "1"]) == .status("OK"))
            let before = try await cluster.owner(of: slot)
            let after = try await cluster.migrate(slot: slot)
            #expect(before.port != after.port)
            // The connection still points at the old owner, which answers MOVED; it follows.
            #expect(try await connection.send(["INCR", key]) == .integer(2))
            #expect(try await after.command("GET", key).string == "2")
            #expect(
                try await connection.pipeline([["INCR", key], ["GET", key]]) == [.integer(3), .bulk(Array("3".utf8))])
            let script = RedisScript("return redis.call('INCR', KEYS[1])")
            #expect(try await connection.evaluate(script, keys: [key], arguments: []) == .integer(4))
            await connection.close()
        }
    }

    @Test(.timeLimit(.minutes(2))) func followsAskDuringAMigration() async throws {
        try await withRedisCluster { cluster in
            let connection = RedisConnection(configuration: cluster.configuration())
            let key = "{ask}:a"
            let slot = RedisCluster.slot(of: key)
            #expect(try await connection.send(["SET", key, "1"]) == .status("OK"))
            let source = try await cluster.owner(of: slot)
            let target = cluster.servers[(cluster.servers.firstIndex { $0 === source }! + 1) % cluster.servers.count]
            try await cluster.beginMigration(slot: slot, from: source, to: target)
            try await cluster.moveKeys(slot: slot, from: source, to: target)
            // The source still owns the slot but no longer has the key: it answers ASK.
            #expect(try await source.command("GET", key).errorMessage?.hasPrefix("ASK") == true)
            #expect(try await connection.send(["INCR", key]) == .integer(2))
            #expect(try await connection.send(["GET", key]).string == "2")
            #expect(try await target.command("ASKING").string == "OK")
            try await cluster.finishMigration(slot: slot, from: source, to: target)
            #expect(try await connection.send(["INCR", key]) == .integer(3))
            await connection.close()
        }
    }

    /// A multi-key script with a missing key gets TRYAGAIN while its slot migrates (nothing
    /// ran): the client retries it until the migration is done.
    @Test(.timeLimit(.minutes(2))) func retriesTryAgainWhileTheSlotMigrates() async throws {
        try await withRedisCluster { cluster in
            let connection = RedisConnection(configuration: cluster.configuration(commandTimeout: .seconds(4)))
            let key = "{again}:a"
            let slot = RedisCluster.slot(of: key)
            #expect(try await connection.send(["SET", key, "1"]) == .status("OK"))
            let source = try await cluster.owner(of: slot)
            let target = cluster.servers[(cluster.servers.firstIndex { $0 === source }! + 1) % cluster.servers.count]
            try await cluster.beginMigration(slot: slot, from: source, to: target)
            let script = RedisScript("return redis.call('INCR', KEYS[1]) + redis.call('EXISTS', KEYS[2])")
            #expect(
                try await source.command("EVAL", script.source, "2", key, "{again}:missing").errorMessage?
                    .hasPrefix("TRYAGAIN") == true)
            let migration = Task {
                try await Task.sleep(for: .milliseconds(300))
                try await cluster.moveKeys(slot: slot, from: source, to: target)
                try await Task.sleep(for: .milliseconds(300))
                try await cluster.finishMigration(slot: slot, from: source, to: target)
            }
            let started = ContinuousClock.now
            let reply = try await connection.evaluate(script, keys: [key, "{again}:missing"], arguments: [])
            #expect(reply == .integer(2), "\(reply)")
            #expect(ContinuousClock.now - started >= .milliseconds(500))
            try await migration.value
            await connection.close()
        }
    }

    /// Classic PUBLISH is broadcast cluster-wide: a subscriber on any node hears a message
    /// published on another; when its node dies it subscribes on the next seed.
    @Test(.timeLimit(.minutes(2))) func subscriberHearsPublishesFromAnyNodeAndMovesOnWhenItsNodeDies() async throws {
        try await withRedisCluster { cluster in
            let subscriber = RedisSubscriber(
                configuration: cluster.configuration(commandTimeout: .milliseconds(500)), channels: ["{ns}:released"])
            var messages = subscriber.messages.makeAsyncIterator()
            guard case .subscribed = await messages.next() else {
                Issue.record("the subscriber did not subscribe")
                return
            }
            // The first seed is the one subscribed to; publish on the last node (its count
            // is of its own subscribers only: 0).
            #expect(try await cluster.servers[2].command("PUBLISH", "{ns}:released", "a").integer == 0)
            #expect(await messages.next() == .message(channel: "{ns}:released", payload: Array("a".utf8)))
            await cluster.servers[0].kill()
            var resubscribed = false
            while let message = await messages.next() {
                if case .subscribed = message {
                    resubscribed = true
                    break
                }
            }
            #expect(resubscribed)
            // Subscribed on the second seed now: the bus carries the message there.
            #expect(
                try await cluster.servers[1].command("PUBSUB", "NUMSUB", "{ns}:released").array?.last == .integer(1))
            _ = try await cluster.servers[2].command("PUBLISH", "{ns}:released", "b")
            #expect(await messages.next() == .message(channel: "{ns}:released", payload: Array("b".utf8)))
            await subscriber.stop()
        }
    }

    @Test(.timeLimit(.minutes(1))) func unreachableSeedsNameEveryOneTried() async throws {
        let ports = [FreePort.next(), FreePort.next()]
        let url = "redis-cluster://:pw@" + ports.map { "127.0.0.1:\($0)" }.joined(separator: ",")
        let connection = RedisConnection(
            configuration: RedisConfiguration(
                endpoint: try RedisEndpoint(url: url), connectTimeout: .milliseconds(300),
                commandTimeout: .milliseconds(300)))
        do {
            _ = try await connection.send(["GET", "x"])
            Issue.record("a cluster with no node answered")
        } catch {
            for port in ports { #expect(error.message.contains("127.0.0.1:\(port)"), "\(error.message)") }
            #expect(error.message.contains("CLUSTER SLOTS"))
            #expect(!error.message.contains("pw"))
        }
        await connection.close()
    }
}
