import LeaseholdTesting
import Logging
import RedisClient
import Synchronization
import Testing

@testable import Leasehold

/// Every test uses its own redis-server, so the default namespace for all is fine.
let keys = LeaseKeys()
let namespace = keys.namespace

/// Member options of these tests: the shared namespace, a seed, a shutdown bound.
func options(seed: UInt64 = 1, shutdownTimeout: Duration = .seconds(5)) -> TestMember.Options {
    TestMember.Options(keys: keys, seed: seed, shutdownTimeout: shutdownTimeout)
}

func jobs(_ names: [String], ttl: Duration, renewEvery: Duration? = nil) -> [LeaseJob] {
    names.map { LeaseJob(name: $0, timing: LeaseTiming(ttl: ttl, renewEvery: renewEvery)) }
}

extension RedisServerProcess {
    /// Remaining TTL of the lease key in ms (negative if missing / no TTL).
    func leasePTTL(_ job: String) async throws -> Int64 {
        try await command("PTTL", keys.lease(job)).integer ?? -2
    }

    /// `calls=` per command from one `INFO commandstats` snapshot (consistent across names).
    func commandStats() async throws -> [String: Int] {
        let info = try await command("INFO", "commandstats").string ?? ""
        var stats: [String: Int] = [:]
        for line in info.split(whereSeparator: \.isNewline) where line.hasPrefix("cmdstat_") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = String(line[line.index(line.startIndex, offsetBy: 8)..<colon])
            guard let range = line.range(of: "calls=") else { continue }
            stats[name] = Int(line[range.upperBound...].prefix(while: \.isNumber)) ?? 0
        }
        return stats
    }

    /// Fields of the newest entry of a job's events stream.
    func lastLeaseEvent(_ job: String) async throws -> [String: String] {
        guard let entry = try await command("XREVRANGE", keys.events(job), "+", "-", "COUNT", "1").array?.first,
            let fields = entry.array?.last?.array
        else { return [:] }
        var result: [String: String] = [:]
        var index = 0
        while index + 1 < fields.count {
            result[fields[index].string ?? ""] = fields[index + 1].string ?? ""
            index += 2
        }
        return result
    }
}

extension Duration {
    var ms: Double { Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15 }
}
