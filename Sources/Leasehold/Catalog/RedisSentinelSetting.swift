import RedisClient

/// Where the sentinels' own password comes from for a `redis-sentinel://` URL, in order: the
/// `LEASEHOLD_REDIS_SENTINEL_PASSWORD` environment variable, then the catalog's
/// `redis.sentinel_password`. The URL's password is for the data nodes only. The daemon and
/// the CLI apply it identically.
package enum RedisSentinelSetting {
    /// The environment variable that carries the sentinel password (kept out of `ps` and files).
    package static let environmentVariable = "LEASEHOLD_REDIS_SENTINEL_PASSWORD"

    /// Sets the sentinel password on a sentinel endpoint; returns a warning (never the
    /// password) when one is given for an endpoint that has no sentinels.
    package static func apply(
        to endpoint: inout RedisEndpoint, environment: [String: String], catalog: Catalog?
    ) -> String? {
        let fromEnvironment = environment[environmentVariable].flatMap { $0.isEmpty ? nil : $0 }
        guard let password = fromEnvironment ?? catalog?.redisSentinelPassword else { return nil }
        guard endpoint.sentinel != nil else {
            let source = fromEnvironment != nil ? environmentVariable : "redis.sentinel_password"
            return "\(source) is set but the Redis URL is not redis-sentinel://…: ignored"
        }
        endpoint.sentinel?.password = password
        return nil
    }
}
