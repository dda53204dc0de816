import LeaseholdTesting
import RedisClient
import Testing

@testable import Leasehold

/// `redis.tls` in the catalog and the `--tls-*` flags over it: validation with locations and
/// spelling hints, precedence, the plain-URL conflict, and file errors naming the setting.
struct RedisTLSSettingTests {
    static let jobs = """
        jobs:
          - name: a
            handler: log
            schedule: continuous
        """

    @Test func validTLSSectionResolvesPathsAgainstTheCatalog() throws {
        let catalog = try CatalogLoader.parse(
            text: """
                version: 1
                redis:
                  url: rediss://cache.example.com:6380/0
                  tls:
                    ca_file: certs/ca.pem
                    cert_file: /etc/leasehold/client.pem
                    key_file: client.key
                    server_name: redis.internal
                    verify: false
                \(Self.jobs)
                """, path: "/srv/app/jobs.yaml", knownHandlers: ["log"], checkHandler: testHandlers)
        let tls = try #require(catalog.redisTLS)
        #expect(tls.caFile?.value == "/srv/app/certs/ca.pem")
        #expect(tls.certFile?.value == "/etc/leasehold/client.pem")
        #expect(tls.keyFile?.value == "/srv/app/client.key")
        #expect(tls.serverName?.value == "redis.internal")
        #expect(tls.verify?.value == false)
        #expect(tls.caFile?.location.description == "/srv/app/jobs.yaml:5:14")
    }

    @Test func badTLSSectionsAreLocatedErrors() {
        let cases: [(String, String)] = [
            (
                "  tls: yes\n",
                "jobs.yaml:3:8: 'tls' must be a mapping with ca_file, cert_file, key_file, server_name and/or verify, got a string"
            ),
            (
                "  tls:\n    ca_flie: ca.pem\n",
                "jobs.yaml:4:5: unknown key 'ca_flie' in 'redis.tls': did you mean 'ca_file'?"
            ),
            (
                "  tls:\n    ca_file: [a, b]\n",
                "jobs.yaml:4:14: 'ca_file' must be the path of a PEM file of CA certificates, got a list"
            ),
            ("  tls:\n    verify: maybe\n", "jobs.yaml:4:13: invalid verify 'maybe': expected true or false"),
            ("  tls:\n    verify: no\n", "jobs.yaml:4:13: invalid verify 'no': expected true or false"),
            (
                "  tls:\n    server_name: 'a b'\n",
                "jobs.yaml:4:18: invalid server_name 'a b': expected a host name or IP address"
            ),
            (
                "  tls:\n    cert_file: c.pem\n",
                "jobs.yaml:4:5: 'redis.tls' needs cert_file and key_file together (a client certificate and its key), got only cert_file"
            ),
        ]
        for (tls, expected) in cases {
            let errors = catalogErrors("version: 1\nredis:\n\(tls)\(Self.jobs)\n")
            #expect(errors == [expected], "\(tls)")
        }
    }

    static func endpoint(_ url: String) throws -> RedisEndpoint { try RedisEndpoint(url: url) }

    @Test func flagsBeatCatalogValuesOneByOneAndFilesAreChecked() async throws {
        let certificates = try await TestCertificates.make()
        let directory = try TempDirectory()
        let catalogPath = try directory.write(
            "jobs.yaml",
            """
            version: 1
            redis:
              tls:
                ca_file: \(certificates.wrongCAFile)
                server_name: localhost
            \(Self.jobs)
            """)
        let catalog = try HandlerRegistry.builtIn.loadCatalog(path: catalogPath)
        var endpoint = try Self.endpoint("rediss://127.0.0.1:6380")
        let warning = try RedisTLSSetting.apply(
            to: &endpoint, urlSource: "--redis", flags: .init(caFile: certificates.caFile), catalog: catalog)
        #expect(warning == nil)
        #expect(endpoint.tls == RedisTLSConfiguration(caFile: certificates.caFile, serverName: "localhost"))
        #expect(endpoint.tlsServerName == "localhost")

        // A missing catalog file is an error naming the catalog location and the file.
        let missingCatalog = try directory.write(
            "missing.yaml", "version: 1\nredis:\n  tls:\n    ca_file: nowhere/ca.pem\n\(Self.jobs)\n")
        var plain = try Self.endpoint("rediss://127.0.0.1:6380")
        #expect {
            try RedisTLSSetting.apply(
                to: &plain, urlSource: "--redis", flags: .init(),
                catalog: try HandlerRegistry.builtIn.loadCatalog(path: missingCatalog))
        } throws: { error in
            let message = (error as? TLSSettingError)?.message ?? ""
            return message.hasPrefix(
                "\(missingCatalog):4:14: redis.tls.ca_file: cannot use '\(directory.path)/nowhere/ca.pem'")
                && message.contains("No such file or directory") && !message.contains("\n")
        }
        // A file that is not PEM, given by a flag.
        let notPEM = try directory.write("notes.txt", "hello\n")
        var again = try Self.endpoint("rediss://127.0.0.1:6380")
        #expect {
            try RedisTLSSetting.apply(to: &again, urlSource: "--redis", flags: .init(caFile: notPEM), catalog: nil)
        } throws: { error in
            let message = (error as? TLSSettingError)?.message ?? ""
            return message.hasPrefix("--tls-ca-file: ") && message.contains("no PEM certificate")
                && message.contains(notPEM)
        }
        // A key that does not match its certificate.
        #expect {
            try RedisTLSSetting.apply(
                to: &again, urlSource: "--redis",
                flags: .init(certFile: certificates.clientCertFile, keyFile: certificates.strayKeyFile), catalog: nil)
        } throws: { error in
            let message = (error as? TLSSettingError)?.message ?? ""
            return message.contains("does not match the certificate") && message.contains("stray.key")
        }
    }

    @Test func aTLSSettingWithAPlainURLIsAnErrorNamingBoth() throws {
        var endpoint = try Self.endpoint("redis://127.0.0.1:6379/0")
        #expect {
            try RedisTLSSetting.apply(
                to: &endpoint, urlSource: "LEASEHOLD_REDIS_URL", flags: .init(caFile: "/ca.pem"), catalog: nil)
        } throws: { error in
            let message = (error as? TLSSettingError)?.message ?? ""
            return message.contains("--tls-ca-file") && message.contains("LEASEHOLD_REDIS_URL")
                && message.contains("use a rediss:// URL")
        }
        // Without any TLS setting a plain URL stays plain, and rediss:// alone is TLS with defaults.
        #expect(try RedisTLSSetting.apply(to: &endpoint, urlSource: "--redis", flags: .init(), catalog: nil) == nil)
        #expect(endpoint.tls == nil)
        var tls = try Self.endpoint("rediss://127.0.0.1:6380/0")
        #expect(try RedisTLSSetting.apply(to: &tls, urlSource: "--redis", flags: .init(), catalog: nil) == nil)
        #expect(tls.tls == RedisTLSConfiguration())
        let warning = try RedisTLSSetting.apply(
            to: &tls, urlSource: "--redis", flags: .init(insecure: true), catalog: nil)
        #expect(warning?.contains("verification is off (--tls-insecure)") == true)
        #expect(tls.tls?.verify == false)
    }
}
