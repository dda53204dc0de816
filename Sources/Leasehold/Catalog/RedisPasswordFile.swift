import RedisClient

/// The Redis password kept in a file (a mounted secret), so that it is neither in `ps` nor in
/// the environment every job inherits. Where its path comes from, in order: the
/// `--redis-password-file` flag, `LEASEHOLD_REDIS_PASSWORD_FILE`, the catalog's
/// `redis.password_file`. The daemon and the CLI resolve it identically; the file is read once.
package enum RedisPasswordFile {
    /// The environment variable that names the file.
    package static let environmentVariable = "LEASEHOLD_REDIS_PASSWORD_FILE"
    /// The flag that names the file (daemon and CLI).
    package static let flag = "--redis-password-file"
    /// A password is a line, not a document: anything longer is the wrong file.
    package static let maximumBytes = 4096

    /// The password read from a file, and a warning about the file's mode if there is one.
    package struct Loaded: Sendable {
        /// The file's content without its trailing line break.
        package var password: String
        /// Set when group or others may read the file.
        package var warning: String?
    }

    /// The path to read and a name for where it came from (for messages), if any names one.
    package static func resolve(
        flag: String?, environment: [String: String], catalog: Catalog?
    ) -> (path: String, source: String)? {
        if let flag { return (flag, Self.flag) }
        if let value = environment[environmentVariable], !value.isEmpty { return (value, environmentVariable) }
        if let catalog, let path = catalog.redisPasswordFile { return (path, "\(catalog.path): redis.password_file") }
        return nil
    }

    /// Puts the password from the file that the settings name, if any, into `endpoint` (it wins
    /// over a password in the URL); returns a warning to log about the file's mode.
    package static func apply(
        to endpoint: inout RedisEndpoint, flag: String?, environment: [String: String], catalog: Catalog?
    ) throws(PasswordFileError) -> String? {
        guard let (path, source) = resolve(flag: flag, environment: environment, catalog: catalog) else { return nil }
        switch load(path: path, source: source) {
        case .failure(let error):
            throw error
        case .success(let loaded):
            endpoint.password = loaded.password
            return loaded.warning
        }
    }

    /// Reads the password; the error is one line naming the file and what is wrong.
    package static func load(path: String, source: String) -> Result<Loaded, PasswordFileError> {
        func failure(_ reason: String) -> Result<Loaded, PasswordFileError> {
            .failure(
                PasswordFileError(message: "cannot use the Redis password file '\(path)' (from \(source)): \(reason)"))
        }
        let file: (bytes: [UInt8], mode: UInt32)
        switch RegularFile.read(path, atMost: maximumBytes + 1) {
        case .success(let read): file = read
        case .failure(let error): return failure(error.message)
        }
        guard file.bytes.count <= maximumBytes else { return failure("larger than \(maximumBytes) bytes") }
        var content = file.bytes
        // One trailing line break is how editors and `echo` write files; it is not part of it.
        if content.last == UInt8(ascii: "\n") { content.removeLast() }
        if content.last == UInt8(ascii: "\r") { content.removeLast() }
        guard !content.isEmpty else { return failure("the file is empty") }
        guard let password = String(validating: content, as: UTF8.self) else { return failure("not UTF-8 text") }
        guard !password.contains(where: { $0 == "\n" || $0 == "\r" || $0 == "\0" }) else {
            return failure("it holds more than one line")
        }
        var warning: String?
        let mode = file.mode & 0o777
        if mode & 0o044 != 0 {
            let octal = String(mode, radix: 8)
            warning =
                "the Redis password file '\(path)' is readable by \(mode & 0o004 != 0 ? "every user" : "its group") "
                + "(mode 0\(octal)): chmod 600 it"
        }
        return .success(Loaded(password: password, warning: warning))
    }
}

/// A password file that cannot be used; the message never contains the password.
package struct PasswordFileError: Error, Sendable, CustomStringConvertible {
    /// One line naming the file, where its path came from and what is wrong.
    package var message: String
    /// The message.
    package var description: String { message }
}
