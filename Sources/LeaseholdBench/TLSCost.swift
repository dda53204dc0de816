import Foundation
import LeaseholdTesting
import RedisClient

/// What TLS costs per command round trip and per connect: the same loops against a plain
/// and a TLS-only redis-server on loopback (certificates made by openssl at start).
enum TLSCostScenario {
    struct Row: Codable {
        var transport: String
        var command: String
        var count: Int
        var meanUs: Double
        var p50Us: Double
        var p99Us: Double
        var clientCPUUsPerCall: Double
    }

    struct Result: Codable {
        var machine: MachineInfo
        var rows: [Row]
    }

    static func run(options: BenchOptions) async throws {
        let count = options.quick ? 2_000 : 10_000
        let connects = options.quick ? 50 : 200
        let certificates = try await TestCertificates.make()
        let plain = try await RedisServerProcess()
        let tls = try await RedisServerProcess(.init(tls: .init(certificates: certificates)))
        let script = RedisScript("return redis.call('INCR', KEYS[1])")
        var rows: [Row] = []
        for (name, server) in [("plain", plain), ("tls", tls)] {
            let connection = RedisConnection(configuration: server.configuration())
            for _ in 0..<500 { _ = try await connection.send(["PING"]) }  // warm up
            for (command, body) in [
                ("PING", { () async throws -> Void in _ = try await connection.send(["PING"]) }),
                (
                    "EVALSHA",
                    { () async throws -> Void in _ = try await connection.evaluate(script, keys: ["k"], arguments: []) }
                ),
            ] {
                var samples: [Double] = []
                samples.reserveCapacity(count)
                let cpuBefore = processCPUSeconds()
                for _ in 0..<count {
                    let start = benchClock.now
                    try await body()
                    samples.append((benchClock.now - start).ms * 1000)
                }
                let cpu = (processCPUSeconds() - cpuBefore) / Double(count) * 1e6
                let distribution = Distribution(samples)
                rows.append(
                    Row(
                        transport: name, command: command, count: count, meanUs: distribution.mean,
                        p50Us: distribution.p50, p99Us: distribution.p99, clientCPUUsPerCall: cpu))
            }
            await connection.close()
            // Connect (+ handshake) + first PING on a fresh connection each time.
            var samples: [Double] = []
            let cpuBefore = processCPUSeconds()
            for _ in 0..<connects {
                let fresh = RedisConnection(configuration: server.configuration())
                let start = benchClock.now
                _ = try await fresh.send(["PING"])
                samples.append((benchClock.now - start).ms * 1000)
                await fresh.close()
            }
            let cpu = (processCPUSeconds() - cpuBefore) / Double(connects) * 1e6
            let distribution = Distribution(samples)
            rows.append(
                Row(
                    transport: name, command: "connect+PING", count: connects, meanUs: distribution.mean,
                    p50Us: distribution.p50, p99Us: distribution.p99, clientCPUUsPerCall: cpu))
        }
        printTable(
            "TLS vs plain round trips (loopback, one connection, sequential)",
            header: ["transport", "command", "n", "mean µs", "p50 µs", "p99 µs", "client CPU µs/call"],
            rows: rows.map {
                [
                    $0.transport, $0.command, String($0.count), fmt($0.meanUs), fmt($0.p50Us), fmt($0.p99Us),
                    fmt($0.clientCPUUsPerCall),
                ]
            })
        writeJSON(Result(machine: MachineInfo.current(), rows: rows), name: "tls", options: options)
    }
}
