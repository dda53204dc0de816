#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Bounded reads of files that operators and pull requests put in place (the catalog, the
/// Redis password file): a FIFO, a directory or `/dev/zero` in their place is an error, never a
/// hang or an unbounded read.
package enum RegularFile {
    /// Why a file could not be read: one short reason (`not a regular file`, `strerror`).
    package struct Failure: Error, Sendable {
        /// The reason.
        package var message: String
    }

    /// At most `limit` bytes of the regular file at `path`, and its permission bits. Pass the
    /// cap + 1 to tell a file at the cap from a larger one.
    package static func read(_ path: String, atMost limit: Int) -> Result<(bytes: [UInt8], mode: UInt32), Failure> {
        func failure() -> Result<(bytes: [UInt8], mode: UInt32), Failure> {
            .failure(Failure(message: String(cString: strerror(errno))))
        }
        // O_NONBLOCK: opening a FIFO must not wait for a writer. `open` follows symlinks, which
        // is how Kubernetes mounts ConfigMaps and Secrets; fstat then checks what the link leads to.
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return failure() }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { return failure() }
        guard info.st_mode & S_IFMT == S_IFREG else { return .failure(Failure(message: "not a regular file")) }
        // st_size only sizes the buffer: the file may grow or shrink while it is read.
        var bytes = [UInt8](repeating: 0, count: min(limit, max(Int(info.st_size), 0) + 1))
        var count = 0
        while count < limit {
            if count == bytes.count { bytes.append(contentsOf: repeatElement(0, count: min(65_536, limit - count))) }
            let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + count, $0.count - count) }
            if n < 0, errno == EINTR { continue }
            guard n >= 0 else { return failure() }
            if n == 0 { break }
            count += n
        }
        bytes.removeSubrange(count...)
        return .success((bytes, UInt32(info.st_mode & 0o7777)))
    }
}
