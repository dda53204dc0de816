import RedisClient

/// Where a member's or the CLI's TLS settings come from: the `--tls-*` flags, then the
/// catalog's `redis.tls`, each setting on its own (a flag beats only its own catalog key).
///
/// A `rediss://` URL turns TLS on; a TLS setting next to a plain `redis://` or `unix://` URL is
/// an error naming both (see DECISIONS.md): a URL that reads "plain" in every log must not be
/// TLS, and a forgotten `s` must not silently drop the settings.
package enum RedisTLSSetting {
    /// The flags of both binaries (nil: not given).
    package struct Flags: Sendable {
        /// `--tls-ca-file`.
        package var caFile: String?
        /// `--tls-cert-file`.
        package var certFile: String?
        /// `--tls-key-file`.
        package var keyFile: String?
        /// `--tls-server-name`.
        package var serverName: String?
        /// `--tls-insecure`: do not verify the server's certificate.
        package var insecure: Bool

        /// Creates the flags.
        package init(
            caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil, serverName: String? = nil,
            insecure: Bool = false
        ) {
            self.caFile = caFile
            self.certFile = certFile
            self.keyFile = keyFile
            self.serverName = serverName
            self.insecure = insecure
        }
    }

    /// Puts the resolved TLS settings into `endpoint` and checks their files (readable regular
    /// PEM files, key matching certificate). Returns a warning to log once when verification
    /// is off. `urlSource` names where the URL came from, for the plain-URL conflict.
    package static func apply(
        to endpoint: inout RedisEndpoint, urlSource: String, flags: Flags, catalog: Catalog?
    ) throws(TLSSettingError) -> String? {
        let fromCatalog = catalog?.redisTLS
        let catalogPath = catalog?.path ?? ""
        func catalogSource(_ key: String, _ location: SourceLocation) -> String {
            "\(location): redis.tls.\(key)"
        }
        var given: [String] = []
        var tls = endpoint.tls ?? RedisTLSConfiguration()
        var sources: [(path: String, source: String)] = []

        func pick(_ flag: String?, _ flagName: String, _ setting: CatalogTLS.Setting<String>?, _ key: String)
            -> String?
        {
            if let flag {
                given.append(flagName)
                return flag
            }
            if let setting {
                given.append("\(catalogPath): redis.tls.\(key)")
                return setting.value
            }
            return nil
        }
        tls.caFile = pick(flags.caFile, "--tls-ca-file", fromCatalog?.caFile, "ca_file")
        tls.certFile = pick(flags.certFile, "--tls-cert-file", fromCatalog?.certFile, "cert_file")
        tls.keyFile = pick(flags.keyFile, "--tls-key-file", fromCatalog?.keyFile, "key_file")
        tls.serverName = pick(flags.serverName, "--tls-server-name", fromCatalog?.serverName, "server_name")
        if flags.insecure {
            given.append("--tls-insecure")
            tls.verify = false
        } else if let verify = fromCatalog?.verify {
            given.append("\(catalogPath): redis.tls.verify")
            tls.verify = verify.value
        }
        if fromCatalog != nil && given.isEmpty { given.append("\(catalogPath): redis.tls") }

        guard endpoint.tls != nil else {
            if given.isEmpty { return nil }
            throw TLSSettingError(
                message:
                    "TLS settings given (\(given.joined(separator: ", "))) but the Redis URL from \(urlSource) is not TLS (\(endpoint)): use a rediss:// URL, or drop the TLS settings"
            )
        }
        if let path = tls.caFile {
            sources.append(
                (path, flags.caFile != nil ? "--tls-ca-file" : catalogSource("ca_file", fromCatalog!.caFile!.location)))
        }
        if let path = tls.certFile {
            sources.append(
                (
                    path,
                    flags.certFile != nil
                        ? "--tls-cert-file" : catalogSource("cert_file", fromCatalog!.certFile!.location)
                ))
        }
        if let path = tls.keyFile {
            sources.append(
                (
                    path,
                    flags.keyFile != nil ? "--tls-key-file" : catalogSource("key_file", fromCatalog!.keyFile!.location)
                ))
        }
        for (path, source) in sources {
            // A FIFO or a directory must be a clear error, not a hang inside OpenSSL.
            if case .failure(let failure) = RegularFile.read(path, atMost: 1) {
                throw TLSSettingError(message: "\(source): cannot use '\(path)': \(failure.message)")
            }
        }
        do {
            try tls.check()
        } catch {
            let source = sources.first { error.message.contains("'\($0.path)'") }?.source
            throw TLSSettingError(message: source.map { "\($0): \(error.message)" } ?? error.message)
        }
        endpoint.tls = tls
        if !tls.verify {
            let from = flags.insecure ? "--tls-insecure" : "\(catalogPath): redis.tls.verify: false"
            return
                "TLS certificate verification is off (\(from)): the connection to \(endpoint) is encrypted, but the server is not authenticated"
        }
        return nil
    }
}

/// TLS settings that cannot be used: one line naming the setting (flag or catalog location) and the file.
package struct TLSSettingError: Error, Sendable, CustomStringConvertible {
    /// The line.
    package var message: String
    /// The message.
    package var description: String { message }
}
