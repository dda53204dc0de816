/// A job's work: what `handler:` names in jobs.yaml. Conform to it to run your own Swift code
/// as a singleton job.
///
/// `run` is called only on the member that leads the job, with the current fencing token. It
/// must stop promptly when its task is cancelled (leadership ended, timeout or shutdown);
/// use `context.checkLeadership()` before acting and pass `context.token` to downstream
/// stores so a stale leader's write is rejected.
public protocol JobHandler: Sendable {
    /// The name jobs.yaml uses for this handler (`handler: <kind>`).
    static var kind: String { get }
    /// Builds the handler from the job's `config:` section; throw `ConfigError` (or
    /// `CatalogError`) pointing at the offending node so the user sees `file:line:col`.
    init(config: HandlerConfig) throws
    /// Does one run (scheduled jobs) or the whole leadership (continuous jobs).
    func run(_ context: LeaseContext) async throws
}

/// Maps handler kinds to types, so the catalog can be checked and handlers built.
public struct HandlerRegistry: Sendable {
    private var types: [String: any JobHandler.Type] = [:]

    /// Creates a registry with the given handler types.
    public init(_ handlers: [any JobHandler.Type] = []) {
        for handler in handlers { register(handler) }
    }

    /// The built-in handlers: `shell` and `log`.
    public static var builtIn: HandlerRegistry { HandlerRegistry([ShellHandler.self, LogHandler.self]) }

    /// Adds (or replaces) a handler type under its kind.
    public mutating func register(_ handler: any JobHandler.Type) {
        types[handler.kind] = handler
    }

    /// Every registered kind, sorted.
    public var kinds: [String] { types.keys.sorted() }

    /// Checks a job's handler kind and config the way the catalog loader wants it.
    public func check(kind: String, config: ConfigNode?, jobLocation: SourceLocation? = nil) -> HandlerConfigCheck {
        guard let type = types[kind] else { return .unknownKind }
        do {
            _ = try type.init(config: HandlerConfig(node: config, jobLocation: jobLocation))
            return .valid
        } catch let error as ConfigError {
            return .invalid([error])
        } catch let error as CatalogError {
            return .invalid(error.errors)
        } catch {
            let location = config?.location ?? jobLocation ?? SourceLocation(file: "jobs.yaml", line: 0, column: 0)
            return .invalid([ConfigError(location: location, message: "invalid config for handler '\(kind)': \(error)")]
            )
        }
    }

    /// Builds the handler of a job.
    public func makeHandler(for job: JobSpec) throws -> any JobHandler {
        guard let type = types[job.handler] else {
            throw ConfigError(
                location: job.location,
                message: "unknown handler '\(job.handler)' (known: \(kinds.joined(separator: ", ")))")
        }
        return try type.init(config: HandlerConfig(node: job.config, jobLocation: job.location))
    }

    /// Loads and checks a catalog against this registry: every problem at once.
    public func loadCatalog(path: String) throws(CatalogError) -> Catalog {
        try CatalogLoader.load(path: path, knownHandlers: kinds) { kind, config in check(kind: kind, config: config) }
    }
}
