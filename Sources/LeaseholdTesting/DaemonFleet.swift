import Foundation
import LeaseholdElection
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// One private `redis-server`, one catalog, and the `leaseholdd` members started on them;
/// with `proxied`, each member talks to Redis through a ``FaultProxy`` of its own, so a test
/// can cut one member off or all of them.
public final class DaemonFleet: Sendable {
    /// The private Redis.
    public let redis: RedisServerProcess
    /// Holds the catalog and whatever the jobs write.
    public let directory: TempDirectory
    /// A fresh namespace, so runs never see each other's keys.
    public let namespace: String
    /// The catalog file.
    public let catalogPath: String
    /// The key schema of `namespace`.
    public let keys: LeaseKeys
    private let proxied: Bool
    private let proxyByMember = Mutex<[String: FaultProxy]>([:])

    /// Starts a private Redis (`redis` options) and writes `catalog` (YAML; `NAMESPACE` is
    /// replaced by a fresh namespace, `DIR` by the temp directory).
    public init(catalog: String, redis options: RedisServerProcess.Options = .init(), proxied: Bool = false)
        async throws
    {
        if proxied {
            // The proxy resets connections: hiredis's write() to a reset socket must fail
            // with EPIPE, not kill the test runner.
            signal(SIGPIPE, SIG_IGN)
        }
        redis = try await RedisServerProcess(options)
        directory = try TempDirectory()
        namespace = "t\(UInt32.random(in: 0 ... .max))"
        keys = LeaseKeys(namespace: namespace)
        self.proxied = proxied
        let text = catalog.replacingOccurrences(of: "NAMESPACE", with: namespace)
            .replacingOccurrences(of: "DIR", with: directory.path)
        catalogPath = try directory.write("jobs.yaml", text)
    }

    /// The proxy between member `name` and Redis (made on first use); nil unless proxied.
    public func proxy(_ name: String) throws -> FaultProxy? {
        guard proxied else { return nil }
        return try proxyByMember.withLock { proxies in
            if let proxy = proxies[name] { return proxy }
            let proxy = try FaultProxy(targetPort: redis.port)
            proxies[name] = proxy
            return proxy
        }
    }

    /// Every member's proxy so far.
    public var proxies: [String: FaultProxy] { proxyByMember.withLock { $0 } }

    /// Starts member `name` with JSON logs (through its proxy when proxied), on the fleet's
    /// catalog or on `catalog` (a path: members of one fleet may run different catalogs).
    public func start(_ name: String, catalog: String? = nil, extra: [String] = []) throws -> DaemonProcess {
        let url = try proxy(name)?.url() ?? redis.url
        return try DaemonProcess(
            name: name,
            arguments: ["--config", catalog ?? catalogPath, "--redis", url, "--name", name, "--log-format", "json"]
                + extra)
    }

    /// Writes a catalog file `name` in the fleet's directory (`NAMESPACE` and `DIR` replaced
    /// as for the fleet's own) and returns its path.
    @discardableResult
    public func writeCatalog(_ name: String, _ text: String) throws -> String {
        try directory.write(
            name,
            text.replacingOccurrences(of: "NAMESPACE", with: namespace).replacingOccurrences(
                of: "DIR", with: directory.path))
    }

    /// The entries of `job`'s events stream (leadership transitions), oldest first.
    public func events(_ job: String) async throws -> [[String: String]] {
        try await streamEntries(keys.events(job))
    }

    /// The current holder of `job`'s lease.
    public func holder(_ job: String) async throws -> LeaseValue? {
        try await redis.lease(job, keys: keys)
    }

    /// The run starts of `job`, oldest first (entries without `type`, from older versions, are starts).
    public func runs(_ job: String) async throws -> [RunRecord] {
        try await allRunEntries(job).filter { $0.type == "started" }
    }

    /// Every entry of `job`'s runs stream (starts and `finished` records), oldest first.
    public func allRunEntries(_ job: String) async throws -> [RunRecord] {
        try await streamEntries(keys.runs(job)).map(RunRecord.init(fields:))
    }

    /// The fields of `job`'s state hash.
    public func state(_ job: String) async throws -> [String: String] {
        Self.fields(try await redis.command("HGETALL", keys.state(job)).array ?? [])
    }

    private func streamEntries(_ key: String) async throws -> [[String: String]] {
        let reply = try await redis.command("XRANGE", key, "-", "+")
        return (reply.array ?? []).compactMap { entry in
            guard let parts = entry.array, parts.count == 2, let flat = parts[1].array else { return nil }
            return Self.fields(flat)
        }
    }

    /// A flat field/value list (HGETALL, a stream entry) as a dictionary.
    private static func fields(_ flat: [RedisReply]) -> [String: String] {
        var fields: [String: String] = [:]
        var index = 0
        while index + 1 < flat.count {
            if let key = flat[index].string { fields[key] = flat[index + 1].string ?? "" }
            index += 2
        }
        return fields
    }
}

/// One entry of `{ns}:{job}:runs`.
public struct RunRecord: Sendable, CustomStringConvertible {
    /// Every field of the entry.
    public var fields: [String: String]
    /// The scheduled slot (ms since the epoch).
    public var slot: Int64? { fields["slot"].flatMap { Int64($0) } }
    /// The fencing token of the run.
    public var token: UInt64? { fields["token"].flatMap { UInt64($0) } }
    /// The member that ran it.
    public var member: String? { fields["member"] }
    /// When it started (ms since the epoch).
    public var started: Int64? { fields["started"].flatMap { Int64($0) } }
    /// `started` or `finished` (an entry without `type`, from an older version, is a start).
    public var type: String { fields["type"] ?? "started" }
    /// The try number (1 for a first try).
    public var attempt: Int { fields["attempt"].flatMap { Int($0) } ?? 1 }
    /// Why it ran: schedule, retry or manual.
    public var trigger: String { fields["trigger"] ?? "schedule" }
    /// How a finished run ended (nil for a start).
    public var result: String? { fields["result"] }
    /// One line for failure messages.
    public var description: String {
        "slot=\(fields["slot"] ?? "-") token=\(fields["token"] ?? "-") member=\(member ?? "-") started=\(fields["started"] ?? "-")"
    }
}
