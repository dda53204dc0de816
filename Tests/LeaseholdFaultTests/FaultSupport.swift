import Foundation
import Leasehold
import LeaseholdTesting
import RedisClient
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

// Support for the multi-process fault suite (FaultSuiteTests.swift, Docs/TESTING.md, "Multi-process fault suite").
//
// Topology:
//   leaseholdd ×3 ──► FaultProxy (one each) ──► lease redis (AOF, appendfsync always; faults hit it)
//   shell handlers (redis-cli) ─────► resource redis (never faulted: the downstream store)
//   the test (monitor, checker, fault commands) ──► both servers directly, never via the proxy
// The resource lives in its own server on purpose: a partitioned or paused leader's handler
// can still reach the downstream store, which is exactly when fencing has to hold.

// MARK: - Profile and seed

enum FaultProfile {
    static var environment: [String: String] { ProcessInfo.processInfo.environment }
    /// Seconds of fault injection: `LEASEHOLD_FAULT_SECONDS`, default 60 (the CI profile).
    static var seconds: Int { environment["LEASEHOLD_FAULT_SECONDS"].flatMap(Int.init) ?? 60 }
    /// The schedule's seed: `LEASEHOLD_FAULT_SEED` to replay, else random (printed).
    static let seed: UInt64 =
        environment["LEASEHOLD_FAULT_SEED"].flatMap { UInt64($0) } ?? UInt64.random(in: 1...999_999_999)
    /// Restricts the faults to a comma-separated list of kinds (`LEASEHOLD_FAULT_KINDS=kill-9,sigstop`).
    static var kinds: [FaultKind] {
        guard let list = environment["LEASEHOLD_FAULT_KINDS"], !list.isEmpty else { return FaultKind.allCases }
        return list.split(separator: ",").compactMap {
            FaultKind(rawValue: String($0).trimmingCharacters(in: .whitespaces))
        }
    }
    /// Quiet period after the last fault, during which liveness is asserted.
    static let quiet: Duration = .seconds(15)
    /// The test's time limit: fault time, plus one extra round of faults, plus setup and quiet.
    static var timeLimitMinutes: Int { max(4, (seconds + 240) / 60 + 1) }
}

/// A fault schedule replays from its seed.
typealias SeededRNG = SplitMix64

// MARK: - Faults

enum FaultKind: String, CaseIterable, Sendable {
    case kill9 = "kill-9"
    case sigstop = "sigstop"
    case vmPause = "vm-pause"
    case sigterm = "sigterm"
    case redisRestartNoPersistence = "redis-restart-no-persistence"
    case redisRestartAOF = "redis-restart-aof"
    case clientPause = "client-pause"
    case proxyDelay = "proxy-delay"
    case proxyDrop = "proxy-drop"
    case proxyBlackHole = "proxy-black-hole"
    case wrongPassword = "wrong-password"
}

/// One injected fault; times are wall-clock µs (the clock Redis `TIME` reads on this host).
struct FaultRecord: Sendable, CustomStringConvertible {
    var kind: FaultKind
    var detail: String
    var startedUs: Int64
    var endedUs: Int64
    /// The member the fault hit, if it hit one.
    var member: String? = nil
    var description: String { "\(kind.rawValue) \(detail) [\(startedUs)–\(endedUs)]" }
}

/// Progress lines go to stderr, unbuffered, so a long run can be followed (`tail -f`).
func faultLog(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

/// Every live descendant of `pid` (children first found through /proc/*/stat).
func descendants(of pid: Int32) -> [Int32] {
    var children: [Int32: [Int32]] = [:]
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    for entry in entries {
        guard let child = Int32(entry),
            let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { continue }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 1, let parent = Int32(fields[1]) else { continue }
        children[parent, default: []].append(child)
    }
    var result: [Int32] = []
    var queue = children[pid] ?? []
    while let next = queue.popLast() {
        result.append(next)
        queue += children[next] ?? []
    }
    return result
}

/// The parent pid of `pid`, from /proc (nil if it is gone).
func parentPID(of pid: Int32) -> Int32? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return nil }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    return fields.count > 1 ? Int32(fields[1]) : nil
}

/// The owner id (`member@incarnation`) a member logged at start, nil before that line.
func ownerID(_ process: DaemonProcess) -> String? {
    process.lines.first { $0.message == "member starting" }?.fields?["instance"]
}

/// Wall-clock microseconds since the epoch (same clock as Redis `TIME` on this host).
func wallMicros() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000
}

/// Parses the daemon's JSON `time` field (ISO 8601 with milliseconds) into wall-clock µs.
func logTimeMicros(_ line: DaemonLogLine) -> Int64? {
    guard let text = line.fields?["time"],
        let date = try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    else { return nil }
    return Int64((date.timeIntervalSince1970 * 1_000_000).rounded())
}

// MARK: - The fenced resource

enum FencedResource {
    /// The writes `resource` recorded for `job`, accepted and rejected, in order.
    static func writes(_ job: String, on resource: RedisServerProcess) async throws -> (
        accepted: [Write], rejected: [Write]
    ) {
        let keys = keys(job)
        let accepted = try await resource.command("LRANGE", keys.accepted, "0", "-1").array ?? []
        let rejected = try await resource.command("LRANGE", keys.rejected, "0", "-1").array ?? []
        return (
            accepted.compactMap { $0.string.flatMap { Write(job: job, entry: $0) } },
            rejected.compactMap { $0.string.flatMap { Write(job: job, entry: $0) } }
        )
    }

    /// KEYS: high, accepted, rejected. ARGV: token, member, instance.
    /// Accepts a token not lower than the highest accepted so far (equal: a retry within one
    /// leadership); records every write with the resource's own `TIME` (µs).
    static let lua = """
        local t = redis.call('TIME')
        local now = string.format('%d', tonumber(t[1]) * 1000000 + tonumber(t[2]))
        local token = tonumber(ARGV[1])
        local high = tonumber(redis.call('GET', KEYS[1]) or '0')
        local entry = ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. now
        if token < high then
          redis.call('RPUSH', KEYS[3], entry .. ' ' .. string.format('%d', high))
          return 0
        end
        redis.call('SET', KEYS[1], ARGV[1])
        redis.call('RPUSH', KEYS[2], entry)
        return 1
        """

    static func keys(_ job: String) -> (high: String, accepted: String, rejected: String) {
        ("res:{\(job)}:high", "res:{\(job)}:accepted", "res:{\(job)}:rejected")
    }

    /// `write.sh [loop]`: one fenced write, or a write every 200 ms until killed.
    static func script(directory: String, port: Int) -> String {
        """
        #!/bin/sh
        LUA=$(cat \(directory)/fence.lua)
        write() {
          redis-cli -h 127.0.0.1 -p \(port) EVAL "$LUA" 3 "res:{$LEASEHOLD_JOB}:high" "res:{$LEASEHOLD_JOB}:accepted" \\
            "res:{$LEASEHOLD_JOB}:rejected" "$LEASEHOLD_FENCING_TOKEN" "$LEASEHOLD_MEMBER" "$LEASEHOLD_INSTANCE" >/dev/null
        }
        if [ "$1" = loop ]; then
          while :; do write; sleep 0.2; done
        else
          write
        fi
        """
    }

    struct Write: Sendable, CustomStringConvertible {
        var job: String
        var token: UInt64
        var member: String
        var instance: String
        var atUs: Int64
        var highSeen: UInt64?  // rejected writes only
        var description: String {
            "\(job) token=\(token) by \(instance) at \(atUs)" + (highSeen.map { " (high \($0))" } ?? "")
        }

        init?(job: String, entry: String) {
            let parts = entry.split(separator: " ").map(String.init)
            guard parts.count >= 4, let token = UInt64(parts[0]), let at = Int64(parts[3]) else { return nil }
            self.job = job
            self.token = token
            member = parts[1]
            instance = parts[2]
            atUs = at
            highSeen = parts.count >= 5 ? UInt64(parts[4]) : nil
        }
    }
}

// MARK: - The fleet

/// Three (or more) `leaseholdd` members behind a ``FaultProxy`` on a private lease Redis, a
/// separate resource Redis, and the records the checker needs.
final class FaultFleet: Sendable {
    static let ttl: Duration = .seconds(2)
    static let renewEvery: Duration = .milliseconds(500)
    static let jobs = ["c1", "c2", "e1", "e2"]

    /// The members, their lease Redis and per-member proxies.
    let fleet: DaemonFleet
    /// The store the jobs write to with their fencing tokens.
    let resource: RedisServerProcess
    let memberNames: [String]
    var leaseRedis: RedisServerProcess { fleet.redis }
    /// One proxy per member name, so a fault can cut one member off (a partitioned leader)
    /// or all of them (the lease store unreachable).
    var proxies: [String: FaultProxy] { fleet.proxies }
    var directory: TempDirectory { fleet.directory }
    var namespace: String { fleet.namespace }
    var keys: LeaseKeys { fleet.keys }
    var catalogPath: String { fleet.catalogPath }

    private struct State {
        var current: [String: DaemonProcess] = [:]
        var all: [DaemonProcess] = []
        /// Processes the test ended on purpose (pid → expected exit code).
        var ended: [Int32: Int32] = [:]
        /// Exited processes already checked.
        var checked: Set<Int32> = []
        var faults: [FaultRecord] = []
        var violations: [String] = []
        var notes: [String] = []
        var leasePassword: String?
    }
    private let state = Mutex(State())

    init(members: [String] = ["m1", "m2", "m3"]) async throws {
        // The lease store runs with AOF (appendfsync always): a restart keeps leases and fences.
        // A restart "without persistence" is a crash plus deleting the AOF, which is what a
        // restart of a server with no persistence amounts to (everything gone).
        let catalog = """
            version: 1
            redis: { namespace: NAMESPACE }
            defaults: { lease: 2s, renew_every: 500ms, placement: spread }
            jobs:
              - name: c1
                handler: shell
                schedule: continuous
                config: { command: ["sh", "DIR/write.sh", "loop"], kill_grace: 300ms }
              - name: c2
                handler: shell
                schedule: continuous
                config: { command: ["sh", "DIR/write.sh", "loop"], kill_grace: 300ms }
              - name: e1
                handler: shell
                schedule: { every: 1s }
                config: { command: ["sh", "DIR/write.sh"], kill_grace: 300ms }
              - name: e2
                handler: shell
                schedule: { every: 1s }
                placement: any
                config: { command: ["sh", "DIR/write.sh"], kill_grace: 300ms }
            """
        fleet = try await DaemonFleet(
            catalog: catalog, redis: .init(persistence: .appendOnly(fsyncAlways: true)), proxied: true)
        resource = try await RedisServerProcess()
        memberNames = members
        for name in members { _ = try fleet.proxy(name) }
        try fleet.directory.write("fence.lua", FencedResource.lua)
        try fleet.directory.write(
            "write.sh", FencedResource.script(directory: fleet.directory.path, port: resource.port))
        for name in members { try start(name) }
    }

    // MARK: Members

    /// Sets the mode of every member's proxy, or of `member`'s only.
    func setProxies(_ mode: FaultProxy.Mode, only member: String? = nil) {
        for (name, proxy) in proxies where member == nil || member == name { proxy.set(mode) }
    }

    /// Starts (or restarts) member `name`, talking to Redis through its proxy.
    @discardableResult
    func start(_ name: String) throws -> DaemonProcess {
        let process = try fleet.start(name)
        state.withLock {
            $0.current[name] = process
            $0.all.append(process)
        }
        return process
    }

    func current(_ name: String) -> DaemonProcess? { state.withLock { $0.current[name] } }
    var currentMembers: [DaemonProcess] { state.withLock { Array($0.current.values) } }
    var allProcesses: [DaemonProcess] { state.withLock { $0.all } }

    /// Marks a process as ended by the test, with the exit code it must have.
    func expectEnd(_ process: DaemonProcess, code: Int32) {
        state.withLock {
            $0.ended[process.pid] = code
            if $0.current[process.name] === process { $0.current[process.name] = nil }
        }
    }

    /// Every process the test did not end must still run; every process it ended must have
    /// exited with the expected code. Records violations (once per process); returns their count.
    @discardableResult
    func checkProcesses(_ when: String) async -> Int {
        var found = 0
        for process in allProcesses where !process.isRunning {
            let (expected, seen) = state.withLock { ($0.ended[process.pid], $0.checked.contains(process.pid)) }
            if seen { continue }
            state.withLock { _ = $0.checked.insert(process.pid) }
            let code = (try? await process.waitForExit(within: .seconds(1))) ?? -1
            if let expected {
                if code != expected {
                    violation(
                        "\(process.name) (pid \(process.pid)) exited \(code), expected \(expected) [\(when)]\n\(process.logTail(30))"
                    )
                    found += 1
                }
            } else {
                violation(
                    "\(process.name) (pid \(process.pid)) died on its own with \(code) [\(when)]\n\(process.logTail(40))"
                )
                found += 1
            }
        }
        return found
    }

    // MARK: Records

    func record(_ fault: FaultRecord) { state.withLock { $0.faults.append(fault) } }
    var faults: [FaultRecord] { state.withLock { $0.faults } }
    func violation(_ text: String) {
        faultLog("FAULT SUITE VIOLATION: \(text)")
        state.withLock { $0.violations.append(text) }
    }
    var violations: [String] { state.withLock { $0.violations } }
    func note(_ text: String) { state.withLock { $0.notes.append(text) } }
    var notes: [String] { state.withLock { $0.notes } }

    var leasePassword: String? {
        get { state.withLock { $0.leasePassword } }
        set { state.withLock { $0.leasePassword = newValue } }
    }

    // MARK: Direct Redis access (never through the proxy)

    /// One command on a fresh connection to the lease Redis, with the password it has now.
    func leaseCommand(_ arguments: [String], timeout: Duration = .seconds(2)) async throws -> RedisReply {
        let endpoint = RedisEndpoint(address: .tcp(host: "127.0.0.1", port: leaseRedis.port), password: leasePassword)
        let connection = RedisConnection(
            configuration: RedisConfiguration(endpoint: endpoint, connectTimeout: timeout, commandTimeout: timeout))
        defer { Task { await connection.close() } }
        return try await connection.send(arguments)
    }

    /// Every job's lease value (nil: no lease), read with one MGET.
    func leaseValues() async throws -> [String: LeaseValue?] { try await leaseValues(timeout: .seconds(2)) }

    /// The writes the resource recorded for `job`.
    func writes(_ job: String) async throws -> (accepted: [FencedResource.Write], rejected: [FencedResource.Write]) {
        try await FencedResource.writes(job, on: resource)
    }

    /// Which owner ids (`member@incarnation`) lead which jobs now (empty if Redis cannot be
    /// read). Keyed by owner, not name: a killed incarnation's leases outlive it by up to a TTL.
    func leaders() async -> [String: [String]] {
        guard let values = try? await leaseValues() else { return [:] }
        var result: [String: [String]] = [:]
        for (job, holder) in values { if let holder { result[holder.owner.description, default: []].append(job) } }
        return result
    }

    /// The jobs `process` (this incarnation) leads now.
    func leads(_ process: DaemonProcess) async -> [String] {
        guard let owner = ownerID(process) else { return [] }
        return await leaders()[owner] ?? []
    }
}

// MARK: - Leaderless-gap monitor

/// Polls every job's lease key on the lease Redis (directly, not through the proxy) and
/// records the intervals during which a job had no lease.
final class LeaseMonitor: Sendable {
    struct Gap: Sendable {
        var job: String
        var start: ContinuousClock.Instant
        var end: ContinuousClock.Instant?
    }
    private struct State {
        var open: [String: ContinuousClock.Instant] = [:]
        var gaps: [Gap] = []
        var samples = 0
        var unreadable = 0
        var stopped = false
    }
    private let state = Mutex(State())
    static let interval: Duration = .milliseconds(100)

    func run(_ fleet: FaultFleet) async {
        while !state.withLock({ $0.stopped }) {
            let now = ContinuousClock.now
            if let values = try? await fleet.leaseValues(timeout: .seconds(1)) {
                state.withLock { state in
                    state.samples += 1
                    for (job, holder) in values {
                        if holder == nil {
                            if state.open[job] == nil { state.open[job] = now }
                        } else if let start = state.open.removeValue(forKey: job) {
                            state.gaps.append(Gap(job: job, start: start, end: now))
                        }
                    }
                }
            } else {
                // Redis unreadable (down, paused, password): an open gap stays open, none starts.
                state.withLock { $0.unreadable += 1 }
            }
            try? await Task.sleep(for: Self.interval)
        }
    }

    func stop() { state.withLock { $0.stopped = true } }

    /// Every gap so far, open ones ending now.
    var gaps: [Gap] {
        let now = ContinuousClock.now
        return state.withLock { state in
            state.gaps + state.open.map { Gap(job: $0.key, start: $0.value, end: now) }
        }
    }
    var samples: (read: Int, unreadable: Int) { state.withLock { ($0.samples, $0.unreadable) } }

    /// The longest gap overlapping `[from, now]`, counted from `from` at the earliest.
    func longestGap(since from: ContinuousClock.Instant? = nil) -> (job: String, length: Duration)? {
        gaps.compactMap { gap -> (String, Duration)? in
            let end = gap.end ?? .now
            let start = from.map { max($0, gap.start) } ?? gap.start
            return end > start ? (gap.job, end - start) : nil
        }.max { $0.1 < $1.1 }
    }
}

extension FaultFleet {
    func leaseValues(timeout: Duration) async throws -> [String: LeaseValue?] {
        let reply = try await leaseCommand(["MGET"] + Self.jobs.map { keys.lease($0) }, timeout: timeout)
        guard let values = reply.array, values.count == Self.jobs.count else {
            throw TestSupportError("unexpected MGET reply \(reply)")
        }
        var result: [String: LeaseValue?] = [:]
        for (job, value) in zip(Self.jobs, values) { result[job] = value.string.flatMap(LeaseValue.init(parsing:)) }
        return result
    }
}
