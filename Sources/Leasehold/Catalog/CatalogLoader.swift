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
        switch readFile(path) {
        case .success(let b): bytes = b
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

    struct ReadFailure: Error { var message: String }

    /// Reads at most `YAMLReader.maxBytes + 1` bytes of a regular file, so that a FIFO, a
    /// directory or `/dev/zero` in the catalog's place is an error, never a hang or an unbounded
    /// read. One byte past the cap is kept so that `YAMLReader` reports the size, as for text.
    static func readFile(_ path: String) -> Result<[UInt8], ReadFailure> {
        func failure() -> Result<[UInt8], ReadFailure> {
            .failure(ReadFailure(message: String(cString: strerror(errno))))
        }
        // O_NONBLOCK: opening a FIFO must not wait for a writer. `open` follows symlinks, which
        // is how Kubernetes mounts a ConfigMap; fstat then checks what the link leads to.
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return failure() }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { return failure() }
        guard info.st_mode & S_IFMT == S_IFREG else { return .failure(ReadFailure(message: "not a regular file")) }
        let limit = YAMLReader.maxBytes + 1
        // st_size only sizes the buffer: the file may grow or shrink while it is read.
        var bytes = [UInt8](repeating: 0, count: min(limit, max(Int(info.st_size), 0) + 1))
        var count = 0
        while count < limit {
            if count == bytes.count { bytes.append(contentsOf: repeatElement(0, count: min(65_536, limit - count))) }
            let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + count, $0.count - count) }
            if n < 0, errno == EINTR { continue }
            guard n >= 0 else { return failure() }
            if n == 0 { break }
            count += n
        }
        bytes.removeSubrange(count...)
        return .success(bytes)
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
