import Foundation
import Leasehold
import RedisClient

/// Where the CLI's Redis and namespace come from, after applying precedence:
/// flags, then `LEASEHOLD_REDIS_URL` (URL only), then the catalog file, then the defaults.
package struct CLISettings: Sendable {
    /// The default catalog path.
    package static let defaultConfigPath = "./jobs.yaml"
    /// The default Redis URL.
    package static let defaultRedisURL = RedisURLSetting.defaultURL
    /// The default namespace.
    package static let defaultNamespace = "leasehold"

    /// The Redis server.
    package var endpoint: RedisEndpoint
    /// The key namespace.
    package var namespace: String
    /// The loaded catalog, if a file was read.
    package var catalog: Catalog?

    /// The key schema.
    package var keys: LeaseKeys { LeaseKeys(namespace: namespace) }

    /// Creates settings directly (tests, embedders).
    package init(endpoint: RedisEndpoint, namespace: String = CLISettings.defaultNamespace, catalog: Catalog? = nil) {
        self.endpoint = endpoint
        self.namespace = namespace
        self.catalog = catalog
    }

    /// Resolves the settings from the common flags and the environment.
    ///
    /// The catalog at `--config` (default `./jobs.yaml`) is loaded with the daemon's exact
    /// validation; an invalid catalog is a configuration error (exit 2). A missing *default*
    /// file is fine when the Redis URL comes from `--redis` or `LEASEHOLD_REDIS_URL`.
    package static func resolve(
        config: String?, redis: String?, namespace: String?, environment: [String: String],
        passwordFile: String? = nil, tls: RedisTLSSetting.Flags = .init()
    ) throws(CLIFailure) -> CLISettings {
        let envURL = RedisURLSetting.environmentURL(environment)
        let path = config ?? defaultConfigPath
        var catalog: Catalog?
        if config != nil || FileManager.default.fileExists(atPath: path) {
            do {
                catalog = try HandlerRegistry.builtIn.loadCatalog(path: path)
            } catch {
                throw CLIFailure(code: CLIExitCode.usage, lines: error.errors.map(\.description))
            }
        } else if redis == nil && envURL == nil {
            throw CLIFailure.usage(
                "no catalog at \(path): pass --config PATH, or give Redis with --redis URL or \(RedisURLSetting.environmentVariable)"
            )
        }
        let (url, urlSource) = RedisURLSetting.resolve(flag: redis, environment: environment, catalog: catalog)
        var endpoint: RedisEndpoint
        do {
            endpoint = try RedisEndpoint(url: url)
        } catch {
            throw CLIFailure.usage(CLIFailure.oneLine(error.message))
        }
        do {
            // A mode warning is the daemon's to give; the CLI reads the same file quietly.
            _ = try RedisPasswordFile.apply(
                to: &endpoint, flag: passwordFile, environment: environment, catalog: catalog)
        } catch {
            throw CLIFailure.usage(error.message)
        }
        do {
            // As with the password file's mode, the verify-off warning is the daemon's to give.
            _ = try RedisTLSSetting.apply(to: &endpoint, urlSource: urlSource, flags: tls, catalog: catalog)
        } catch {
            throw CLIFailure.usage(error.message)
        }
        _ = RedisSentinelSetting.apply(to: &endpoint, environment: environment, catalog: catalog)
        let ns = namespace ?? catalog?.namespace ?? defaultNamespace
        // Braces would break the namespace's hash tag ({ns}) that every key starts with.
        guard !ns.isEmpty, ns.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f && $0 != 0x7b && $0 != 0x7d }) else {
            throw CLIFailure.usage("invalid namespace '\(ns)': expected printable ASCII without spaces or braces")
        }
        return CLISettings(endpoint: endpoint, namespace: ns, catalog: catalog)
    }

    /// The connection settings the CLI uses: short timeouts, so a dead server fails fast.
    package var redisConfiguration: RedisConfiguration {
        RedisConfiguration(endpoint: endpoint, connectTimeout: .seconds(2), commandTimeout: .seconds(5))
    }
}

extension CLISettings {
    /// The catalog the CLI read lists `job`.
    func catalogLists(_ job: String) -> Bool { catalog?.jobs.contains { $0.name == job } ?? false }

    /// The catalog lists `job` as a continuous job (the wording of some results depends on it).
    func catalogRunsContinuously(_ job: String) -> Bool {
        catalog?.jobs.first { $0.name == job }?.schedule == .continuous
    }

    /// The failure for a job neither the catalog nor Redis (`{ns}:jobs`) knows: a typo must not
    /// read as an empty history or create state no member runs.
    func unknownJob(_ job: String) -> CLIFailure {
        .runtime("unknown job '\(job)': not in the catalog and never seen in namespace \(namespace)")
    }
}
