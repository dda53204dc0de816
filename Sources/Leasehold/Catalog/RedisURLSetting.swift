/// Where a member or the CLI takes its Redis URL from, in order: the `--redis` flag, the
/// `LEASEHOLD_REDIS_URL` environment variable, the catalog's `redis.url`, the default.
///
/// It lives with the catalog, not in the Redis client: the variable is this product's
/// convention, and the daemon and the CLI must resolve it identically.
package enum RedisURLSetting {
    /// The environment variable that carries the URL (it keeps a password out of `ps`).
    package static let environmentVariable = "LEASEHOLD_REDIS_URL"
    /// The URL used when nothing else names one.
    package static let defaultURL = "redis://127.0.0.1:6379/0"

    /// The URL to use and a name for where it came from (for error messages).
    package static func resolve(
        flag: String?, environment: [String: String], catalog: Catalog?
    ) -> (url: String, source: String) {
        if let flag { return (flag, "--redis") }
        if let value = environmentURL(environment) { return (value, environmentVariable) }
        if let catalog, let url = catalog.redisURL { return (url, "\(catalog.path): redis.url") }
        return (defaultURL, "the default")
    }

    /// The variable's value, if it is set and not empty.
    package static func environmentURL(_ environment: [String: String]) -> String? {
        environment[environmentVariable].flatMap { $0.isEmpty ? nil : $0 }
    }
}
