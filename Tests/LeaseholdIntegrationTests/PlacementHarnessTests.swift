import LeaseholdTesting
import Logging
import RedisClient
import Synchronization
import Testing

@testable import Leasehold

// Harness for the placement tests: in-process members (one LeaseManager each) against a
// private redis-server, reacting to `handoffSuggested` as the daemon does, each leader
// writing its token to a fenced resource so two valid leaders would be caught.

/// Lease timing of the placement tests: the daemon's defaults scaled down (stability = lease,
/// standby delay = renew interval), with a lease long enough that a heavily loaded CI box
/// does not make leaders step down.
enum PlacementTiming {
    static let ttl: Duration = .seconds(3)
    static var timing: LeaseTiming { LeaseTiming(ttl: ttl) }
    static var standbyDelay: Duration { timing.renewEvery }
    static var stability: Duration { ttl }
    static var placement: LeasePlacement { .spread(standbyDelay: standbyDelay, stability: stability) }

    static func jobs(_ count: Int, prefix: String = "job") -> [LeaseJob] {
        (0..<count).map { LeaseJob(name: "\(prefix)-\($0)", timing: timing, placement: placement) }
    }
}

/// Everything the members saw, in order, with the local time it was seen.
final class PlacementRecorder: Sendable {
    struct Acquisition: Sendable {
        var at: ContinuousClock.Instant
        var member: String
        var job: String
        var token: UInt64
        var takeover: TakeoverKind
        var gapMs: Int64?
    }

    struct Rejection: Sendable {
        var member: String
        var job: String
        var token: UInt64
        /// The writer still held a valid grant with this token after the reply: split brain.
        var stillValid: Bool
    }

    private struct State {
        var acquisitions: [Acquisition] = []
        var handoffs: [(at: ContinuousClock.Instant, member: String, job: String, to: String?)] = []
        var losses: [(member: String, job: String, reason: LossReason)] = []
        var duplicates: [(member: String, incarnation: String)] = []
        var rejections: [Rejection] = []
        var acceptedWrites = 0
        var timeline: [String] = []
    }

    private let state = Mutex(State())

    func acquired(_ value: Acquisition) { state.withLock { $0.acquisitions.append(value) } }
    func handoff(member: String, job: String, to: String?) {
        state.withLock { $0.handoffs.append((.now, member, job, to)) }
    }
    func lost(member: String, job: String, reason: LossReason) {
        state.withLock { $0.losses.append((member, job, reason)) }
    }
    func duplicate(member: String, incarnation: String) {
        state.withLock { $0.duplicates.append((member, incarnation)) }
    }
    func rejected(_ value: Rejection) { state.withLock { $0.rejections.append(value) } }
    func accepted() { state.withLock { $0.acceptedWrites += 1 } }
    private let origin = ContinuousClock.now
    /// A line of the event timeline, printed when a test fails to explain what happened.
    func note(_ member: String, _ text: String) {
        let at = ContinuousClock.now - origin
        state.withLock { $0.timeline.append("\(at.wholeMilliseconds)ms \(member): \(text)") }
    }
    var timeline: [String] { state.withLock { $0.timeline } }

    var acquisitions: [Acquisition] { state.withLock { $0.acquisitions } }
    var handoffCount: Int { state.withLock { $0.handoffs.count } }
    var handoffs: [(member: String, job: String, to: String?)] {
        state.withLock { $0.handoffs.map { ($0.member, $0.job, $0.to) } }
    }
    var losses: [(member: String, job: String, reason: LossReason)] { state.withLock { $0.losses } }
    var duplicates: [(member: String, incarnation: String)] { state.withLock { $0.duplicates } }
    var rejections: [Rejection] { state.withLock { $0.rejections } }
    var acceptedWrites: Int { state.withLock { $0.acceptedWrites } }

    /// Acquisitions recorded after index `start`.
    func acquisitions(since start: Int) -> [Acquisition] {
        state.withLock { Array($0.acquisitions.dropFirst(start)) }
    }
}

/// The downstream store of the fencing check: accepts a write only if its token is not lower
/// than the highest accepted so far, logs each change of accepted token with its writer.
enum FencedResource {
    static let write = RedisScript(
        #"""
        local cur = redis.call('GET', KEYS[1])
        local tok = tonumber(ARGV[1])
        if cur and tonumber(cur) > tok then
          redis.call('INCR', KEYS[3])
          return 0
        end
        if cur ~= ARGV[1] then
          redis.call('SET', KEYS[1], ARGV[1])
          redis.call('RPUSH', KEYS[2], ARGV[1] .. ' ' .. ARGV[2])
        end
        return 1
        """#)

    static func keys(_ job: String) -> [String] {
        ["fenced:{\(job)}:max", "fenced:{\(job)}:log", "fenced:{\(job)}:rejected"]
    }

    /// Checks every job's log: accepted tokens strictly increase from one writer to the next,
    /// and a token is only ever written by one member. Returns the problems found.
    static func audit(jobs: [String], server: RedisServerProcess) async throws -> [String] {
        var problems: [String] = []
        for job in jobs {
            let entries = try await server.command("LRANGE", keys(job)[1], "0", "-1").array ?? []
            var previous: UInt64 = 0
            var writerOf: [UInt64: String] = [:]
            for entry in entries {
                let parts = (entry.string ?? "").split(separator: " ").map(String.init)
                guard parts.count == 2, let token = UInt64(parts[0]) else {
                    problems.append("\(job): bad log entry \(entry)")
                    continue
                }
                if token <= previous { problems.append("\(job): accepted token \(token) after \(previous)") }
                if let other = writerOf[token], other != parts[1] {
                    problems.append("\(job): token \(token) written by \(other) and \(parts[1])")
                }
                writerOf[token] = parts[1]
                previous = max(previous, token)
            }
        }
        return problems
    }
}

/// The placement tests' members: `TestMember`s that record what they see and, while they
/// lead, fence a write with every valid grant they hold, so two valid leaders would be caught.
enum PlacementMember {
    /// The Redis settings of every placement member.
    static func redis(_ server: RedisServerProcess) -> RedisConfiguration {
        server.configuration(commandTimeout: .milliseconds(500), connectTimeout: .milliseconds(500))
    }

    /// Options for member `name`: the recorder hooks and the fenced writer as its work.
    static func options(
        _ name: String, weight: Double = 1, incarnation: String? = nil, server: RedisServerProcess,
        recorder: PlacementRecorder
    ) -> TestMember.Options {
        // Tokens this member has stopped working with (handed off): never written again.
        let stopped = StoppedTokens()
        var logger = Logger(label: "placement-test.\(name)")
        logger.logLevel = .warning
        return TestMember.Options(
            weight: weight, incarnation: incarnation, seed: UInt64(name.utf8.count), shutdownTimeout: .seconds(5),
            logger: logger,
            onEvent: { member, event in
                recorder.note(name, "\(event)")
                switch event {
                case .acquired(let grant, let takeover, let gap):
                    recorder.acquired(
                        .init(
                            at: .now, member: name, job: grant.job, token: grant.token, takeover: takeover, gapMs: gap))
                case .handoffSuggested(let job, let to):
                    recorder.handoff(member: name, job: job, to: to)
                    // The daemon stops the job at a safe point, then releases (the member
                    // does that next): here the work is the writer, which skips the token.
                    if let grant = member.manager.grant(for: job) { stopped.insert(grant.token) }
                case .lost(let job, _, let reason):
                    recorder.lost(member: name, job: job, reason: reason)
                case .duplicateMember(let incarnation):
                    recorder.duplicate(member: name, incarnation: incarnation)
                case .released, .redisAvailability, .membersChanged, .control:
                    break
                }
            },
            work: { member in await writeLoop(member, server: server, recorder: recorder, stopped: stopped) })
    }

    private static func writeLoop(
        _ member: TestMember, server: RedisServerProcess, recorder: PlacementRecorder, stopped: StoppedTokens
    ) async {
        let connection = RedisConnection(configuration: server.configuration(commandTimeout: .seconds(1)))
        while !Task.isCancelled {
            for grant in member.manager.currentGrants where !stopped.contains(grant.token) {
                if Task.isCancelled { break }
                guard
                    let reply = try? await connection.evaluate(
                        FencedResource.write, keys: FencedResource.keys(grant.job),
                        arguments: [String(grant.token), member.name])
                else { continue }
                if reply.integer == 1 {
                    recorder.accepted()
                } else {
                    // Rejected: a higher token was accepted. Only a problem if this member
                    // still counts itself leader with this token now, after the reply.
                    let stillValid =
                        member.manager.grant(for: grant.job)?.token == grant.token && !stopped.contains(grant.token)
                    recorder.rejected(
                        .init(member: member.name, job: grant.job, token: grant.token, stillValid: stillValid))
                }
            }
            try? await Task.sleep(for: .milliseconds(150))
        }
        await connection.close()
    }
}

/// The tokens a placement member no longer writes with.
final class StoppedTokens: Sendable {
    private let tokens = Mutex<Set<UInt64>>([])
    func insert(_ token: UInt64) { _ = tokens.withLock { $0.insert(token) } }
    func contains(_ token: UInt64) -> Bool { tokens.withLock { $0.contains(token) } }
}

enum PlacementHarness {
    /// The holder (member name) of each job's lease.
    static func leaseHolders(_ jobs: [String], server: RedisServerProcess) async throws -> [String: String] {
        try await server.leases(jobs).mapValues(\.owner.member)
    }

    /// Waits until every job's lease is held by its rendezvous choice among `members`, and
    /// the holders' `acquired` events have reached the recorder (so later counts start clean).
    @discardableResult
    static func waitForConvergence(
        _ jobs: [String], members: [RendezvousMember], server: RedisServerProcess, recorder: PlacementRecorder,
        within limit: Duration
    ) async throws -> [String: String] {
        let expected = Rendezvous.assignment(jobs: jobs, members: members)
        var last: [String: String] = [:]
        do {
            return try await eventually("leadership to converge on \(members.map(\.name))", within: limit) {
                let leases = try await server.leases(jobs)
                last = leases.mapValues(\.owner.member)
                guard last == expected else { return nil }
                let seen = Set(recorder.acquisitions.map { "\($0.job) \($0.token)" })
                return leases.allSatisfy { seen.contains("\($0.key) \($0.value.token)") } ? last : nil
            }
        } catch {
            let wrong = jobs.filter { last[$0] != expected[$0] }.map {
                "\($0): \(last[$0] ?? "none") want \(expected[$0] ?? "none")"
            }
            throw TestSupportError("\(error); still wrong: \(wrong)")
        }
    }

    /// Count of jobs per member in an assignment.
    static func shares(_ assignment: [String: String]) -> [String: Int] {
        assignment.values.reduce(into: [:]) { $0[$1, default: 0] += 1 }
    }
}
