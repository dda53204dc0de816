@testable import Leasehold

/// The handler registry stand-in used by catalog tests: `log` takes no config, `shell` needs `command`.
func testHandlers(_ kind: String, _ config: ConfigNode?) -> HandlerConfigCheck {
    switch kind {
    case "log": return .valid
    case "shell":
        guard let config else { return .valid }
        guard let command = config.value(for: "command") else {
            return .invalid([
                ConfigError(location: config.location, message: "shell handler needs 'command': a list of strings")
            ])
        }
        guard let items = command.asSequence, !items.isEmpty, items.allSatisfy({ $0.asString != nil }) else {
            return .invalid([
                ConfigError(
                    location: command.location,
                    message: "'command' must be a non-empty list of strings, got a \(command.typeName)")
            ])
        }
        return .valid
    default: return .unknownKind
    }
}

/// Parses `text` as jobs.yaml with the test handlers; returns the error lines (empty on success).
func catalogErrors(_ text: String) -> [String] {
    do {
        _ = try CatalogLoader.parse(
            text: text, path: "jobs.yaml", knownHandlers: ["shell", "log"], checkHandler: testHandlers)
        return []
    } catch {
        return error.errors.map(\.description)
    }
}

/// Parses `text` that must be valid.
func loadCatalog(_ text: String) throws -> Catalog {
    try CatalogLoader.parse(text: text, path: "jobs.yaml", knownHandlers: ["shell", "log"], checkHandler: testHandlers)
}
