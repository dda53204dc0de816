import LeaseholdTesting
import Testing

@testable import Leasehold

@Suite("Lease engine under a fake clock")
struct LeaseEngineTests {
    static let job = LeaseJob(name: "report", timing: LeaseTiming(ttl: .seconds(10)))

    /// Starts a harness whose job was just acquired with `token`, the acquire sent at t=0.
    private func leader(token: UInt64 = 7, jobs: [LeaseJob] = [Self.job]) -> EngineDriver {
        var h = EngineDriver(jobs: jobs)
        h.poll()
        let commands = h.takeCommands()
        for (id, requests) in EngineDriver.acquires(commands) {
            h.complete(
                .acquire(
                    id: id,
                    .success(
                        AcquireReply(
                            redisNowMs: 1_000_000,
                            outcomes: requests.map { _ in .acquired(token: token, takeover: .acquired, gapMs: nil) }))))
        }
        for (id, _) in EngineDriver.renews(commands) {
            h.answerTick(.renew(id: id, batch: RenewBatch(leases: [], heartbeatTTLMs: 0, previousTickMs: 0)))
        }
        h.poll()
        return h
    }

    @Test("default timing: validity = ttl × (1 − drift) − margin, step-down = validity − grace")
    func timingDefaults() {
        let timing = LeaseTiming(ttl: .seconds(10))
        #expect(timing.renewEvery == .seconds(10) / 3)
        #expect(timing.margin == .milliseconds(100))
        #expect(timing.grace == .seconds(1))
        #expect(timing.validityWindow == .milliseconds(9_800))
        #expect(timing.stepDownWindow == .milliseconds(8_800))
        let short = LeaseTiming(ttl: .seconds(1))
        #expect(short.margin == .milliseconds(10))
        #expect(short.grace == .milliseconds(100))
    }

    @Test("validity is counted from the send time, not the reply time")
    func validityFromSendTime() {
        var h = EngineDriver(jobs: [Self.job])
        h.poll()
        let (id, _) = EngineDriver.acquires(h.takeCommands())[0]
        h.now = .milliseconds(700)  // a slow reply
        h.complete(
            .acquire(
                id: id,
                .success(AcquireReply(redisNowMs: 5, outcomes: [.acquired(token: 42, takeover: .acquired, gapMs: nil)]))
            ))
        h.poll()
        let lease = h.engine.lease(of: "report")
        #expect(lease?.token == 42)
        #expect(lease?.validUntil == .milliseconds(9_800))
        #expect(
            h.takeEvents().contains(
                .acquired(job: "report", token: 42, validUntil: .milliseconds(9_800), takeover: .acquired, gapMs: nil)))
    }

    @Test("a leader steps down at validity − grace when renew replies never come")
    func stepDownWithoutReplies() {
        var h = leader()
        _ = h.takeEvents()
        h.advance(to: .milliseconds(8_799))
        #expect(h.engine.lease(of: "report") != nil)
        // Renewals were sent (and retried) but none answered.
        #expect(!EngineDriver.renews(h.takeCommands()).isEmpty)
        h.advance(to: .milliseconds(8_800))
        #expect(h.engine.lease(of: "report") == nil)
        #expect(h.takeEvents().contains(.lost(job: "report", token: 7, reason: .steppedDown)))
        // Never leader again without a new successful acquire, whatever time passes.
        h.advance(to: .seconds(60))
        #expect(h.engine.lease(of: "report") == nil)
    }

    @Test("renewals extend validity from their send time")
    func renewalExtends() {
        var h = leader()
        _ = h.takeCommands()
        h.advance(to: .milliseconds(3_334))
        let renew = EngineDriver.renews(h.takeCommands())
        #expect(renew.count == 1)
        #expect(renew.first?.batch.leases.map(\.job) == ["report"])
        let sentAt = Duration.seconds(10) / 3  // the tick fires exactly one renew interval after the first
        h.now += .milliseconds(300)
        h.answerTick(.renew(id: renew[0].id, batch: renew[0].batch))
        h.poll()
        #expect(h.engine.lease(of: "report")?.validUntil == sentAt + .milliseconds(9_800))
    }

    @Test("failed renewals are retried with short backoff while valid")
    func renewRetryBackoff() {
        var h = leader()
        _ = h.takeCommands()
        h.advance(to: .milliseconds(3_334))
        var attempts: [Duration] = []
        for _ in 0..<6 {
            guard let (id, _) = EngineDriver.renews(h.takeCommands()).first else { break }
            attempts.append(h.now)
            h.complete(.renew(id: id, .failure(LeaseCallFailure(outcomeUnknown: false, message: "refused"))))
            h.poll()
            if let wake = h.poll().wakeAt { h.now = wake }
            h.poll()
        }
        #expect(attempts.count == 6)
        let gaps = zip(attempts.dropFirst(), attempts).map { $0 - $1 }
        // Exponential from ~50 ms, never longer than one renew interval.
        #expect(gaps.allSatisfy { $0 > .zero && $0 <= .seconds(10) / 3 })
        #expect(gaps.first! <= .milliseconds(100))
        #expect(h.takeEvents().contains(.redisAvailability(up: false, detail: "refused")))
    }

    @Test("a renewal that finds the lease gone reports it lost at once")
    func renewFindsLeaseGone() {
        var h = leader()
        _ = h.takeCommands()
        h.advance(to: .milliseconds(3_334))
        let renew = EngineDriver.renews(h.takeCommands())[0]
        h.answerTick(.renew(id: renew.id, batch: renew.batch), renewed: false)
        h.poll()
        #expect(h.engine.lease(of: "report") == nil)
        #expect(h.takeEvents().contains(.lost(job: "report", token: 7, reason: .expired)))
    }

    @Test("a standby tries again when the holder's lease runs out, not before")
    func standbyWakesAtPTTL() {
        var h = EngineDriver(jobs: [Self.job])
        h.poll()
        let (id, _) = EngineDriver.acquires(h.takeCommands())[0]
        h.complete(
            .acquire(id: id, .success(AcquireReply(redisNowMs: 5, outcomes: [.held(by: "b@x:3", pttlMs: 4_000)]))))
        let wake = h.poll().wakeAt
        #expect(wake != nil)
        h.advance(to: .milliseconds(3_999))
        #expect(EngineDriver.acquires(h.takeCommands()).isEmpty)
        h.advance(to: .milliseconds(4_021))
        let next = EngineDriver.acquires(h.takeCommands())
        #expect(next.count == 1)
        #expect(next.first?.requests.first?.job == "report")
    }

    @Test("a released message makes a standby try at once")
    func releasedMessageWakesStandby() {
        var h = EngineDriver(jobs: [Self.job])
        h.poll()
        let (id, _) = EngineDriver.acquires(h.takeCommands())[0]
        h.complete(
            .acquire(id: id, .success(AcquireReply(redisNowMs: 5, outcomes: [.held(by: "b@x:3", pttlMs: 9_000)]))))
        h.poll()
        h.now = .milliseconds(100)
        h.engine.releasedMessage(job: "report", now: h.now)
        h.poll()
        #expect(EngineDriver.acquires(h.takeCommands()).count == 1)
    }

    @Test("an acquire that timed out is never counted, and is released by owner value on shutdown")
    func unknownOutcomeIsReconciled() {
        var h = EngineDriver(jobs: [Self.job])
        h.poll()
        let (id, _) = EngineDriver.acquires(h.takeCommands())[0]
        h.complete(.acquire(id: id, .failure(LeaseCallFailure(outcomeUnknown: true, message: "timeout"))))
        h.poll()
        #expect(h.engine.lease(of: "report") == nil)
        h.engine.beginShutdown(now: h.now)
        h.poll()
        let releases = h.takeCommands().compactMap {
            if case .release(let id, let items, _) = $0 { (id, items) } else { nil }
        }
        #expect(releases.count == 1)
        #expect(releases.first?.1 == [ReleaseItem(job: "report", token: nil)])
        h.complete(.release(id: releases[0].0, .success([true])))
        h.poll()
        #expect(h.engine.isShutDown)
    }

    @Test("a reply that arrives after the step-down time does not make a leader")
    func lateAcquireReply() {
        var h = EngineDriver(jobs: [Self.job])
        h.poll()
        let (id, _) = EngineDriver.acquires(h.takeCommands())[0]
        h.now = .seconds(9)
        h.complete(
            .acquire(
                id: id,
                .success(AcquireReply(redisNowMs: 5, outcomes: [.acquired(token: 9, takeover: .acquired, gapMs: nil)])))
        )
        h.poll()
        #expect(h.engine.lease(of: "report") == nil)
        // The next attempt takes the lease up again idempotently.
        h.poll()
        #expect(EngineDriver.acquires(h.takeCommands()).count == 1)
    }

    @Test("one renew call per tick carries every held lease")
    func oneRenewPerTick() {
        let many = (0..<100).map { LeaseJob(name: "job-\($0)", timing: LeaseTiming(ttl: .seconds(10))) }
        var h = leader(jobs: many)
        #expect(h.engine.ledJobs.count == 100)
        _ = h.takeCommands()
        h.advance(to: .milliseconds(3_334))
        let commands = h.takeCommands()
        #expect(EngineDriver.renews(commands).count == 1)
        #expect(EngineDriver.renews(commands).first?.batch.leases.count == 100)
        #expect(EngineDriver.acquires(commands).isEmpty)
    }

    @Test("graceful release: leaders keep renewing until released, then shutdown completes")
    func gracefulShutdown() {
        var h = leader()
        _ = h.takeCommands()
        h.engine.beginShutdown(now: h.now)
        h.poll()
        #expect(!h.engine.isShutDown)
        h.engine.release(job: "report", reason: .released, now: h.now)
        h.poll()
        let release = h.takeCommands().compactMap {
            if case .release(let id, let items, _) = $0 { (id, items) } else { nil }
        }
        #expect(release.first?.1 == [ReleaseItem(job: "report", token: 7)])
        h.complete(.release(id: release[0].0, .success([true])))
        h.poll()
        #expect(h.engine.isShutDown)
        #expect(h.takeEvents().contains(.released(job: "report", token: 7, reason: .released, confirmed: true)))
    }

    @Test("spread placement: a non-preferred standby waits standby_delay, the preferred one goes at once")
    func spreadStandbyDelay() {
        let spread = LeasePlacement.spread(standbyDelay: .seconds(3), stability: .seconds(10))
        let jobs = (0..<40).map { LeaseJob(name: "j\($0)", timing: LeaseTiming(ttl: .seconds(10)), placement: spread) }
        var h = EngineDriver(jobs: jobs, member: "a")
        h.poll()
        // Membership unknown: nothing acquired yet.
        let first = h.takeCommands()
        #expect(EngineDriver.acquires(first).isEmpty)
        h.answerTick(EngineDriver.renews(first).map { .renew(id: $0.id, batch: $0.batch) }[0], members: ["a", "b"])
        h.poll()
        let immediate = Set(EngineDriver.acquires(h.takeCommands()).flatMap { $0.requests.map(\.job) })
        let mine = Set(jobs.map(\.name).filter { h.engine.preferredMember(of: $0, now: h.now) == "a" })
        #expect(!mine.isEmpty && mine.count < jobs.count)
        #expect(immediate == mine)
        h.advance(to: .milliseconds(2_990))
        #expect(EngineDriver.acquires(h.takeCommands()).isEmpty)
        h.advance(to: .milliseconds(3_010))
        let delayed = Set(EngineDriver.acquires(h.takeCommands()).flatMap { $0.requests.map(\.job) })
        #expect(delayed == Set(jobs.map(\.name)).subtracting(mine))
    }
}

@Suite("Standby cost")
struct StandbyCostTests {
    @Test(
        "a standby does not poll a lease whose holder still heartbeats, and takes over at its lease expiry once it dies"
    )
    func noPollingWhileHolderLives() {
        let job = LeaseJob(name: "report", timing: LeaseTiming(ttl: .seconds(10)))
        var engine = LeaseEngine(
            settings: .init(owner: OwnerID(member: "a", incarnation: "i1"), seed: 3), jobs: [job], now: .zero)
        var now = Duration.zero
        var acquireTimes: [Duration] = []
        let redisStart: Int64 = 1_000_000
        // b holds the lease and renews it (with its heartbeat) on every one of its ticks while
        // alive; its lease then lasts 10 s after its last renewal.
        var bLastRenewMs: Int64 = redisStart
        var bNextTickMs: Int64 = redisStart + 1_000  // b ticks on its own schedule, every 3.333 s
        var bAlive = true
        while now < .seconds(60) {
            let redisNow = redisStart + now.wholeMilliseconds
            while bAlive, bNextTickMs <= redisNow {
                bLastRenewMs = bNextTickMs
                bNextTickMs += 3_333
            }
            let step = engine.poll(now: now)
            for command in step.commands {
                switch command {
                case .acquire(let id, let requests):
                    acquireTimes.append(now)
                    let leaseEnd = bLastRenewMs + 10_000
                    let outcome: AcquireOutcome =
                        redisNow < leaseEnd
                        ? .held(by: "b@x:5", pttlMs: leaseEnd - redisNow)
                        : .acquired(token: 9, takeover: .expiredTakeover, gapMs: nil)
                    engine.complete(
                        .acquire(
                            id: id,
                            .success(AcquireReply(redisNowMs: redisNow, outcomes: requests.map { _ in outcome }))),
                        now: now)
                case .renew(let id, let batch):
                    var members = [MemberInfo(name: "a", expiresAtMs: redisNow + 6_666, weight: 1)]
                    let bHeartbeatEnd = bLastRenewMs + 6_666
                    if bHeartbeatEnd > redisNow {
                        members.append(MemberInfo(name: "b", expiresAtMs: bHeartbeatEnd, weight: 1, incarnation: "x"))
                    }
                    engine.complete(
                        .renew(
                            id: id,
                            .success(
                                RenewReply(
                                    redisNowMs: redisNow, renewed: batch.leases.map { _ in true }, members: members))),
                        now: now)
                default:
                    break
                }
            }
            if now >= .seconds(30) { bAlive = false }
            guard let wake = engine.poll(now: now).wakeAt else { break }
            now = max(wake, now + .milliseconds(1))
        }
        // While b lived (30 s, three TTLs) the standby asked Redis once or twice, not every
        // few seconds; after b died it took over exactly when b's lease expired.
        let whileAlive = acquireTimes.filter { $0 < .seconds(30) }
        #expect(whileAlive.count <= 2, "polled at \(whileAlive)")
        #expect(engine.lease(of: "report")?.token == 9)
        let leaseEnd = Duration.milliseconds(bLastRenewMs - redisStart + 10_000)
        let takeover = acquireTimes.last!
        #expect(
            takeover >= leaseEnd && takeover <= leaseEnd + .milliseconds(100),
            "took over at \(takeover), lease ended \(leaseEnd)")
    }

    @Test("after an acquire with an unknown outcome, a standby keeps checking even while the holder it saw lives")
    func unknownAcquireKeepsCheckingDespiteLiveHolder() {
        // Simulator seed 9755: a timed-out acquire landed in Redis after a later attempt had
        // seen the lease held by b. Every other standby trusted "a live member holds it" and so
        // did we: nobody renewed or took the lease. We must keep checking ourselves.
        let job = LeaseJob(name: "report", timing: LeaseTiming(ttl: .seconds(3)))
        var engine = LeaseEngine(
            settings: .init(owner: OwnerID(member: "a", incarnation: "i1"), seed: 5), jobs: [job], now: .zero)
        var now = Duration.zero
        let redisStart: Int64 = 5_000_000
        func tick(_ id: Int, _ batch: RenewBatch) {
            let redisNow = redisStart + now.wholeMilliseconds
            let members = [
                MemberInfo(name: "a", expiresAtMs: redisNow + 2_000, weight: 1, incarnation: "i1"),
                MemberInfo(name: "b", expiresAtMs: redisNow + 2_000, weight: 1, incarnation: "x"),
            ]
            engine.complete(
                .renew(
                    id: id,
                    .success(
                        RenewReply(redisNowMs: redisNow, renewed: batch.leases.map { _ in true }, members: members))),
                now: now)
        }
        var attempts: [Duration] = []
        var first = true
        while now < .seconds(10) {
            for command in engine.poll(now: now).commands {
                switch command {
                case .renew(let id, let batch):
                    tick(id, batch)
                case .acquire(let id, let requests):
                    attempts.append(now)
                    if first {
                        // Times out: it may still be executed later.
                        first = false
                        engine.complete(
                            .acquire(id: id, .failure(LeaseCallFailure(outcomeUnknown: true, message: "timeout"))),
                            now: now)
                    } else {
                        // Redis says b holds it (b heartbeats throughout).
                        let reply = AcquireReply(
                            redisNowMs: redisStart + now.wholeMilliseconds,
                            outcomes: requests.map { _ in .held(by: "b@x:7", pttlMs: 1_000) })
                        engine.complete(.acquire(id: id, .success(reply)), now: now)
                    }
                default:
                    break
                }
            }
            guard let wake = engine.poll(now: now).wakeAt else { break }
            now = max(wake, now + .milliseconds(1))
        }
        // Checked about once per observed PTTL (1 s) for the whole window, not once per
        // heartbeat of b (never lapsing) or per safety net (30 s).
        #expect(attempts.count >= 8, "attempts at \(attempts)")
    }
}

/// Withdrawing from a job (a stuck handler): the lease goes back, no acquire is sent, and a
/// grant that was in flight is given back at once; rejoining competes again at once.
@Suite struct LeaseEngineWithdrawTests {
    static let job = LeaseJob(name: "report", timing: LeaseTiming(ttl: .seconds(10)))

    @Test func anAcquireInFlightWhenWithdrawnIsGivenBackAndRejoinCompetesAgain() {
        var h = EngineDriver(jobs: [Self.job])
        h.poll()
        let (id, _) = EngineDriver.acquires(h.takeCommands())[0]
        h.engine.withdraw(job: "report", reason: .released, now: h.now)
        h.complete(
            .acquire(
                id: id,
                .success(AcquireReply(redisNowMs: 5, outcomes: [.acquired(token: 7, takeover: .acquired, gapMs: nil)])))
        )
        h.poll()
        #expect(h.engine.lease(of: "report") == nil)
        let releases = EngineDriver.releases(h.takeCommands())
        #expect(releases.first?.items.map(\.token) == [7])
        h.complete(.release(id: releases[0].id, .success([true])))
        // Withdrawn: however long we wait, no acquire is sent.
        for step in 1...5 {
            h.advance(to: .seconds(Int64(step * 10)))
            #expect(EngineDriver.acquires(h.takeCommands()).isEmpty)
        }
        #expect(h.engine.isWithdrawn("report"))
        h.engine.rejoin(job: "report", now: h.now)
        h.poll()
        #expect(EngineDriver.acquires(h.takeCommands()).count == 1)
        #expect(!h.engine.isWithdrawn("report"))
    }
}
