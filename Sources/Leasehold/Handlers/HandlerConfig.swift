/// Typed access to a handler's `config:` section, with errors that carry the YAML location.
public struct HandlerConfig: Sendable {
    /// The raw section (nil when the job has none).
    public let node: ConfigNode?
    /// Where the job is defined, for errors about a missing section.
    public let jobLocation: SourceLocation?

    /// Wraps a config section.
    public init(node: ConfigNode?, jobLocation: SourceLocation? = nil) {
        self.node = node
        self.jobLocation = jobLocation
    }

    private var fallbackLocation: SourceLocation {
        node?.location ?? jobLocation ?? SourceLocation(file: "jobs.yaml", line: 0, column: 0)
    }

    /// Rejects keys the handler does not know, naming the closest known one.
    public func checkKeys(allowed: [String], handler: String) throws {
        guard let node else { return }
        guard let entries = node.asMapping else {
            if node.isNull { return }
            throw ConfigError(
                location: node.location,
                message: "config of handler '\(handler)' must be a mapping, got a \(node.typeName)")
        }
        var errors: [ConfigError] = []
        for entry in entries where !allowed.contains(entry.key) {
            var message = "unknown key '\(entry.key)' in config of handler '\(handler)'"
            if let hint = Leasehold.closest(to: entry.key, in: allowed) { message += "; did you mean '\(hint)'?" }
            message += " (known: \(allowed.joined(separator: ", ")))"
            errors.append(ConfigError(location: entry.keyLocation, message: message))
        }
        if !errors.isEmpty { throw CatalogError(errors: errors) }
    }

    /// A required value: throws if the section or key is missing.
    public func required(_ key: String, handler: String) throws -> ConfigNode {
        guard let value = node?.value(for: key), !value.isNull else {
            throw ConfigError(location: fallbackLocation, message: "handler '\(handler)' needs 'config.\(key)'")
        }
        return value
    }

    /// An optional string.
    public func string(_ key: String) throws -> String? {
        guard let value = node?.value(for: key), !value.isNull else { return nil }
        guard case .scalar(let text, _, _) = value else {
            throw ConfigError(location: value.location, message: "'\(key)' must be a string, got a \(value.typeName)")
        }
        return text
    }

    /// A list of strings (a single string is not accepted: argv must be explicit).
    public func stringList(_ value: ConfigNode, key: String) throws -> [String] {
        guard let items = value.asSequence else {
            throw ConfigError(
                location: value.location,
                message: "'\(key)' must be a list of strings, e.g. [\"/bin/echo\", \"hello\"], got a \(value.typeName)")
        }
        return try items.map { item in
            guard case .scalar(let text, _, _) = item else {
                throw ConfigError(
                    location: item.location, message: "every item of '\(key)' must be a string, got a \(item.typeName)")
            }
            return text
        }
    }

    /// An optional mapping of strings to strings.
    public func stringMap(_ key: String) throws -> [String: String]? {
        guard let value = node?.value(for: key), !value.isNull else { return nil }
        guard let entries = value.asMapping else {
            throw ConfigError(
                location: value.location,
                message: "'\(key)' must be a mapping of names to strings, got a \(value.typeName)")
        }
        var result: [String: String] = [:]
        for entry in entries {
            guard case .scalar(let text, _, _) = entry.value else {
                throw ConfigError(
                    location: entry.value.location,
                    message: "'\(key).\(entry.key)' must be a string, got a \(entry.value.typeName)")
            }
            result[entry.key] = text
        }
        return result
    }

    /// An optional duration such as `2s` or `1m30s`.
    public func duration(_ key: String) throws -> Duration? {
        guard let value = node?.value(for: key), !value.isNull else { return nil }
        guard case .scalar(let text, _, _) = value, let duration = CatalogValue.duration(text) else {
            throw ConfigError(
                location: value.location,
                message:
                    "invalid duration '\(value.asString ?? value.typeName)' for '\(key)': expected a number with a unit (ms, s, m, h), e.g. 2s or 1m30s"
            )
        }
        return duration
    }
}
