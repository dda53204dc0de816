import CLibYAML

/// Reads YAML into a `ConfigNode` tree over libyaml's event parser, keeping a mark on every node.
///
/// Aliases are resolved by copying the anchored node (with the anchor's locations); merge keys
/// (`<<`) are rejected because the `defaults:` section is the supported way to share settings.
package enum YAMLReader {
    /// Upper bound on nodes after alias expansion, so a "billion laughs" file cannot exhaust memory.
    static let maxNodes = 200_000
    /// Upper bound on nesting depth: nodes are built recursively, so a file of 10,000 '[' would
    /// otherwise overflow the stack.
    static let maxDepth = 200
    /// Upper bound on a catalog's size in bytes (4 MiB): catalogs come through pull requests and
    /// CI, and a real one is a few KiB, so this bounds the memory and time a hostile one can take.
    package static let maxBytes = 4 << 20
    /// Upper bound on one scalar's length in bytes (64 KiB), checked before any validation, so no
    /// check (spelling hints, time zone lookups, cron parsing) ever sees a huge string.
    package static let maxScalarBytes = 64 << 10

    /// Parses `text`; `file` is used in locations. Returns nil for an empty document.
    package static func parse(text: String, file: String) throws(CatalogError) -> ConfigNode? {
        try parse(bytes: Array(text.utf8), file: file)
    }

    /// Parses raw bytes (libyaml checks the encoding, so invalid UTF-8 gets its own error).
    package static func parse(bytes: [UInt8], file: String) throws(CatalogError) -> ConfigNode? {
        let result = read(bytes: bytes, file: file)
        if !result.errors.isEmpty { throw CatalogError(errors: result.errors) }
        return result.root
    }

    /// Like `parse`, but hands back structural errors (duplicate keys, bad aliases) next to the tree
    /// so the catalog validator can report them together with its own; `fatal` means no usable tree.
    static func read(bytes: [UInt8], file: String) -> (root: ConfigNode?, errors: [ConfigError], fatal: Bool) {
        guard bytes.count <= maxBytes else {
            let message = "catalog too large: more than \(maxBytes) bytes (4 MiB)"
            return (
                nil, [ConfigError(location: SourceLocation(file: file, line: 0, column: 0), message: message)], true
            )
        }
        return bytes.withUnsafeBufferPointer { buffer in
            Builder(file: file).run(buffer)
        }
    }

    /// Single-use event consumer; not shared across threads.
    private final class Builder {
        let file: String
        var parser = yaml_parser_t()
        var errors: [ConfigError] = []
        var anchors: [String: ConfigNode] = [:]
        var nodeCount = 0
        var depth = 0
        /// Set when a scalar was over `maxScalarBytes`: its placeholder must not reach validation.
        var oversized = false

        /// Thrown internally to unwind on a syntax error (already recorded in `errors`).
        struct Abort: Error {}

        init(file: String) { self.file = file }

        func loc(_ mark: yaml_mark_t) -> SourceLocation {
            SourceLocation(file: file, line: Int(mark.line) + 1, column: Int(mark.column) + 1)
        }

        func run(_ buffer: UnsafeBufferPointer<UInt8>) -> (root: ConfigNode?, errors: [ConfigError], fatal: Bool) {
            guard yaml_parser_initialize(&parser) == 1 else {
                return (
                    nil,
                    [
                        ConfigError(
                            location: SourceLocation(file: file, line: 0, column: 0),
                            message: "cannot initialise the YAML parser (out of memory)")
                    ], true
                )
            }
            defer { yaml_parser_delete(&parser) }
            // libyaml wants a non-null pointer even for empty input.
            let empty: [UInt8] = [0]
            var root: ConfigNode?
            do {
                if let base = buffer.baseAddress {
                    yaml_parser_set_input_string(&parser, base, buffer.count)
                    root = try document()
                } else {
                    root = try empty.withUnsafeBufferPointer { e throws(Abort) -> ConfigNode? in
                        yaml_parser_set_input_string(&parser, e.baseAddress!, 0)
                        return try document()
                    }
                }
            } catch {
                // The syntax error is in `errors`; a partial tree would only produce follow-on noise.
                return (nil, errors, true)
            }
            // Every oversized scalar is reported, but the tree holds placeholders for them.
            return oversized ? (nil, errors, true) : (root, errors, false)
        }

        /// Pulls the next event; on a libyaml error records it (with libyaml's own mark and text) and aborts.
        func next() throws(Abort) -> yaml_event_t {
            var event = yaml_event_t()
            if yaml_parser_parse(&parser, &event) != 1 {
                recordSyntaxError()
                throw Abort()
            }
            return event
        }

        func recordSyntaxError() {
            let problem = parser.problem.map { String(cString: $0) } ?? "unknown error"
            var message = "invalid YAML: \(problem)"
            switch parser.error {
            case YAML_READER_ERROR:
                // The reader has no line/column, only a byte offset.
                message += " at byte offset \(parser.problem_offset)"
                errors.append(ConfigError(location: SourceLocation(file: file, line: 1, column: 1), message: message))
                return
            case YAML_MEMORY_ERROR:
                message = "invalid YAML: out of memory"
            default:
                break
            }
            if let context = parser.context {
                let c = loc(parser.context_mark)
                message += " (\(String(cString: context)) at line \(c.line), column \(c.column))"
            }
            errors.append(ConfigError(location: loc(parser.problem_mark), message: message))
        }

        func document() throws(Abort) -> ConfigNode? {
            var event = try next()
            guard event.type == YAML_STREAM_START_EVENT else {
                yaml_event_delete(&event)
                return nil
            }
            yaml_event_delete(&event)
            event = try next()
            if event.type == YAML_STREAM_END_EVENT {
                yaml_event_delete(&event)
                return nil
            }
            guard event.type == YAML_DOCUMENT_START_EVENT else {
                yaml_event_delete(&event)
                return nil
            }
            yaml_event_delete(&event)
            event = try next()
            let root = try node(&event)
            event = try next()  // DOCUMENT_END
            yaml_event_delete(&event)
            event = try next()
            if event.type == YAML_DOCUMENT_START_EVENT {
                errors.append(
                    ConfigError(
                        location: loc(event.start_mark),
                        message: "multiple YAML documents are not supported: put everything in one document"))
            }
            yaml_event_delete(&event)
            return root
        }

        func anchorName(_ p: UnsafeMutablePointer<yaml_char_t>?) -> String? {
            p.map { String(cString: UnsafePointer($0)) }
        }

        /// Counts a sequence or mapping and goes one level deeper; a document nested past the
        /// limit is an error, not a stack overflow. The caller undoes the depth with `defer`.
        func enterCollection(at mark: yaml_mark_t, location: SourceLocation) throws(Abort) {
            try countNodes(1, at: mark)
            depth += 1
            if depth > YAMLReader.maxDepth {
                errors.append(
                    ConfigError(
                        location: location,
                        message: "document nested too deeply: more than \(YAMLReader.maxDepth) levels"))
                throw Abort()
            }
        }

        func countNodes(_ n: Int, at mark: yaml_mark_t) throws(Abort) {
            nodeCount += n
            if nodeCount > YAMLReader.maxNodes {
                errors.append(
                    ConfigError(
                        location: loc(mark),
                        message: "document too large: more than \(YAMLReader.maxNodes) nodes after alias expansion"))
                throw Abort()
            }
        }

        /// Builds the node that starts with `event` (which this function deletes).
        func node(_ event: inout yaml_event_t) throws(Abort) -> ConfigNode {
            let start = event.start_mark
            let location = loc(start)
            switch event.type {
            case YAML_SCALAR_EVENT:
                let s = event.data.scalar
                var text = ""
                if Int(s.length) > YAMLReader.maxScalarBytes {
                    // Reported here, once, rather than echoed into every later message about it.
                    oversized = true
                    errors.append(
                        ConfigError(
                            location: location,
                            message:
                                "scalar too long: \(s.length) bytes, more than \(YAMLReader.maxScalarBytes) (64 KiB)"))
                } else {
                    text = String(decoding: UnsafeBufferPointer(start: s.value, count: Int(s.length)), as: UTF8.self)
                }
                let result = ConfigNode.scalar(text, location, quoted: s.style != YAML_PLAIN_SCALAR_STYLE)
                let anchor = anchorName(s.anchor)
                yaml_event_delete(&event)
                try countNodes(1, at: start)
                if let anchor { anchors[anchor] = result }
                return result

            case YAML_ALIAS_EVENT:
                let name = anchorName(event.data.alias.anchor) ?? ""
                yaml_event_delete(&event)
                guard let target = anchors[name] else {
                    // libyaml does not check this; an unknown alias is a user error, not a crash.
                    errors.append(
                        ConfigError(
                            location: location,
                            message: "unknown alias '*\(name)': no anchor '&\(name)' defined before it"))
                    return .scalar("", location, quoted: false)
                }
                try countNodes(target.nodeCount, at: start)
                return target

            case YAML_SEQUENCE_START_EVENT:
                let anchor = anchorName(event.data.sequence_start.anchor)
                yaml_event_delete(&event)
                try enterCollection(at: start, location: location)
                defer { depth -= 1 }
                var items: [ConfigNode] = []
                while true {
                    var e = try next()
                    if e.type == YAML_SEQUENCE_END_EVENT {
                        yaml_event_delete(&e)
                        break
                    }
                    items.append(try node(&e))
                }
                let result = ConfigNode.sequence(items, location)
                if let anchor { anchors[anchor] = result }
                return result

            case YAML_MAPPING_START_EVENT:
                let anchor = anchorName(event.data.mapping_start.anchor)
                yaml_event_delete(&event)
                try enterCollection(at: start, location: location)
                defer { depth -= 1 }
                var entries: [(key: String, keyLocation: SourceLocation, value: ConfigNode)] = []
                var seen: [String: SourceLocation] = [:]
                while true {
                    var e = try next()
                    if e.type == YAML_MAPPING_END_EVENT {
                        yaml_event_delete(&e)
                        break
                    }
                    let keyNode = try node(&e)
                    var v = try next()
                    let value = try node(&v)
                    guard case .scalar(let key, let keyLocation, let quoted) = keyNode else {
                        errors.append(
                            ConfigError(
                                location: keyNode.location,
                                message: "mapping keys must be plain strings, got a \(keyNode.typeName)"))
                        continue
                    }
                    if key == "<<" && !quoted {
                        errors.append(
                            ConfigError(
                                location: keyLocation,
                                message: "YAML merge keys ('<<') are not supported: put shared settings in 'defaults'"))
                        continue
                    }
                    if let first = seen[key] {
                        errors.append(
                            ConfigError(
                                location: keyLocation,
                                message: "duplicate key '\(key)' (first defined at line \(first.line))"))
                        continue
                    }
                    seen[key] = keyLocation
                    entries.append((key: key, keyLocation: keyLocation, value: value))
                }
                let result = ConfigNode.mapping(entries, location)
                if let anchor { anchors[anchor] = result }
                return result

            default:
                yaml_event_delete(&event)
                errors.append(ConfigError(location: location, message: "invalid YAML: unexpected event"))
                throw Abort()
            }
        }
    }
}
