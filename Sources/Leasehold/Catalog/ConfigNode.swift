/// A position in a configuration file, 1-based, so errors can say `jobs.yaml:12:5`.
public struct SourceLocation: Sendable, Hashable, CustomStringConvertible {
    /// The file name exactly as the user gave it (not resolved), so messages match what they typed.
    public var file: String
    /// 1-based line; 0 means "no position" (e.g. the file could not be read).
    public var line: Int
    /// 1-based column, counted in characters as libyaml counts them.
    public var column: Int

    /// Creates a location; `line`/`column` are 1-based.
    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    /// `file:line:col`.
    public var description: String { "\(file):\(line):\(column)" }
}

/// A YAML node with the source location of every node kept, so validation can point at it.
///
/// Scalars are kept as text: YAML 1.1 implicit typing (`no` → false, `010` → 8) is a trap
/// for a config file, so each key's validator decides how to read its own text.
public indirect enum ConfigNode: Sendable {
    /// A scalar; `quoted` is true for any non-plain style (quoted, literal, folded).
    case scalar(String, SourceLocation, quoted: Bool)
    /// A list.
    case sequence([ConfigNode], SourceLocation)
    /// A mapping in document order; keys are unique (the reader rejects duplicates).
    case mapping([(key: String, keyLocation: SourceLocation, value: ConfigNode)], SourceLocation)

    /// Where the node starts.
    public var location: SourceLocation {
        switch self {
        case .scalar(_, let l, _), .sequence(_, let l), .mapping(_, let l): return l
        }
    }

    /// The user-facing type name used in "expected X, got Y" messages.
    public var typeName: String {
        switch self {
        case .scalar: return isNull ? "null" : "string"
        case .sequence: return "list"
        case .mapping: return "mapping"
        }
    }

    /// True for an unquoted empty, `~` or `null` scalar (what `key:` with no value yields).
    public var isNull: Bool {
        if case .scalar(let s, _, let quoted) = self, !quoted {
            return s.isEmpty || s == "~" || s == "null" || s == "Null" || s == "NULL"
        }
        return false
    }

    /// The scalar's text, or nil for lists and mappings.
    public var asString: String? {
        if case .scalar(let s, _, _) = self { return s }
        return nil
    }

    /// The scalar's text as a base-10 integer (plain digits, optional sign), or nil.
    public var asInt: Int? {
        guard let s = asString else { return nil }
        return Int(s)
    }

    /// The elements of a list, or nil.
    public var asSequence: [ConfigNode]? {
        if case .sequence(let items, _) = self { return items }
        return nil
    }

    /// The entries of a mapping, or nil.
    public var asMapping: [(key: String, keyLocation: SourceLocation, value: ConfigNode)]? {
        if case .mapping(let entries, _) = self { return entries }
        return nil
    }

    /// The value for `key` if this is a mapping that has it.
    public func value(for key: String) -> ConfigNode? {
        asMapping?.first(where: { $0.key == key })?.value
    }

    /// The location of `key` itself (not its value) if this is a mapping that has it.
    public func keyLocation(for key: String) -> SourceLocation? {
        asMapping?.first(where: { $0.key == key })?.keyLocation
    }

    /// Number of nodes in this subtree; used to bound alias expansion.
    var nodeCount: Int {
        switch self {
        case .scalar: return 1
        case .sequence(let items, _): return items.reduce(1) { $0 + $1.nodeCount }
        case .mapping(let entries, _): return entries.reduce(1) { $0 + 1 + $1.value.nodeCount }
        }
    }
}

/// One configuration problem at one place.
public struct ConfigError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Where the problem is; `line == 0` means the whole file.
    public var location: SourceLocation
    /// A single line saying what is wrong and what is expected.
    public var message: String

    /// Creates an error at `location`.
    public init(location: SourceLocation, message: String) {
        self.location = location
        self.message = message
    }

    /// `jobs.yaml:12:5: message`, or `jobs.yaml: message` when there is no position. Control
    /// characters of values the message quotes are escaped: a catalog must not be able to print
    /// a second, fake line (or terminal escapes) into CI output.
    public var description: String {
        let text = LogText.escaped(message)
        return location.line > 0 ? "\(location): \(text)" : "\(location.file): \(text)"
    }
}

/// Every problem found in a catalog; loading reports them all at once so one edit-run cycle fixes them all.
public struct CatalogError: Error, Sendable, CustomStringConvertible {
    /// The problems in file order.
    public var errors: [ConfigError]

    /// Creates the error from a list of problems.
    public init(errors: [ConfigError]) {
        self.errors = errors
    }

    /// One line per problem.
    public var description: String { errors.map(\.description).joined(separator: "\n") }
}
