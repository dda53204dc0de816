import Foundation

/// A throwaway PKI made by `openssl` at test time: a CA, a server certificate for 127.0.0.1
/// and localhost (SAN), a client certificate from the same CA, and an unrelated CA whose
/// trust must not be enough. Keys are P-256 (fast to make). Removed on deinit.
public final class TestCertificates: Sendable {
    /// The directory holding every file.
    public let directory: String

    /// The CA that signed the server and client certificates.
    public var caFile: String { directory + "/ca.crt" }
    /// An unrelated CA: trusting only it must fail verification.
    public var wrongCAFile: String { directory + "/wrong-ca.crt" }
    /// The server's certificate (SAN: IP 127.0.0.1, DNS localhost) and key.
    public var serverCertFile: String { directory + "/server.crt" }
    /// The server's key.
    public var serverKeyFile: String { directory + "/server.key" }
    /// A client certificate signed by the CA, and its key.
    public var clientCertFile: String { directory + "/client.crt" }
    /// The client certificate's key.
    public var clientKeyFile: String { directory + "/client.key" }
    /// A key that belongs to no certificate here (for mismatch errors).
    public var strayKeyFile: String { directory + "/stray.key" }

    private init(directory: String) { self.directory = directory }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    /// Makes the files; openssl runs on a thread of its own, off the cooperative pool.
    public static func make() async throws -> TestCertificates {
        var template = Array("/tmp/leasehold-pki-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw TestSupportError("mkdtemp failed: errno \(errno)") }
        let certificates = TestCertificates(directory: String(cString: made))
        let directory = certificates.directory
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            Thread {
                do {
                    try generate(in: directory)
                    continuation.resume()
                } catch {
                    continuation.resume(throwing: error)
                }
            }.start()
        }
        return certificates
    }

    private static func generate(in directory: String) throws {
        let curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        for name in ["ca", "wrong-ca"] {
            try openssl(
                ["req", "-x509"] + curve + [
                    "-keyout", "\(name).key", "-out", "\(name).crt", "-days", "2", "-subj",
                    "/CN=Leasehold test \(name)",
                ], in: directory)
        }
        try "subjectAltName=IP:127.0.0.1,DNS:localhost\n".write(
            toFile: directory + "/server.ext", atomically: true, encoding: .utf8)
        try "extendedKeyUsage=clientAuth\n".write(toFile: directory + "/client.ext", atomically: true, encoding: .utf8)
        for (name, subject) in [("server", "/CN=localhost"), ("client", "/CN=leasehold-client")] {
            try openssl(
                ["req"] + curve + ["-keyout", "\(name).key", "-out", "\(name).csr", "-subj", subject], in: directory)
            try openssl(
                [
                    "x509", "-req", "-in", "\(name).csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                    "-out", "\(name).crt", "-days", "2", "-extfile", "\(name).ext",
                ], in: directory)
        }
        try openssl(
            ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-out", "stray.key"],
            in: directory)
    }

    private static func openssl(_ arguments: [String], in directory: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw TestSupportError(
                "openssl \(arguments.joined(separator: " ")) failed: \(String(decoding: output, as: UTF8.self))")
        }
    }
}
