import Foundation
import Leasehold
import LeaseholdTesting
import Logging
import RedisClient

#if canImport(Glibc)
    import Glibc
#endif

/// Options shared by every scenario.
struct BenchOptions: Sendable {
    var quick = false
    var resultsDirectory = "bench-results"
    /// Crash trials at TTL 2 s / 10 s and graceful trials (overridable for long runs).
    var crashTrials2s = 50
    var crashTrials10s = 5
    /// Crash trials per TTL with crash release on (each takes milliseconds, not a TTL).
    var crashReleaseTrials = 50
    var gracefulTrials = 50
    /// Cost scenario: only cells with this job count (diagnostics).
    var onlyJobs: Int?
}

// MARK: - Machine and load

struct MachineInfo: Codable, Sendable {
    var nproc: Int
    var cpuModel: String
    var loadAverage: String
    var date: String

    static func current() -> MachineInfo {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let model =
            cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .map { $0.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "?" }
            ?? "?"
        return MachineInfo(
            nproc: Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), cpuModel: model,
            loadAverage: LeaseholdBench.loadAverage(),
            date: ISO8601DateFormatter().string(from: Date()))
    }
}

/// The 1/5/15-minute load averages as printed by /proc/loadavg.
func loadAverage() -> String {
    let text = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8)) ?? "?"
    return text.split(separator: " ").prefix(3).joined(separator: " ")
}

// MARK: - CPU

/// User + system CPU seconds of this process so far.
func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
        + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
}

/// utime + stime of another process, in seconds, from /proc/<pid>/stat.
func procCPUSeconds(pid: Int32) -> Double? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = text.lastIndex(of: ")")
    else { return nil }
    // Fields after the command name start at field 3 (state); utime = 14, stime = 15.
    let fields = text[text.index(after: close)...].split(separator: " ")
    guard fields.count > 13, let utime = Double(fields[11]), let stime = Double(fields[12]) else { return nil }
    return (utime + stime) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// VmRSS of a process in MB, from /proc/<pid>/status.
func procRSSMegabytes(pid: Int32) -> Double? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        let digits = line.split(separator: " ").dropFirst().first.flatMap { Double($0) }
        return digits.map { $0 / 1024 }
    }
    return nil
}

// MARK: - Redis INFO

/// A snapshot of the Redis counters the cost scenario compares.
struct RedisCounters: Sendable {
    var calls: [String: Int]
    var cpuSeconds: Double

    static func read(_ connection: RedisConnection) async throws -> RedisCounters {
        let stats = try await connection.send(["INFO", "commandstats"]).string ?? ""
        var calls: [String: Int] = [:]
        for line in stats.split(whereSeparator: \.isNewline) where line.hasPrefix("cmdstat_") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = String(line[line.index(line.startIndex, offsetBy: 8)..<colon])
            if let range = line.range(of: "calls=") {
                calls[name] = Int(line[range.upperBound...].prefix(while: \.isNumber)) ?? 0
            }
        }
        let cpu = try await connection.send(["INFO", "cpu"]).string ?? ""
        var seconds = 0.0
        for line in cpu.split(whereSeparator: \.isNewline) {
            let parts = line.split(separator: ":")
            guard parts.count == 2 else { continue }
            if parts[0] == "used_cpu_sys" || parts[0] == "used_cpu_user" {
                seconds += Double(parts[1].trimmingCharacters(in: .whitespaces)) ?? 0
            }
        }
        return RedisCounters(calls: calls, cpuSeconds: seconds)
    }

    /// Per-command call deltas, without the benchmark's own INFO calls.
    func delta(since earlier: RedisCounters) -> [String: Int] {
        var result: [String: Int] = [:]
        for (name, count) in calls where name != "info" {
            let d = count - (earlier.calls[name] ?? 0)
            if d > 0 { result[name] = d }
        }
        return result
    }
}

// MARK: - Statistics

struct Distribution: Codable, Sendable {
    var count: Int
    var p50: Double
    var p90: Double
    var p99: Double
    var max: Double
    var min: Double
    var mean: Double

    init(_ values: [Double]) {
        let sorted = values.sorted()
        count = sorted.count
        func rank(_ p: Double) -> Double {
            guard !sorted.isEmpty else { return .nan }
            let index = Int((p * Double(sorted.count)).rounded(.up)) - 1
            return sorted[Swift.max(0, Swift.min(sorted.count - 1, index))]
        }
        p50 = rank(0.5)
        p90 = rank(0.9)
        p99 = rank(0.99)
        max = sorted.last ?? .nan
        min = sorted.first ?? .nan
        mean = sorted.isEmpty ? .nan : sorted.reduce(0, +) / Double(sorted.count)
    }
}

// MARK: - Output

/// Prints a fixed-width table.
func printTable(_ title: String, header: [String], rows: [[String]]) {
    var widths = header.map(\.count)
    for row in rows {
        for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) }
    }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, cell in
            let pad = String(repeating: " ", count: max(0, widths[i] - cell.count))
            return i == 0 ? cell + pad : pad + cell
        }.joined(separator: "  ")
    }
    print("\n== \(title)")
    print(line(header))
    print(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  "))
    for row in rows { print(line(row)) }
    fflush(nil)
}

func fmt(_ value: Double, _ digits: Int = 1) -> String {
    value.isFinite ? String(format: "%.\(digits)f", value) : "-"
}

/// Writes `value` to `bench-results/<name>.json` (latest) and a timestamped copy.
func writeJSON<T: Encodable>(_ value: T, name: String, options: BenchOptions) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    do {
        try FileManager.default.createDirectory(atPath: options.resultsDirectory, withIntermediateDirectories: true)
        let data = try encoder.encode(value)
        let stamp = Int(Date().timeIntervalSince1970)
        let suffix = options.quick ? "-quick" : ""
        try data.write(to: URL(fileURLWithPath: "\(options.resultsDirectory)/\(name)\(suffix).json"))
        try data.write(to: URL(fileURLWithPath: "\(options.resultsDirectory)/\(name)\(suffix)-\(stamp).json"))
        print("wrote \(options.resultsDirectory)/\(name)\(suffix).json")
    } catch {
        print("could not write results for \(name): \(error)")
    }
}

func log(_ message: String) {
    FileHandle.standardError.write(Data("[bench \(loadAverage())] \(message)\n".utf8))
}

// MARK: - Time

let benchClock = ContinuousClock()

extension Duration {
    var ms: Double { secondsValue * 1000 }
}

/// A private redis-server configured like a small production one (no persistence).
func startRedis() async throws -> RedisServerProcess {
    try await RedisServerProcess(RedisServerProcess.Options())
}

/// The directory of this executable (leaseholdd is built next to it).
func executableDirectory() -> String {
    let path =
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return (path as NSString).deletingLastPathComponent
}

/// Median round trip of PING on a fresh connection, in ms.
func pingRoundTripMs(_ redis: RedisServerProcess, samples: Int = 200) async -> Double {
    let connection = RedisConnection(configuration: redis.configuration())
    var values: [Double] = []
    for _ in 0..<samples {
        let start = benchClock.now
        _ = try? await connection.send(["PING"])
        values.append((benchClock.now - start).ms)
    }
    await connection.close()
    return Distribution(values).p50
}
