import LeaseholdTesting
import Testing

@testable import Leasehold

/// How a member judges other members' liveness between its own ticks, on a fake clock.
@Suite("Placement liveness between ticks")
struct PlacementLivenessTests {
    // ttl 3 s → tick (renew) every 1 s, heartbeat TTL 2 s.
    static let spread = LeasePlacement.spread(standbyDelay: .seconds(1), stability: .seconds(3))
    static let jobs = (0..<40).map {
        LeaseJob(name: "j\($0)", timing: LeaseTiming(ttl: .seconds(3)), placement: spread)
    }
    /// A job that b wins over a.
    static let bJob = jobs.map(\.name).first {
        Rendezvous.preferred(job: $0, among: [RendezvousMember(name: "a"), RendezvousMember(name: "b")]) == "b"
    }!

    /// Engine "a" after one tick answered at Redis time 1_000_000 ms (local t = 0), which
    /// reported b with heartbeat expiry `bExpiry`.
    static func engine(bExpiry: Int64) -> LeaseEngine {
        var driver = EngineDriver(jobs: jobs)
        let tick = driver.poll().commands[0]
        driver.answerTick(
            tick,
            members: [
                MemberInfo(name: "a", expiresAtMs: 1_002_000, weight: 1),
                MemberInfo(name: "b", expiresAtMs: bExpiry, weight: 1),
            ])
        return driver.engine
    }

    @Test("a member whose tick is a little late still counts as live until our next tick")
    func slightlyLateMemberStaysPreferred() {
        // b last ticked 1.05 s before our snapshot (50 ms late, its next tick has not reached
        // our snapshot): its known expiry lies 950 ms ahead. Our own next tick is due at
        // 1 s; deciding at 0.96 s (or a little after 1 s, if our tick is slow) must not
        // drop b, or a grabs b's jobs and hands them back a stability window later.
        let engine = Self.engine(bExpiry: 1_000_950)
        #expect(engine.preferredMember(of: Self.bJob, now: .milliseconds(960)) == "b")
        #expect(engine.preferredMember(of: Self.bJob, now: .milliseconds(1_200)) == "b")
    }

    @Test("a crashed member stops counting before its leases (3 ticks) can expire")
    func crashedMemberDropsBeforeItsLeasesExpire() {
        // b crashed right after a tick at 1_000_000: heartbeat until 1_002_000, leases until
        // 1_003_000. By 2.6 s (well before 3 s) it must no longer be preferred.
        let engine = Self.engine(bExpiry: 1_002_000)
        #expect(engine.preferredMember(of: Self.bJob, now: .milliseconds(1_900)) == "b")
        #expect(engine.preferredMember(of: Self.bJob, now: .milliseconds(2_600)) == "a")
    }
}

@Suite("Placement standby gating")
struct PlacementStandbyGatingTests {
    @Test("a member that announced its departure stays gone while its heartbeat (plus slack) may still show")
    func departedMemberStaysGone() {
        // b ticked right at our snapshot (heartbeat until 1_002_000), then left at 0.1 s.
        var engine = PlacementLivenessTests.engine(bExpiry: 1_002_000)
        engine.releasedMessage(job: "unrelated", leavingMember: "b", now: .milliseconds(100))
        for ms in [200, 1_500, 2_150, 2_300, 2_450] {
            #expect(
                engine.preferredMember(of: PlacementLivenessTests.bJob, now: .milliseconds(ms)) == "a", "at \(ms) ms")
        }
    }

    @Test("only a non-preferred standby asks Redis to enforce the standby delay; a refusal sets the retry")
    func nonPreferredAcquiresCarryMinFree() {
        var engine = PlacementLivenessTests.engine(bExpiry: 1_060_000)
        var now: Duration = .zero
        var requests: [AcquireRequest] = []
        var ids: [String: Int] = [:]
        func pollAt(_ t: Duration) {
            now = t
            for command in engine.poll(now: t).commands {
                if case .acquire(let id, let batch) = command {
                    requests += batch
                    for request in batch { ids[request.job] = id }
                }
            }
        }
        pollAt(.milliseconds(1))
        let immediate = requests
        #expect(!immediate.isEmpty && immediate.allSatisfy { $0.minFreeMs == nil })
        #expect(immediate.allSatisfy { engine.preferredMember(of: $0.job, now: now) == "a" })
        // Answer them: held by b for 10 s, so they do not come back soon.
        for (id, batch) in Dictionary(grouping: immediate, by: { ids[$0.job]! }) {
            engine.complete(
                .acquire(
                    id: id,
                    .success(
                        AcquireReply(
                            redisNowMs: 1_000_001, outcomes: batch.map { _ in .held(by: "b@x:1", pttlMs: 10_000) }))),
                now: now)
        }
        requests.removeAll()
        pollAt(.milliseconds(1_010))  // after the standby delay (1 s)
        let delayed = requests
        #expect(!delayed.isEmpty && delayed.allSatisfy { $0.minFreeMs == 1_000 })
        #expect(delayed.contains { $0.job == PlacementLivenessTests.bJob })
        // Redis refuses b's job: released 700 ms ago, 300 ms of standby delay left.
        let refused = PlacementLivenessTests.bJob
        for (id, batch) in Dictionary(grouping: delayed, by: { ids[$0.job]! }) {
            engine.complete(
                .acquire(
                    id: id,
                    .success(
                        AcquireReply(
                            redisNowMs: 1_001_010,
                            outcomes: batch.map {
                                $0.job == refused ? .held(by: "", pttlMs: 300) : .held(by: "b@x:1", pttlMs: 10_000)
                            }))),
                now: now)
        }
        requests.removeAll()
        pollAt(.milliseconds(1_300))
        #expect(requests.isEmpty)
        pollAt(.milliseconds(1_320))  // 300 ms later, not 300 ms + another standby delay
        #expect(requests.map(\.job) == [refused])
    }
}
