import Foundation
import LeaseholdTesting
import Testing

#if canImport(Glibc)
    import Glibc
#endif

// The daemon's HTTP endpoint against slow and hostile clients, with a real `leaseholdd` and
// real loopback sockets: many idle connections, stalled and trickling requests, oversize
// heads and bodies, and where `--http :PORT` listens. The production limits apply (10 s idle
// timeout, 64 connections, 8 KiB head, 1 KiB body); bounds are generous.

/// A catalog with one quiet job, so the daemon has Redis connections open like in production.
private let catalog = """
    version: 1
    redis: { namespace: NAMESPACE }
    defaults: { lease: 2s, placement: any }
    jobs:
      - { name: http-limits, handler: log, schedule: { every: 5s }, config: { message: "tick" } }
    """

/// Starts a member serving `--http http(port)` on a free port; retries when another process
/// grabbed the port first (the daemon exits then). `/healthz` is asked on 127.0.0.1.
private func startServing(
    _ fleet: DaemonFleet, name: String, http: (Int) -> String
) async throws -> (daemon: DaemonProcess, port: Int) {
    for _ in 0..<5 {
        let port = FreePort.next()
        let daemon = try fleet.start(name, extra: ["--http", http(port)])
        let serving =
            (try? await eventually("/healthz to answer", within: .seconds(20)) {
                await healthz(port) == 200 || !daemon.isRunning
            }) != nil
        if serving && daemon.isRunning { return (daemon, port) }
        await daemon.stop()
    }
    throw TestSupportError("leaseholdd never served /healthz")
}

/// `/healthz`'s status on 127.0.0.1:`port`, off the cooperative pool (the GET blocks).
private func healthz(_ port: Int) async -> Int? {
    await onThread { httpGet(port: port, path: "/healthz")?.status }
}

/// How many file descriptors process `pid` has open.
private func openDescriptors(_ pid: Int32) -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
}

/// A blocking TCP client socket with small helpers; closed on deinit.
private final class Client: @unchecked Sendable {
    let fd: Int32

    /// Connects to `host` (dotted IPv4) : `port`; nil if refused.
    init?(host: String = "127.0.0.1", port: Int) {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        inet_pton(AF_INET, host, &address.sin_addr)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        // A failed init still runs deinit, which closes the socket.
        guard connected == 0 else { return nil }
    }

    deinit { close(fd) }

    /// Sends all of `text` (or as much as the peer takes before it closes); false on failure.
    @discardableResult
    func send(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count <= 0 { return false }
            sent += count
        }
        return true
    }

    /// Reads until `marker` shows up in what came so far, the peer closes, or `timeout` passes.
    func read(until marker: String? = nil, within timeout: Duration = .seconds(5)) -> (text: String, closed: Bool) {
        let deadline = ContinuousClock.now + timeout
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16384)
        while ContinuousClock.now < deadline {
            if let marker, String(decoding: bytes, as: UTF8.self).contains(marker) { break }
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&descriptor, 1, 100) > 0 else { continue }
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count <= 0 { return (String(decoding: bytes, as: UTF8.self), true) }
            bytes += buffer[0..<count]
        }
        return (String(decoding: bytes, as: UTF8.self), false)
    }

    /// Waits until the peer closes the connection, sending one byte of `trickle` every half
    /// second meanwhile if given; returns how long that took, nil if not within `timeout`.
    func waitForClose(within timeout: Duration, trickle: Bool = false) -> Duration? {
        let start = ContinuousClock.now
        var buffer = [UInt8](repeating: 0, count: 4096)
        while ContinuousClock.now - start < timeout {
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&descriptor, 1, 500) > 0 {
                let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if count <= 0 { return ContinuousClock.now - start }
            } else if trickle, !send("a") {
                return ContinuousClock.now - start
            }
        }
        return nil
    }
}

/// Runs the blocking `body` on a thread of its own and returns its result.
private func onThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        Thread.detachNewThread { continuation.resume(returning: body()) }
    }
}

/// The status code of the first response in `text`.
private func statusCode(_ text: String) -> Int? {
    text.split(separator: "\r\n", maxSplits: 1).first.flatMap { line in
        let parts = line.split(separator: " ")
        return parts.count >= 2 ? Int(parts[1]) : nil
    }
}

@Suite("HTTP endpoint: slow and hostile clients", .serialized, .timeLimit(.minutes(3)))
struct HTTPLimitsTests {
    @Test("200 idle connections: /healthz still answers, open descriptors stay near the 64-connection cap")
    func idleConnectionsAreCapped() async throws {
        let fleet = try await DaemonFleet(catalog: catalog)
        let (daemon, port) = try await startServing(fleet, name: "cap-1") { "127.0.0.1:\($0)" }
        // A scraper in keep-alive, connected before the flood: it should survive it.
        let scraper = try #require(Client(port: port))
        scraper.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(statusCode(await onThread { scraper.read(until: "ok\n") }.text) == 200)
        try await Task.sleep(for: .milliseconds(500))
        let baseline = openDescriptors(daemon.pid)

        // connect() blocks while the daemon's accept backlog is full: not on the cooperative pool.
        var idle = await onThread { (0..<200).compactMap { _ in Client(port: port) } }
        #expect(idle.count == 200, "connects refused by the kernel: \(200 - idle.count)")
        let started = ContinuousClock.now
        // Well under the 10 s idle timeout: stalled connections make room, they are not waited out.
        try await eventually("/healthz to answer with 200 idle connections", within: .seconds(5)) {
            await healthz(port) == 200
        }
        let healthzAfter = ContinuousClock.now - started
        // The cap holds the daemon's descriptors; without it they would grow by 200.
        try await eventually("the daemon's descriptors to settle", within: .seconds(10)) {
            openDescriptors(daemon.pid) <= baseline + 64 + 8
        }
        let peak = openDescriptors(daemon.pid)
        scraper.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(
            statusCode(await onThread { scraper.read(until: "ok\n") }.text) == 200, "the keep-alive scraper was shed")
        print("200 idle connections: /healthz after \(milliseconds(healthzAfter)) ms; fds \(baseline) -> \(peak)")

        let reports = daemon.lines.filter { $0.message == "http connection limit reached" }
        #expect(reports.count >= 1 && reports.count <= 2, "want one report per minute, got \(reports.count)")
        #expect(reports.first?.fields?["max_connections"] == "64")
        print(reports.first?.raw ?? "no report")
        idle.removeAll()
        #expect(daemon.isRunning, "\(daemon.logTail())")
        #expect(await daemon.stop() == 0)
    }

    @Test("a stalled head, a trickling head and an idle keep-alive connection are closed after the idle timeout")
    func slowClientsAreClosed() async throws {
        let fleet = try await DaemonFleet(catalog: catalog)
        let (daemon, port) = try await startServing(fleet, name: "idle-1") { "127.0.0.1:\($0)" }
        let stalled = try #require(Client(port: port))
        stalled.send("GET /healthz HTTP/1.1\r\nHost: x\r\n")
        let trickling = try #require(Client(port: port))
        trickling.send("GET /healthz HTTP/1.1\r\nX-Slow: ")
        let keptAlive = try #require(Client(port: port))
        keptAlive.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(statusCode(await onThread { keptAlive.read(until: "ok\n") }.text) == 200)

        // 10 s idle timeout; 30 s is the generous bound, 5 s says it was the timeout.
        // Each wait blocks: a thread of its own, not the cooperative pool (two threads on two cores).
        async let stalledClosed = onThread { stalled.waitForClose(within: .seconds(30)) }
        async let tricklingClosed = onThread { trickling.waitForClose(within: .seconds(30), trickle: true) }
        async let keptAliveClosed = onThread { keptAlive.waitForClose(within: .seconds(30)) }
        let closed = await [
            ("stalled", stalledClosed), ("trickling", tricklingClosed), ("kept alive", keptAliveClosed),
        ]
        for (what, after) in closed {
            let after = try #require(after, "\(what) connection still open after 30 s")
            #expect(after >= .seconds(5), "\(what) connection closed after only \(milliseconds(after)) ms")
            print("\(what) connection closed after \(milliseconds(after)) ms")
        }
        #expect(await healthz(port) == 200)
        #expect(await daemon.stop() == 0)
    }

    @Test("oversize heads get 431, oversize bodies 413, and the connection closes")
    func oversizeRequestsAreRefused() async throws {
        let fleet = try await DaemonFleet(catalog: catalog)
        let (daemon, port) = try await startServing(fleet, name: "size-1") { "127.0.0.1:\($0)" }
        let big = String(repeating: "a", count: 64 * 1024)
        let requests: [(what: String, request: String, status: Int)] = [
            ("64 KiB header", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: \(big)\r\n\r\n", 431),
            ("64 KiB URL", "GET /healthz?\(big) HTTP/1.1\r\nHost: x\r\n\r\n", 431),
            (
                "64 KiB body", "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: \(big.utf8.count)\r\n\r\n\(big)",
                413
            ),
            (
                "64 KiB chunked body",
                "POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000\r\n\(big)\r\n0\r\n\r\n",
                413
            ),
        ]
        for (what, request, status) in requests {
            let client = try #require(Client(port: port))
            let answer = await onThread {
                client.send(request)
                return client.read(within: .seconds(10))
            }
            #expect(statusCode(answer.text) == status, "\(what): \(answer.text.prefix(200))")
            #expect(answer.closed, "\(what): connection still open")
        }
        // A head just under the cap is still served.
        let fine = try #require(Client(port: port))
        fine.send("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Fine: \(String(repeating: "a", count: 4096))\r\n\r\n")
        #expect(statusCode(await onThread { fine.read(until: "ok\n") }.text) == 200)
        #expect(await healthz(port) == 200)
        #expect(await daemon.stop() == 0)
    }

    @Test("--http :PORT listens on 127.0.0.1 only; --http 0.0.0.0:PORT on every interface")
    func emptyHostMeansLoopback() async throws {
        let fleet = try await DaemonFleet(catalog: catalog)
        // 127.0.0.2 is loopback too, but a socket bound to 127.0.0.1 does not accept it.
        let (local, localPort) = try await startServing(fleet, name: "bind-1") { ":\($0)" }
        #expect(Client(host: "127.0.0.2", port: localPort) == nil, "--http :PORT accepts on 127.0.0.2")
        #expect(local.lines.contains { $0.message == "http endpoint listening" && $0.raw.contains("127.0.0.1:") })
        #expect(await local.stop() == 0)

        let (every, everyPort) = try await startServing(fleet, name: "bind-2") { "0.0.0.0:\($0)" }
        #expect(Client(host: "127.0.0.2", port: everyPort) != nil, "--http 0.0.0.0:PORT refuses 127.0.0.2")
        #expect(await every.stop() == 0)
    }
}
