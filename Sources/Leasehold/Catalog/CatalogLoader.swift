#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// Loads and validates `jobs.yaml`, reporting every problem at once as `file:line:col: message`.
///
/// Handler kinds are checked through the caller's `checkHandler` closure (usually backed by the
/// `HandlerRegistry`); `knownHandlers` only feeds the "(known: log, shell)" part of the message
/// for an unknown kind, because the closure's `.unknownKind` cannot say what *is* known.
public enum CatalogLoader {
    /// Reads and validates the file at `path`; `path` appears in errors exactly as given.
    public static func load(
        path: String, knownHandlers: [String] = [],
        checkHandler: (_ kind: String, _ config: ConfigNode?) -> HandlerConfigCheck
    ) throws(CatalogError) -> Catalog {
        let bytes: [UInt8]
        // One byte past the cap is kept so that `YAMLReader` reports the size, as for text.
        switch RegularFile.read(path, atMost: YAMLReader.maxBytes + 1) {
        case .success(let file): bytes = file.bytes
        case .failure(let reason):
            throw CatalogError(errors: [
                ConfigError(
                    location: SourceLocation(file: path, line: 0, column: 0),
                    message: "cannot read catalog file: \(reason.message)")
            ])
        }
        return try validate(
            YAMLReader.read(bytes: bytes, file: path), path: path,
            knownHandlers: knownHandlers, checkHandler: checkHandler)
    }

    /// Validates YAML `text` as if read from `path` (for tests and `leaseholdd check` on stdin).
    public static func parse(
        text: String, path: String, knownHandlers: [String] = [],
        checkHandler: (_ kind: String, _ config: ConfigNode?) -> HandlerConfigCheck
    ) throws(CatalogError) -> Catalog {
        try validate(
            YAMLReader.read(bytes: Array(text.utf8), file: path), path: path,
            knownHandlers: knownHandlers, checkHandler: checkHandler)
    }

    static func validate(
        _ read: (root: ConfigNode?, errors: [ConfigError], fatal: Bool), path: String,
        knownHandlers: [String],
        checkHandler: (String, ConfigNode?) -> HandlerConfigCheck
    ) throws(CatalogError) -> Catalog {
        if read.fatal { throw CatalogError(errors: read.errors) }
        var v = Validator(file: path, knownHandlers: knownHandlers)
        v.errors = read.errors
        let catalog = v.catalog(read.root, checkHandler: checkHandler)
        if let catalog, v.errors.isEmpty { return catalog }
        // File order, duplicates removed (a bad default can trip the same check for every job).
        var seen = Set<ConfigError>()
        let ordered = v.errors.enumerated().sorted {
            ($0.element.location.line, $0.element.location.column, $0.offset)
                < ($1.element.location.line, $1.element.location.column, $1.offset)
        }.map(\.element).filter { seen.insert($0).inserted }
        throw CatalogError(errors: ordered)
    }
}
