import Leasehold
import RedisClient
import Testing

@testable import LeaseholdDaemon

/// The guardian gets the daemon's Redis settings over its socket: every setting must survive
/// the trip, or a guardian of a TLS or Sentinel daemon would fail to connect and leave the
/// leases to their TTL.
@Suite("Guardian settings on the wire")
struct GuardianWireTests {
    @Test func tlsAndSentinelSettingsSurviveTheTrip() throws {
        var endpoint = try RedisEndpoint(url: "rediss-sentinel://app:s3cret@10.0.0.1:26379,[::1]:26380/2#leases")
        endpoint.sentinel?.password = "sentinel-pw"
        endpoint.tls = RedisTLSConfiguration(
            caFile: "/etc/ca.pem", certFile: "/etc/c.pem", keyFile: "/etc/c.key", serverName: "redis.internal",
            verify: false)
        let settings = GuardianSettings(
            redis: RedisConfiguration(
                endpoint: endpoint, connectTimeout: .milliseconds(700), commandTimeout: .seconds(1)),
            namespace: "prod", owner: OwnerID(member: "node-a", incarnation: "abc123"))
        let line = settings.encoded()
        #expect(!line.contains("\n"))
        let decoded = try #require(GuardianSettings(encoded: Substring(line)))
        #expect(decoded == settings)
        #expect(decoded.redis.endpoint.tls == endpoint.tls)
        #expect(decoded.redis.endpoint.sentinel == endpoint.sentinel)

        let plain = GuardianSettings(
            redis: RedisConfiguration(endpoint: RedisEndpoint(address: .unix(path: "/run/redis.sock"))),
            namespace: "n", owner: OwnerID(member: "m", incarnation: "i"))
        #expect(GuardianSettings(encoded: Substring(plain.encoded())) == plain)
    }
}
