import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Whole lines to standard error with write(2), without Foundation's FileHandle: the daemon's
/// log lines and its start-up errors.
package enum StandardError {
    private static let lock = Mutex(())

    /// Writes `text` in full (retrying short writes and EINTR); lines from concurrent callers
    /// never interleave.
    package static func write(_ text: String) {
        lock.withLock { _ in
            var bytes = Array(text.utf8)
            var offset = 0
            bytes.withUnsafeMutableBytes { buffer in
                while offset < buffer.count {
                    let written = Glibc.write(2, buffer.baseAddress! + offset, buffer.count - offset)
                    if written > 0 {
                        offset += written
                    } else if written < 0 && errno == EINTR {
                        continue
                    } else {
                        return  // stderr closed or full: a log line is not worth blocking for
                    }
                }
            }
        }
    }
}
