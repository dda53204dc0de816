import ArgumentParser
import Leasehold
import Logging
import Metrics
import Prometheus
import RedisClient
import ServiceLifecycle

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif
#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Command-line options of a Leasehold daemon.
public struct DaemonOptions: ParsableArguments {
    /// The job catalog.
    @Option(help: "Path of the job catalog.")
    public var config: String = "jobs.yaml"

    /// Redis URL override.
    @Option(
        help:
            "Redis URL (redis://[[user]:password@]host[:port][/db], rediss://… for TLS, or unix:///path?db=N); beats LEASEHOLD_REDIS_URL and the catalog."
    )
    public var redis: String?

    /// Redis password file.
    @Option(
        name: .customLong("redis-password-file"),
        help:
            "File holding the Redis password (read once; beats LEASEHOLD_REDIS_PASSWORD_FILE and the catalog's redis.password_file, and any password in the URL)."
    )
    public var redisPasswordFile: String?

    /// TLS CA file.
    @Option(
        name: .customLong("tls-ca-file"),
        help:
            "PEM CA certificates the Redis server's certificate must chain to (rediss:// URLs; beats redis.tls.ca_file; default: the system store)."
    )
    public var tlsCAFile: String?

    /// TLS client certificate.
    @Option(
        name: .customLong("tls-cert-file"),
        help: "PEM client certificate for a Redis server that requires one (beats redis.tls.cert_file).")
    public var tlsCertFile: String?

    /// TLS client key.
    @Option(
        name: .customLong("tls-key-file"), help: "PEM key of the client certificate (beats redis.tls.key_file).")
    public var tlsKeyFile: String?

    /// TLS server name.
    @Option(
        name: .customLong("tls-server-name"),
        help:
            "Name sent as SNI and checked against the server's certificate (beats redis.tls.server_name; default: the URL's host)."
    )
    public var tlsServerName: String?

    /// TLS without verification.
    @Flag(
        name: .customLong("tls-insecure"),
        help:
            "Do not verify the Redis server's certificate (beats redis.tls.verify; encrypts, but anyone on the path can impersonate the server)."
    )
    public var tlsInsecure = false

    /// Member name.
    @Option(help: "Member name, unique in the fleet (default: the hostname).")
    public var name: String?

    /// Placement weight.
    @Option(help: "Placement weight: a member with weight 2 leads about twice as many jobs.")
    public var weight: Double = 1

    /// Log level.
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    public var logLevel: String = "info"

    /// Log format.
    @Option(name: .customLong("log-format"), help: "text or json (one JSON object per line).")
    public var logFormat: String = "text"

    /// Metrics/health endpoint.
    @Option(
        help:
            "Serve /metrics, /healthz, /readyz and /status on [HOST]:PORT; :PORT alone listens on 127.0.0.1 only, 0.0.0.0:PORT on every interface (off unless given)."
    )
    public var http: String?

    /// Creates default options.
    public init() {}
}

/// Entry points for `leaseholdd` and for daemons users build with their own handlers.
public enum LeaseholdDaemon {
    /// Exit code for a bad catalog, URL or option.
    public static let configErrorExitCode: Int32 = 2
    /// Exit code when `on_lost_leadership: exit` fired.
    public static let lostLeadershipExitCode: Int32 = 3

    /// Runs a daemon with the built-in handlers plus `handlers`, reading the process
    /// arguments; never returns.
    ///
    /// The same executable also runs as the daemon's guardian (crash release): when started
    /// with the guardian's marker argument it does that and nothing else.
    public static func main(handlers: [any JobHandler.Type] = [], arguments: [String]? = nil) async -> Never {
        // Before anything parses arguments: every daemon built on this entry point can be
        // its own guardian, so there is no second binary to install.
        await Guardian.runIfRequested(CommandLine.arguments)
        let options = DaemonOptions.parseOrExit(arguments)
        var registry = HandlerRegistry.builtIn
        for handler in handlers { registry.register(handler) }
        let code = await run(options: options, registry: registry, guardian: true)
        exit(code)
    }

    /// Runs a daemon with `options` until SIGTERM/SIGINT; returns the process exit code.
    /// Without ``main(handlers:arguments:)`` there is no guardian (its executable would not
    /// know the guardian's argument), so a crash leaves the leases to expire by TTL.
    public static func run(options: DaemonOptions, registry: HandlerRegistry) async -> Int32 {
        await run(options: options, registry: registry, guardian: false)
    }

    static func run(options: DaemonOptions, registry: HandlerRegistry, guardian withGuardian: Bool) async -> Int32 {
        // SIGHUP reloads the catalog; until the reloader listens, one must not kill the daemon.
        signal(SIGHUP, SIG_IGN)
        guard let level = Logger.Level(rawValue: options.logLevel.lowercased()) else {
            return fail(
                "invalid --log-level '\(options.logLevel)': use trace, debug, info, notice, warning, error or critical")
        }
        guard let format = LogFormat(rawValue: options.logFormat.lowercased()) else {
            return fail("invalid --log-format '\(options.logFormat)': use text or json")
        }
        LoggingSystem.bootstrap { label in DaemonLogHandler(label: label, format: format, level: level) }
        let logger = Logger(label: "leaseholdd")

        // Everything that can be wrong with the input is checked before any Redis traffic.
        let catalog: Catalog
        let catalogLoadedAtMs: Int64
        do {
            catalog = try registry.loadCatalog(path: options.config)
            catalogLoadedAtMs = Int64((Date().timeIntervalSince1970 * 1000).rounded())
        } catch {
            for problem in error.errors { printError(problem.description) }
            return configErrorExitCode
        }
        let environment = ProcessInfo.processInfo.environment
        let (urlText, source) = RedisURLSetting.resolve(flag: options.redis, environment: environment, catalog: catalog)
        var endpoint: RedisEndpoint
        do {
            endpoint = try RedisEndpoint(url: urlText)
        } catch {
            return fail("invalid Redis URL from \(source): \(error.message)")
        }
        if options.redis != nil, endpoint.password != nil {
            logger.warning(
                "--redis carries a password, which every user of this host can read in ps: use \(RedisPasswordFile.flag), \(RedisPasswordFile.environmentVariable) or \(RedisURLSetting.environmentVariable)"
            )
        }
        do {
            if let warning = try RedisPasswordFile.apply(
                to: &endpoint, flag: options.redisPasswordFile, environment: environment, catalog: catalog)
            {
                logger.warning("\(warning)")
            }
        } catch {
            return fail(error.message)
        }
        do {
            let flags = RedisTLSSetting.Flags(
                caFile: options.tlsCAFile, certFile: options.tlsCertFile, keyFile: options.tlsKeyFile,
                serverName: options.tlsServerName, insecure: options.tlsInsecure)
            if let warning = try RedisTLSSetting.apply(
                to: &endpoint, urlSource: source, flags: flags, catalog: catalog)
            {
                logger.warning("\(warning)")
            }
        } catch {
            return fail(error.message)
        }
        if let warning = RedisSentinelSetting.apply(to: &endpoint, environment: environment, catalog: catalog) {
            logger.warning("\(warning)")
        }
        let name =
            options.name ?? ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "member"
        guard OwnerID.isValidMemberName(name) else {
            return fail("invalid member name '\(name)': use letters, digits, '.', '_' or '-' (set --name)")
        }
        guard options.weight.isFinite, options.weight > 0 else {
            return fail("invalid --weight \(options.weight): must be a positive number")
        }
        var httpAddress: (host: String, port: Int)?
        if let http = options.http {
            guard let address = parseHostPort(http) else {
                return fail("invalid --http '\(http)': expected [HOST]:PORT, e.g. 127.0.0.1:9464")
            }
            httpAddress = address
        }

        let registryForMetrics = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registryForMetrics))
        let service: LeaseholdService
        do {
            service = try LeaseholdService(
                configuration: .init(
                    catalog: catalog, redis: endpoint, memberName: name, weight: options.weight,
                    catalogLoadedAtMs: catalogLoadedAtMs),
                registry: registry, logger: logger)
        } catch {
            return fail("\(error)")
        }
        // The guardian releases this member's leases if the process dies; it gets the whole
        // Redis configuration the member uses, over its private socket only.
        var guardian: GuardianLink?
        if withGuardian, catalog.crashRelease {
            if GuardianLink.isSupported {
                let link = GuardianLink(
                    settings: GuardianSettings(
                        redis: service.manager.configuration.redis, namespace: catalog.namespace,
                        owner: service.manager.owner),
                    logFormat: format, logger: logger)
                service.manager.observeGrants { link.grantsChanged($0) }
                link.start()
                guardian = link
            } else {
                logger.warning("crash release unavailable: this kernel has no pidfd_open (Linux 5.3+)")
            }
        }
        logger.info(
            "leaseholdd starting",
            metadata: [
                "config": "\(options.config)", "redis": "\(endpoint)", "member": "\(name)",
                "version": "\(LeaseholdVersion.current)",
            ])
        // The member returns on its own only after `on_lost_leadership: exit` asked it to stop;
        // that must shut the rest down gracefully (and exit 3 below), not count as a failure.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: service, successTerminationBehavior: .gracefullyShutdownGroup)
        ]
        services.append(
            .init(
                service: CatalogReloader(
                    path: options.config, registry: registry, member: service, logger: logger,
                    metrics: LeaseholdMetrics())))
        if let httpAddress {
            services.append(
                .init(
                    service: StatusHTTPServer(
                        host: httpAddress.host, port: httpAddress.port, member: service, metrics: registryForMetrics,
                        logger: logger)))
        }
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: services, gracefulShutdownSignals: [.sigterm, .sigint], cancellationSignals: [],
                logger: logger))
        do {
            try await group.run()
        } catch {
            // Leases may still be held: the guardian releases them once this process is gone.
            logger.error("daemon failed: \(error)")
            return 1
        }
        // A graceful stop released what it could; the guardian must not act on this exit.
        guardian?.standDown()
        if let reason = service.exitReason {
            logger.error("exiting: \(reason)")
            return lostLeadershipExitCode
        }
        return 0
    }

    private static func fail(_ message: String) -> Int32 {
        printError("leaseholdd: \(message)")
        return configErrorExitCode
    }

    private static func printError(_ line: String) {
        StandardError.write(line + "\n")
    }

    /// Where `--http :PORT` listens: loopback, since the endpoints have no auth.
    static let defaultHTTPHost = "127.0.0.1"

    /// Parses `HOST:PORT` (or `[v6]:PORT`); `:PORT` means ``defaultHTTPHost``.
    static func parseHostPort(_ text: String) -> (host: String, port: Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port)
        else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host.isEmpty ? defaultHTTPHost : host, port)
    }
}
