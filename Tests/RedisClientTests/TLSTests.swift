import Foundation
import LeaseholdTesting
import Testing

@testable import RedisClient

/// The transport's TLS layer against a real `redis-server` serving TLS only, with
/// certificates made by `openssl` for each suite run.
@Suite("TLS against redis-server", .timeLimit(.minutes(1)))
struct TLSTests {
    static func tlsServer(requireClientCertificates: Bool = false, password: String? = nil) async throws -> (
        RedisServerProcess, TestCertificates
    ) {
        let certificates = try await TestCertificates.make()
        let server = try await RedisServerProcess(
            .init(
                password: password,
                tls: .init(certificates: certificates, requireClientCertificates: requireClientCertificates)))
        return (server, certificates)
    }

    static func configuration(
        _ server: RedisServerProcess, _ tls: RedisTLSConfiguration?, host: String = "127.0.0.1",
        connectTimeout: Duration = .seconds(2)
    ) -> RedisConfiguration {
        var endpoint = server.endpoint
        endpoint.address = .tcp(host: host, port: server.port)
        endpoint.tls = tls
        return RedisConfiguration(endpoint: endpoint, connectTimeout: connectTimeout, commandTimeout: .seconds(2))
    }

    static func expectOneLine(_ error: RedisError?, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(error != nil, sourceLocation: sourceLocation)
        #expect(error?.message.contains("\n") == false, sourceLocation: sourceLocation)
    }

    @Test func commandsPipelinesScriptsAndSubscriberWorkWithTheRightCA() async throws {
        let (server, certificates) = try await Self.tlsServer(password: "tls-secret")
        let connection = RedisConnection(
            configuration: Self.configuration(server, RedisTLSConfiguration(caFile: certificates.caFile)))
        #expect(try await connection.send(["PING"]) == .status("PONG"))
        let big = [UInt8](repeating: 0x61, count: 200_000)  // many TLS records each way
        #expect(try await connection.send([Array("SET".utf8), Array("big".utf8), big]) == .status("OK"))
        #expect(try await connection.send([Array("GET".utf8), Array("big".utf8)]) == .bulk(big))
        let replies = try await connection.pipeline((0..<100).map { ["INCR", "counter-\($0 % 3)"] })
        #expect(replies.count == 100)
        #expect(replies.last == .integer(34))  // counter-0 is incremented 34 times
        let script = RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        #expect(try await connection.evaluate(script, keys: ["n"], arguments: ["5"]) == .integer(5))
        #expect(try await connection.evaluate(script, keys: ["n"], arguments: ["5"]) == .integer(10))
        #expect(try await server.commandCount("evalsha") >= 2)
        // The server sees a TLS client: CLIENT INFO has no flag for it, but the plain port is 0.
        #expect(server.cli("CONFIG", "GET", "port").hasSuffix("0"))

        let subscriber = RedisSubscriber(configuration: server.configuration(), channels: ["alpha"])
        let collector = MessageCollector(subscriber)
        _ = try await eventually("subscription over TLS") {
            collector.count(where: SubscriberIntegrationTests.isSubscribed) == 1 ? true : nil
        }
        let payload = String(repeating: "x", count: 50_000)
        _ = try await connection.pipeline([["PUBLISH", "alpha", "one"], ["PUBLISH", "alpha", payload]])
        _ = try await eventually("both messages over TLS") {
            collector.messages.contains(.message(channel: "alpha", payload: Array(payload.utf8))) ? true : nil
        }
        #expect(collector.messages.contains(.message(channel: "alpha", payload: Array("one".utf8))))
        await subscriber.stop()
        await connection.close()
    }

    @Test func wrongCAFailsWithOneLineNamingTheReason() async throws {
        let (server, certificates) = try await Self.tlsServer(password: "tls-secret")
        let connection = RedisConnection(
            configuration: Self.configuration(server, RedisTLSConfiguration(caFile: certificates.wrongCAFile)))
        let (error, _) = await expectRedisError { try await connection.send(["PING"]) }
        Self.expectOneLine(error)
        #expect(error?.kind == .tls)
        // OpenSSL's X509 reason: the server sends its CA along, so the chain ends in an untrusted root.
        let reasons = ["self-signed certificate in certificate chain", "unable to get local issuer certificate"]
        #expect(
            reasons.contains { error?.message.contains("failed verification: \($0)") == true },
            "\(error?.message ?? "")")
        #expect(error?.message.contains(certificates.wrongCAFile) == true)
        #expect(error?.message.contains("tls-secret") == false)

        // verify: false encrypts without checking: the same CA then connects.
        let unverified = RedisConnection(
            configuration: Self.configuration(
                server, RedisTLSConfiguration(caFile: certificates.wrongCAFile, verify: false)))
        #expect(try await unverified.send(["PING"]) == .status("PONG"))
    }

    @Test func wrongServerNameFailsNamingTheName() async throws {
        let (server, certificates) = try await Self.tlsServer()
        let wrong = RedisConnection(
            configuration: Self.configuration(
                server, RedisTLSConfiguration(caFile: certificates.caFile, serverName: "redis.example.com")))
        let (error, _) = await expectRedisError { try await wrong.send(["PING"]) }
        Self.expectOneLine(error)
        #expect(error?.kind == .tls)
        #expect(error?.message.contains("'redis.example.com'") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("hostname mismatch") == true, "\(error?.message ?? "")")

        // The certificate names localhost (DNS SAN): by that name, or with it as server_name, it verifies.
        let byName = RedisConnection(
            configuration: Self.configuration(
                server, RedisTLSConfiguration(caFile: certificates.caFile), host: "localhost"))
        #expect(try await byName.send(["PING"]) == .status("PONG"))
        let named = RedisConnection(
            configuration: Self.configuration(
                server, RedisTLSConfiguration(caFile: certificates.caFile, serverName: "localhost")))
        #expect(try await named.send(["PING"]) == .status("PONG"))
        // An IP not in the certificate: the IP SAN check fails (no SNI for IP literals).
        let wrongIP = RedisConnection(
            configuration: Self.configuration(
                server, RedisTLSConfiguration(caFile: certificates.caFile, serverName: "127.0.0.2")))
        let (ipError, _) = await expectRedisError { try await wrongIP.send(["PING"]) }
        #expect(ipError?.message.contains("'127.0.0.2'") == true, "\(ipError?.message ?? "")")
    }

    @Test func clientCertificateRequiredGivenWorksMissingFailsClearly() async throws {
        let (server, certificates) = try await Self.tlsServer(requireClientCertificates: true)
        let given = RedisConnection(configuration: server.configuration())
        #expect(try await given.send(["PING"]) == .status("PONG"))

        let missing = RedisConnection(
            configuration: Self.configuration(server, RedisTLSConfiguration(caFile: certificates.caFile)))
        let (error, elapsed) = await expectRedisError { try await missing.send(["PING"]) }
        Self.expectOneLine(error)
        #expect(error?.kind == .tls)
        #expect(error?.message.contains("client certificate") == true, "\(error?.message ?? "")")
        #expect(elapsed < .seconds(3))
        // Whether the server's alert or its reset arrives first varies with load: loop a few
        // times so both wordings are exercised and each must name the client certificate.
        for _ in 0..<5 {
            let again = RedisConnection(
                configuration: Self.configuration(server, RedisTLSConfiguration(caFile: certificates.caFile)))
            let (error, _) = await expectRedisError { try await again.send(["PING"]) }
            #expect(error?.kind == .tls, "\(error?.message ?? "")")
            #expect(error?.message.contains("client certificate") == true, "\(error?.message ?? "")")
        }
    }

    @Test func handshakeAgainstASilentPeerTimesOutWithinTheConnectTimeout() async throws {
        let silent = try FakeTCPServer(behavior: .silent)
        defer { silent.stop() }
        var endpoint = try RedisEndpoint(url: "rediss://127.0.0.1:\(silent.port)/0")
        endpoint.tls?.verify = false
        let connection = RedisConnection(
            configuration: .init(endpoint: endpoint, connectTimeout: .milliseconds(500), commandTimeout: .seconds(5)))
        let (error, elapsed) = await expectRedisError { try await connection.send(["PING"]) }
        Self.expectOneLine(error)
        #expect(error?.kind == .timeout)
        #expect(error?.message.contains("TLS handshake") == true, "\(error?.message ?? "")")
        #expect(elapsed >= .milliseconds(450))
        #expect(elapsed < .seconds(2), "the handshake must be bounded by the 500 ms connect timeout, took \(elapsed)")
    }

    @Test func plainClientAgainstTLSServerFailsCleanly() async throws {
        let (server, _) = try await Self.tlsServer()
        let plain = RedisConnection(configuration: Self.configuration(server, nil))
        let (error, elapsed) = await expectRedisError { try await plain.send(["PING"]) }
        Self.expectOneLine(error)
        #expect(error?.message.contains("rediss://") == true, "\(error?.message ?? "")")
        #expect(elapsed < .seconds(3))
    }

    @Test func tlsClientAgainstPlainServerFailsCleanly() async throws {
        let server = try await RedisServerProcess()
        let certificates = try await TestCertificates.make()
        let connection = RedisConnection(
            configuration: Self.configuration(server, RedisTLSConfiguration(caFile: certificates.caFile)))
        let (error, elapsed) = await expectRedisError { try await connection.send(["PING"]) }
        Self.expectOneLine(error)
        // A plain Redis reads the ClientHello as an inline command: it answers an error (when
        // the random bytes hold a newline) or waits for more until the connect timeout.
        #expect(error?.kind == .tls || error?.kind == .timeout)
        #expect(error?.message.contains("use redis:// for a server without TLS") == true, "\(error?.message ?? "")")
        #expect(elapsed < .seconds(4))
    }

    @Test func badFilesAreOneLineNamingTheFile() async throws {
        let certificates = try await TestCertificates.make()
        let notPEM = certificates.directory + "/notes.txt"
        try "not a certificate\n".write(toFile: notPEM, atomically: true, encoding: .utf8)
        let cases: [(RedisTLSConfiguration, [String])] = [
            (.init(caFile: certificates.directory + "/missing.crt"), ["missing.crt", "No such file", "ca_file"]),
            (.init(caFile: certificates.directory), ["not a regular file"]),
            (.init(caFile: notPEM), ["notes.txt", "no PEM certificate", "ca_file"]),
            (.init(certFile: notPEM, keyFile: certificates.clientKeyFile), ["notes.txt", "cert_file", "not a PEM"]),
            (.init(certFile: certificates.clientCertFile, keyFile: notPEM), ["notes.txt", "key_file", "not a PEM"]),
            (
                .init(certFile: certificates.clientCertFile, keyFile: certificates.strayKeyFile),
                ["stray.key", "does not match", "client.crt"]
            ),
            (.init(certFile: certificates.clientCertFile), ["key_file"]),
        ]
        for (configuration, needles) in cases {
            do {
                try configuration.check()
                Issue.record("expected \(configuration) to be rejected")
            } catch {
                #expect(error.kind == .invalidURL)
                #expect(!error.message.contains("\n"))
                for needle in needles {
                    #expect(error.message.contains(needle), "\(error.message) should mention \(needle)")
                }
            }
        }
        try RedisTLSConfiguration(
            caFile: certificates.caFile, certFile: certificates.clientCertFile, keyFile: certificates.clientKeyFile
        ).check()
    }
}
