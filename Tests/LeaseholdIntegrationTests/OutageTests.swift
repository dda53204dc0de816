import Foundation
import Leasehold
import LeaseholdTesting
import Logging
import RedisClient
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

// Redis outages end to end: a real redis-server that the tests kill, restart, pause
// (`CLIENT PAUSE`) and put to sleep (`DEBUG SLEEP`), against in-process LeaseManagers with a
// 2 s lease. What must hold (Docs/PROTOCOL.md §5 timing, §7 edge cases):
// - a leader stops at validity − grace on its own clock, measured from the send time of its
//   last successful renewal, and certainly before the lease can expire in Redis;
// - nobody crashes, retries are capped (no hot loop), Redis up/down is reported once per change;
// - once Redis is back, the job is led again within about one TTL plus a renew interval;
// - fencing tokens only grow, even when a restart lost the fence counter.
//
// The machine is shared and loaded: every wait polls a condition under a generous deadline;
// the only tolerances that are tight are the safety ones, and they are named below.

/// Lease timing used throughout: TTL 2 s, so renew every 667 ms, validity 1 960 ms,
/// step-down 1 760 ms after the send of the last successful renewal.
private let outageTiming = LeaseTiming(ttl: .seconds(2))

/// How late the step-down event may be reported after the computed step-down instant. It must
/// stay below `ttl − stepDownWindow` (240 ms) for the "before the TTL" guarantee to be tested;
/// the engine's timer fires on time, this covers task scheduling on a loaded machine.
private let stepDownTolerance: Duration = .milliseconds(230)

/// The grant with the latest step-down instant each member was seen to hold, per job: sampled
/// every 5 ms and at every acquisition, so the test knows the send time of the last successful
/// renewal.
private final class GrantSamples: Sendable {
    private let latest = Mutex<[String: [String: LeaseGrant]]>([:])

    func note(_ member: String, _ grant: LeaseGrant) {
        latest.withLock { latest in
            if let known = latest[member]?[grant.job], known.token == grant.token, known.stepDownAt >= grant.stepDownAt
            {
                return
            }
            latest[member, default: [:]][grant.job] = grant
        }
    }

    func last(_ member: String, _ job: String) -> LeaseGrant? { latest.withLock { $0[member]?[job] } }
}

/// The Redis settings of these tests' members: the call timeout the daemon derives.
private func outageRedis(_ endpoint: RedisEndpoint, jobs: [String]) -> (RedisConfiguration, [LeaseJob]) {
    let leaseJobs = jobs.map { LeaseJob(name: $0, timing: outageTiming, placement: .any) }
    let callTimeout = LeaseTiming.callTimeout(for: leaseJobs)
    return (RedisConfiguration(endpoint: endpoint, connectTimeout: callTimeout, commandTimeout: callTimeout), leaseJobs)
}

/// A member of these tests: a random seed, and the grant sampler as its work.
private func outageOptions(_ name: String, namespace: String, samples: GrantSamples) -> TestMember.Options {
    TestMember.Options(
        keys: LeaseKeys(namespace: namespace), seed: UInt64.random(in: .min ... .max), shutdownTimeout: .seconds(3),
        logger: Logger(label: "outage.\(name)"),
        onEvent: { member, event in
            if case .acquired(let grant, _, _) = event { samples.note(member.name, grant) }
        },
        work: { member in
            while !Task.isCancelled {
                for job in member.manager.jobs {
                    if let grant = member.manager.grant(for: job.name) { samples.note(member.name, grant) }
                }
                try? await Task.sleep(for: .milliseconds(5))
            }
        })
}

extension TestMember {
    fileprivate func acquisitions(_ job: String, after: ContinuousClock.Instant = .now - .seconds(3600)) -> [(
        at: ContinuousClock.Instant, grant: LeaseGrant
    )] {
        log.acquisitions.filter { $0.grant.job == job && $0.at >= after }.map { ($0.at, $0.grant) }
    }

    fileprivate func losses(_ job: String) -> [(at: ContinuousClock.Instant, token: UInt64, reason: LossReason)] {
        log.losses.filter { $0.job == job }.map { ($0.at, $0.token, $0.reason) }
    }

    fileprivate var availabilityChanges: [Bool] { log.availability.map(\.up) }
}

/// Who leads `job` right now, by grant snapshot.
private func leaders(_ members: [TestMember], _ job: String) -> [TestMember] {
    members.filter { $0.manager.grant(for: job) != nil }
}

/// Figures printed by the tests (grep the test output for "outage:").
private func report(_ line: String) { print("outage: \(line)") }

@Suite("Redis outages end to end", .serialized, .timeLimit(.minutes(3)))
struct OutageTests {
    /// Checks the step-down of `leader` for `job` against the validity formula and returns the
    /// step-down delay after `outageStart`.
    @discardableResult
    private func checkStepDown(
        _ leader: TestMember, job: String, token: UInt64, outageStart: ContinuousClock.Instant, label: String,
        samples: GrantSamples
    ) -> Duration? {
        guard let loss = leader.losses(job).first(where: { $0.token == token }) else {
            Issue.record("\(label): \(leader.name) never reported losing token \(token)")
            return nil
        }
        guard let grant = samples.last(leader.name, job), grant.token == token else {
            Issue.record("\(label): no grant sample for token \(token)")
            return nil
        }
        let sentAt = grant.validUntil - outageTiming.validityWindow
        let formula = sentAt + outageTiming.ttl * (1 - outageTiming.drift) - outageTiming.margin - outageTiming.grace
        #expect(
            loss.reason == .steppedDown, "\(label): expected a step-down on the member's own clock, got \(loss.reason)")
        // Not early: the member may lead until validity − grace of its last successful renewal.
        #expect(
            loss.at >= formula - .milliseconds(5), "\(label): stepped down \(milliseconds(formula - loss.at)) ms early")
        // On time: the step-down timer does not wait for the hung or failing call.
        #expect(
            loss.at <= formula + stepDownTolerance,
            "\(label): stepped down \(milliseconds(loss.at - formula)) ms after validity − grace")
        // And certainly before the lease can expire in Redis (it was renewed at or after sentAt).
        #expect(
            loss.at < sentAt + outageTiming.ttl,
            "\(label): still leading \(milliseconds(loss.at - sentAt)) ms after the last renewal was sent")
        #expect(loss.at >= outageStart, "\(label): lost before the outage began")
        report(
            "\(label): step-down \(Int(milliseconds(loss.at - outageStart))) ms after the outage began, "
                + "\(Int(milliseconds(loss.at - sentAt))) ms after the last successful renewal was sent "
                + "(formula \(Int(milliseconds(formula - sentAt))) ms, late by \(Int(milliseconds(loss.at - formula))) ms; TTL \(Int(milliseconds(outageTiming.ttl))) ms)"
        )
        return loss.at - outageStart
    }

    /// Runs `body` with two members on one job, once a leader has renewed at least twice; then
    /// checks that every member stops within a bound (a graceful stop that hangs is a bug).
    private func withPair(
        _ redis: RedisServerProcess, job: String, namespace: String,
        _ body: (_ members: [TestMember], _ leader: TestMember, _ token: UInt64, _ samples: GrantSamples) async throws
            -> Void
    ) async throws {
        let samples = GrantSamples()
        let (configuration, jobs) = outageRedis(redis.endpoint, jobs: [job])
        try await withMembers(
            ["m1", "m2"], redis: configuration, jobs: jobs,
            options: { outageOptions($0, namespace: namespace, samples: samples) }
        ) {
            members in
            try await eventually("a leader for \(job)", within: .seconds(20)) { leaders(members, job).count == 1 }
            let leader = leaders(members, job)[0]
            let token = try #require(leader.manager.grant(for: job)?.token)
            // Let a few renewals go through, so the step-down is measured from a renewal.
            try await eventually("the leader renews", within: .seconds(10)) {
                guard let grant = samples.last(leader.name, job), grant.token == token,
                    let first = leader.acquisitions(job).first(where: { $0.grant.token == token })
                else { return false }
                return grant.validUntil > first.grant.validUntil + outageTiming.renewEvery
            }
            try await body(members, leader, token, samples)
            for member in members {
                let stopped = await finishes(within: .seconds(15)) { await member.stop() }
                #expect(stopped, "member \(member.name) did not stop within 15 s")
            }
        }
    }

    @Test(
        "Redis killed: the leader steps down at validity − grace, nobody leads, the job is led again after the restart with a higher token (fence lost)"
    )
    func redisKilledAndRestarted() async throws {
        let redis = try await RedisServerProcess()
        let job = "outage-kill"
        let namespace = "outage-\(UInt32.random(in: 0 ... .max))"
        try await withPair(redis, job: job, namespace: namespace) { members, leader, token, samples in

            let outageStart = ContinuousClock.now
            await redis.kill()
            try await eventually("the leader to step down after Redis died", within: .seconds(10)) {
                leader.manager.grant(for: job) == nil && !leader.losses(job).isEmpty
            }
            checkStepDown(leader, job: job, token: token, outageStart: outageStart, label: "kill", samples: samples)

            // Down for longer than the TTL: nobody may lead meanwhile, and nobody crashes.
            let quietUntil = outageStart + .seconds(4)
            while ContinuousClock.now < quietUntil {
                #expect(leaders(members, job).isEmpty, "someone leads while Redis is down")
                try await Task.sleep(for: .milliseconds(50))
            }
            for member in members {
                #expect(
                    member.availabilityChanges.filter { !$0 }.count == 1,
                    "\(member.name): Redis-down must be reported once per state change, got \(member.availabilityChanges)"
                )
            }

            // Back without persistence: the lease and the fence counter are gone.
            // A member may acquire between the server answering and restart() returning, so
            // acquisitions count from the restart's start, the recovery time from its end.
            let restartBegan = ContinuousClock.now
            try await redis.restart()
            let backAt = ContinuousClock.now
            try await eventually("a leader for \(job) after Redis came back", within: .seconds(15)) {
                leaders(members, job).count == 1
            }
            let acquisitions = members.flatMap { $0.acquisitions(job, after: restartBegan) }.sorted { $0.at < $1.at }
            let recovered = try #require(acquisitions.first)
            let recovery = max(.zero, recovered.at - backAt)
            report(
                "kill: Redis down \(Int(milliseconds(backAt - outageStart))) ms; led again \(Int(milliseconds(recovery))) ms after Redis answered (bound quarantine + TTL + renew = \(Int(milliseconds(outageTiming.ttl * 2 + outageTiming.renewEvery))) ms + slack); token \(token) -> \(recovered.grant.token)"
            )
            // The restart lost the namespace epoch: one TTL of quarantine comes first.
            #expect(
                recovery <= outageTiming.ttl * 2 + outageTiming.renewEvery + .seconds(3), "recovery took \(recovery)")
            #expect(
                recovered.grant.token > token,
                "token went from \(token) to \(recovered.grant.token) across a restart that lost the fence")
            try await eventually(
                "both members to see Redis back (so far \(members.map(\.availabilityChanges)))", within: .seconds(10)
            ) { members.allSatisfy { $0.availabilityChanges.last == true } }
            // Once back, it stays back: calls that fail only because a connection is still in its
            // reconnect backoff, or that were sent before the recovery, must not report it down again.
            try await Task.sleep(for: .seconds(3))
            for member in members {
                #expect(
                    member.availabilityChanges == [true, false, true],
                    "\(member.name): Redis availability must change once per real state change, got \(member.availabilityChanges)"
                )
            }
            for member in members { await member.stop() }
            // One leader at a time across the whole run, by token order. A member that stepped
            // down while its lease still stood in Redis takes it up again with the same token
            // (acquire is idempotent for its owner): equal tokens, but only for the same member.
            let all = members.flatMap { member in member.acquisitions(job).map { (member.name, $0.at, $0.grant.token) }
            }
            .sorted { $0.1 < $1.1 }
            let inOrder = zip(all, all.dropFirst()).allSatisfy { earlier, later in
                later.2 > earlier.2 || (later.2 == earlier.2 && later.0 == earlier.0)
            }
            #expect(inOrder, "tokens not increasing: \(all.map { "\($0.0):\($0.2)" })")
        }
    }

    @Test(
        "Redis restarted at once with no persistence: the old leader learns it lost the lease, the new token is still higher"
    )
    func quickRestartLosingFence() async throws {
        let redis = try await RedisServerProcess()
        let job = "outage-quick"
        let namespace = "outage-\(UInt32.random(in: 0 ... .max))"
        try await withPair(redis, job: job, namespace: namespace) { members, leader, token, samples in
            let fenceBefore = try await redis.command("GET", LeaseKeys(namespace: namespace).fence(job)).string.flatMap
            { UInt64($0) }
            #expect(fenceBefore == token)

            let outageStart = ContinuousClock.now
            // Crash and start again at once, no persistence: lease and fence are gone while the
            // old leader's validity still runs. (RedisServerProcess.stop() sends SIGTERM, which the
            // server spawned from a test thread has blocked: it would take 5 s and end in SIGKILL.)
            await redis.kill()
            try await redis.restart()
            let restarted = ContinuousClock.now
            // No renewal of the old token can succeed any more: this is its final validity.
            let oldGrant = try #require(samples.last(leader.name, job))
            #expect(oldGrant.token == token)
            let lastValidity = oldGrant.validUntil
            try await eventually("the old leader to notice the restart", within: .seconds(10)) {
                !leader.losses(job).isEmpty
            }
            let loss = leader.losses(job)[0]
            // Either its first renewal against the new server finds the lease gone (expired), or
            // the renewals failed long enough for the step-down timer: both end leadership
            // within about one TTL of the server coming back.
            #expect(
                loss.at - restarted < outageTiming.ttl + stepDownTolerance,
                "lost \(loss.at - restarted) after the new server answered")
            report(
                "quick restart: restart() took \(Int(milliseconds(restarted - outageStart))) ms; old leader lost \(Int(milliseconds(loss.at - restarted))) ms after the new server answered"
            )
            try await eventually("a new leadership of \(job)", within: .seconds(15)) {
                members.flatMap { $0.acquisitions(job) }.contains { $0.grant.token != token }
            }
            let next = members.flatMap { $0.acquisitions(job) }.filter { $0.grant.token != token }.sorted {
                $0.at < $1.at
            }[0]
            report(
                "quick restart: old leader lost (\(loss.reason.rawValue)) \(Int(milliseconds(loss.at - outageStart))) ms after the restart began; led again after \(Int(milliseconds(next.at - outageStart))) ms; token \(token) -> \(next.grant.token)"
            )
            // The restart quarantine: nobody may take the lease while the old leader's validity
            // (from the send of its last successful renewal) may still run, even though the old
            // leader hears of the loss only at its next renewal.
            #expect(
                next.at >= lastValidity,
                "overlap: a new leader \(Int(milliseconds(lastValidity - next.at))) ms before the old leader's validity ended"
            )
            #expect(
                next.grant.token > token,
                "fencing token went backwards across a restart that lost the fence: \(token) -> \(next.grant.token)")
        }
    }

    @Test("Redis restarted from an AOF (appendfsync always): the fence survives and the next token is higher still")
    func restartWithAppendOnlyFile() async throws {
        let redis = try await RedisServerProcess(.init(persistence: .appendOnly(fsyncAlways: true)))
        let job = "outage-aof"
        let namespace = "outage-\(UInt32.random(in: 0 ... .max))"
        try await withPair(redis, job: job, namespace: namespace) { members, leader, token, samples in
            let outageStart = ContinuousClock.now
            await redis.kill()
            try await eventually("the leader to step down", within: .seconds(10)) { !leader.losses(job).isEmpty }
            checkStepDown(
                leader, job: job, token: token, outageStart: outageStart, label: "kill (aof)", samples: samples)
            try await Task.sleep(for: .seconds(1))
            try await redis.restart()
            let fence = try await redis.command("GET", LeaseKeys(namespace: namespace).fence(job)).string.flatMap {
                UInt64($0)
            }
            #expect(
                fence.map { $0 >= token } ?? false,
                "fence after an AOF restart: \(String(describing: fence)), token was \(token)")
            try await eventually("a higher token after the restart", within: .seconds(15)) {
                members.flatMap { $0.acquisitions(job) }.contains { $0.grant.token > token }
            }
        }
    }

    /// A Redis that accepts connections but answers nothing for 4 s.
    private func stalledRedis(
        label: String, debugCommand: Bool, stall: @escaping @Sendable (RedisServerProcess) async throws -> Void
    ) async throws {
        let redis = try await RedisServerProcess(.init(enableDebugCommand: debugCommand))
        let job = "outage-\(label.replacingOccurrences(of: " ", with: "-"))"
        let namespace = "outage-\(UInt32.random(in: 0 ... .max))"
        try await withPair(redis, job: job, namespace: namespace) { members, leader, token, samples in

            let outageStart = ContinuousClock.now
            try await stall(redis)
            let stallEnds = outageStart + .seconds(4)
            try await eventually("\(label): the leader to step down", within: .seconds(10)) {
                !leader.losses(job).isEmpty
            }
            let delay = checkStepDown(
                leader, job: job, token: token, outageStart: outageStart, label: label, samples: samples)
            if let delay { #expect(delay < outageTiming.ttl, "\(label): stepped down \(delay) into a 4 s stall") }
            // Nobody leads during the stall (the server executes nothing).
            while ContinuousClock.now < stallEnds - .milliseconds(300) {
                #expect(leaders(members, job).isEmpty, "\(label): someone leads while Redis is stalled")
                try await Task.sleep(for: .milliseconds(50))
            }
            try await eventually("\(label): a leader after the stall", within: .seconds(15)) {
                members.flatMap { $0.acquisitions(job) }.contains { $0.grant.token != token }
                    || leaders(members, job).count == 1
            }
            let firstAgain = members.flatMap { $0.acquisitions(job, after: outageStart) }.sorted { $0.at < $1.at }.first
            if let firstAgain {
                let afterStall = firstAgain.at - stallEnds
                report(
                    "\(label): led again \(Int(milliseconds(afterStall))) ms after the stall ended; token \(token) -> \(firstAgain.grant.token)"
                )
                #expect(
                    afterStall <= outageTiming.ttl + outageTiming.renewEvery + .seconds(3),
                    "\(label): recovery took \(afterStall)")
                #expect(firstAgain.grant.token > token, "\(label): token \(token) -> \(firstAgain.grant.token)")
            }
        }
    }

    @Test("CLIENT PAUSE 4000 ALL: the leader steps down before its TTL and the job is led again after")
    func clientPause() async throws {
        try await stalledRedis(label: "client pause", debugCommand: false) { redis in
            let reply = try await redis.command("CLIENT", "PAUSE", "4000", "ALL")
            #expect(reply.string == "OK", "CLIENT PAUSE answered \(reply)")
        }
    }

    @Test("DEBUG SLEEP 4: the leader steps down before its TTL and the job is led again after")
    func debugSleep() async throws {
        try await stalledRedis(label: "debug sleep", debugCommand: true) { redis in
            let configuration = redis.configuration(commandTimeout: .seconds(20))
            // The server sleeps in the command: send it without waiting for the reply.
            Task.detached {
                let connection = RedisConnection(configuration: configuration)
                _ = try? await connection.send(["DEBUG", "SLEEP", "4"])
                await connection.close()
            }
            // Wait until the server is actually asleep (a PING with a short timeout fails).
            let probe = RedisConnection(
                configuration: redis.configuration(
                    commandTimeout: .milliseconds(200), connectTimeout: .milliseconds(200)))
            _ = try? await eventually("the server to sleep", within: .seconds(3)) {
                (try? await probe.send(["PING"])) == nil
            }
            await probe.close()
        }
    }

    @Test("Redis refusing service: retries are capped and jittered (no hot loop), reported once, and nobody leads")
    func retriesAreCapped() async throws {
        let listener = try CountingListener()
        let (configuration, jobs) = outageRedis(
            RedisEndpoint(address: .tcp(host: "127.0.0.1", port: listener.port)),
            jobs: ["outage-refused-a", "outage-refused-b"])
        try await withMember(
            "lonely", redis: configuration, jobs: jobs,
            options: outageOptions("lonely", namespace: "outage-refused", samples: GrantSamples())
        ) { member in
            let window: Duration = .seconds(6)
            try await Task.sleep(for: window)
            let connections = listener.count
            report(
                "refused: \(connections) connection attempts in \(window) by one member with 3 connections and 2 jobs (\(String(format: "%.1f", Double(connections) / window.secondsValue))/s)"
            )
            // Uncapped retrying would be thousands; capped backoff (≤ 2 s per connection, the
            // engine's tick and acquire backoff on top) keeps it to a few per second.
            #expect(connections >= 3, "the member stopped retrying")
            #expect(connections <= 90, "\(connections) connection attempts in 6 s: retries are not capped")
            #expect(
                member.availabilityChanges == [false], "Redis availability reported as \(member.availabilityChanges)")
            #expect(member.acquisitions("outage-refused-a").isEmpty && member.acquisitions("outage-refused-b").isEmpty)
            let stopped = await finishes(within: .seconds(15)) { await member.stop() }
            #expect(stopped, "the member did not stop within 15 s")
        }
        listener.stop()
    }
}

/// Accepts TCP connections and closes them at once, counting them (a Redis that is there
/// but serves nobody, as seen by a client's connect + first command).
private final class CountingListener: Sendable {
    let port: Int
    private let fd: Int32
    private let state = Mutex<(count: Int, stopped: Bool)>((0, false))

    init() throws {
        let (fd, port) = try openLoopbackListener()
        self.fd = fd
        self.port = port
        let thread = Thread { [self] in self.acceptLoop() }
        thread.start()
    }

    var count: Int { state.withLock { $0.count } }

    private func acceptLoop() {
        while true {
            let client = accept(fd, nil, nil)
            if client < 0 {
                if errno == EINTR { continue }
                return
            }
            let stopped = state.withLock { state -> Bool in
                if !state.stopped { state.count += 1 }
                return state.stopped
            }
            close(client)
            if stopped { return }
        }
    }

    /// Stops counting; the listener is shut down so the accept loop ends.
    func stop() {
        state.withLock { $0.stopped = true }
        shutdown(fd, Int32(SHUT_RDWR))
    }

    deinit { close(fd) }
}
