import Foundation

#if canImport(Glibc)
    import Glibc
#endif

// Small probes the daemon tests share: a blocking HTTP GET for the status endpoint, and
// whether a process group still lives (shell jobs run in groups of their own).

/// A duration in whole milliseconds, for failure messages and printed figures.
public func milliseconds(_ duration: Duration) -> Int {
    let (seconds, attoseconds) = duration.components
    return Int(seconds * 1000 + attoseconds / 1_000_000_000_000_000)
}

/// The answer to ``httpGet(port:path:)``.
public struct HTTPResult: Sendable {
    /// The HTTP status code.
    public var status: Int
    /// The body, decoded as UTF-8.
    public var body: String
}

/// `httpGet(port:path:)` on a thread of its own, for async tests: a blocking socket (up to its
/// 5 s timeout) must not hold one of the test process's cooperative threads.
public func httpGetOffPool(port: Int, path: String) async -> HTTPResult? {
    await withCheckedContinuation { continuation in
        Thread { continuation.resume(returning: httpGet(port: port, path: path)) }.start()
    }
}

/// `GET path` on 127.0.0.1:`port`; nil if nothing answers (yet).
public func httpGet(port: Int, path: String) -> HTTPResult? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 5, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard connected == 0 else { return nil }
    let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8)
    guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == request.count else { return nil }
    var response: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 16384)
    while true {
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if count <= 0 { break }
        response += buffer[0..<count]
    }
    let text = String(decoding: response, as: UTF8.self)
    guard let statusLine = text.split(separator: "\r\n", maxSplits: 1).first else { return nil }
    let parts = statusLine.split(separator: " ")
    guard parts.count >= 2, let status = Int(parts[1]) else { return nil }
    let body = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? ""
    return HTTPResult(status: status, body: body)
}

/// Whether any process of process group `pgid` is alive.
public func processGroupAlive(_ pgid: Int32) -> Bool {
    Glibc.kill(-pgid, 0) == 0 || errno == EPERM
}
