/// TLS settings of a `rediss://` endpoint (see ``RedisEndpoint/tls``).
///
/// The files are PEM and read at every connect (so a rotated certificate is picked up by the
/// next reconnect). Without ``caFile`` the system's default trust store is used, which is what
/// managed services with public certificates need.
public struct RedisTLSConfiguration: Sendable, Hashable, CustomStringConvertible {
    /// CA certificates that may sign the server's certificate (PEM); nil: the system store.
    public var caFile: String?
    /// Client certificate (PEM, may hold the chain), for servers that require one.
    public var certFile: String?
    /// The client certificate's private key (PEM, unencrypted).
    public var keyFile: String?
    /// The name sent as SNI and checked against the certificate; nil: the URL's host.
    public var serverName: String?
    /// Whether the certificate chain and name are verified. Turning it off makes TLS encrypt
    /// without authenticating the server: anyone on the path can impersonate it.
    public var verify: Bool

    /// Creates TLS settings; the defaults verify the server against the system store.
    public init(
        caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil, serverName: String? = nil,
        verify: Bool = true
    ) {
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
        self.serverName = serverName
        self.verify = verify
    }

    /// The settings for logs (paths only; nothing secret lives here).
    public var description: String {
        var parts: [String] = []
        if let caFile { parts.append("ca_file: \(caFile)") }
        if let certFile { parts.append("cert_file: \(certFile)") }
        if let keyFile { parts.append("key_file: \(keyFile)") }
        if let serverName { parts.append("server_name: \(serverName)") }
        parts.append("verify: \(verify)")
        return "TLS(\(parts.joined(separator: ", ")))"
    }

    /// Loads the files into a throwaway OpenSSL context, so a daemon or CLI can reject a
    /// missing file, a file that is not PEM or a key that does not match its certificate at
    /// start, not at the first connect. The error names the file and what is wrong.
    public func check() throws(RedisError) {
        let context = try TLSContext(self)
        _ = context
    }
}
