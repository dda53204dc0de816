import LeaseholdTesting
import Testing

@testable import Leasehold

/// Placement over members that carry different job sets (a rolling deploy, or members that
/// run different catalogs), and catalog changes at run time, on a fake clock.
@Suite("Catalog-aware placement")
struct CatalogPlacementTests {
    // ttl 3 s → tick every 1 s; stability 3 s.
    static let spread = LeasePlacement.spread(standbyDelay: .seconds(1), stability: .seconds(3))
    static func job(_ name: String, ttl: Duration = .seconds(3)) -> LeaseJob {
        LeaseJob(name: name, timing: LeaseTiming(ttl: ttl), placement: spread)
    }
    static let common = (0..<4).map { job("common\($0)") }
    static let newJobs = (0..<40).map { job("newjob\($0)") }

    /// A member `a` on a fake clock, answering its commands by hand.
    struct Member {
        var engine: LeaseEngine
        var now: Duration = .zero
        var redisMs: Int64 = 1_000_000
        var fetches: [String] = []
        var published: [[String]?] = []
        var suggested: [String] = []
        var released: [String] = []
        var acquired: [String] = []
        /// Tokens issued per job.
        var tokens: [String: UInt64] = [:]

        init(jobs: [LeaseJob], digest: String? = nil) {
            engine = LeaseEngine(
                settings: .init(owner: OwnerID(member: "a", incarnation: "i1"), seed: 7, catalogDigest: digest),
                jobs: jobs, now: .zero)
        }

        /// Polls once at `now`: ticks report `members` (others live for a minute), every free
        /// lease is granted, catalog fetches are answered from `sets`.
        mutating func step(members: [MemberInfo], sets: [String: [String]], acquire: Bool = true) {
            let polled = engine.poll(now: now)
            for event in polled.events {
                switch event {
                case .handoffSuggested(let job, _): suggested.append(job)
                case .acquired(let job, let token, _, _, _):
                    acquired.append(job)
                    tokens[job] = token
                case .released(let job, _, _, _): released.append(job)
                default: break
                }
            }
            for command in polled.commands {
                switch command {
                case .renew(let id, let batch):
                    published.append(batch.publishJobs)
                    var reported = members
                    reported.append(
                        MemberInfo(
                            name: "a", expiresAtMs: redisMs + 2_000, weight: 1, incarnation: "i1",
                            catalog: batch.catalogDigest))
                    engine.complete(
                        .renew(
                            id: id,
                            .success(
                                RenewReply(
                                    redisNowMs: redisMs, renewed: batch.leases.map { _ in true },
                                    members: reported))), now: now)
                case .acquire(let id, let requests):
                    let outcomes: [AcquireOutcome] = requests.map { _ in
                        acquire
                            ? .acquired(token: 1, takeover: .acquired, gapMs: nil) : .held(by: "z@x:1", pttlMs: 3_000)
                    }
                    engine.complete(
                        .acquire(id: id, .success(AcquireReply(redisNowMs: redisMs, outcomes: outcomes))), now: now)
                case .release(let id, let items, _):
                    engine.complete(.release(id: id, .success(items.map { _ in true })), now: now)
                case .fetchCatalog(let id, let digest):
                    fetches.append(digest)
                    engine.complete(.fetchCatalog(id: id, .success(sets[digest] ?? [])), now: now)
                }
            }
        }

        /// Runs for `duration` in 100 ms steps.
        mutating func run(for duration: Duration, members: [MemberInfo], sets: [String: [String]]) {
            let end = now + duration
            while now < end {
                step(members: members, sets: sets)
                now += .milliseconds(100)
                redisMs += 100
            }
        }

        func member(_ name: String, catalog: String?) -> MemberInfo {
            MemberInfo(name: name, expiresAtMs: redisMs + 60_000, weight: 1, incarnation: "x", catalog: catalog)
        }
    }

    @Test("rendezvous figures are unchanged when every member carries every job (or advertises nothing)")
    func sameCatalogsKeepRendezvous() {
        let jobs = Self.common + Self.newJobs
        var a = Member(jobs: jobs)
        let digest = a.engine.catalogDigest
        for others in [
            [a.member("b", catalog: digest), a.member("c", catalog: digest)],
            [a.member("b", catalog: nil), a.member("c", catalog: nil)],
        ] {
            a.step(members: others, sets: [:])
            let all = ["a", "b", "c"].map { RendezvousMember(name: $0) }
            for job in jobs.map(\.name) {
                #expect(a.engine.preferredMember(of: job, now: a.now) == Rendezvous.preferred(job: job, among: all))
            }
        }
        #expect(a.fetches.isEmpty, "a digest equal to our own needs no fetch")
    }

    @Test("a job only one member carries stays with it: no handoff to a member that lacks it")
    func jobCarriedByOneMemberIsNeverHandedOff() {
        var a = Member(jobs: Self.common + Self.newJobs)
        let bDigest = LeaseEngine.catalogDigest(of: Self.common.map(\.name))
        let b = a.member("b", catalog: bDigest)
        let sets = [bDigest: Self.common.map(\.name)]
        a.run(for: .seconds(20), members: [b], sets: sets)
        let twoMembers = ["a", "b"].map { RendezvousMember(name: $0) }
        let bWouldWin = Self.newJobs.map(\.name).filter {
            Rendezvous.preferred(job: $0, among: twoMembers) == "b"
        }
        #expect(!bWouldWin.isEmpty)
        for job in Self.newJobs.map(\.name) {
            #expect(a.engine.preferredMember(of: job, now: a.now) == "a")
            #expect(a.engine.lease(of: job) != nil, "\(job) is led by its only carrier")
        }
        #expect(a.suggested.allSatisfy { !$0.hasPrefix("newjob") }, "handoffs: \(a.suggested)")
        #expect(a.fetches == [bDigest], "one fetch for the new digest, then none: \(a.fetches)")
        // Steady state: the job set was published on the first tick only.
        #expect(a.published.first.map { $0 != nil } == true)
        #expect(a.published.dropFirst().allSatisfy { $0 == nil })
    }

    @Test("when the other member gains the job, it moves there once, after the stability window")
    func jobMovesOnceWhenTheFleetGainsIt() {
        var a = Member(jobs: Self.common + Self.newJobs)
        let oldDigest = LeaseEngine.catalogDigest(of: Self.common.map(\.name))
        let newDigest = a.engine.catalogDigest
        var sets = [oldDigest: Self.common.map(\.name)]
        a.run(for: .seconds(10), members: [a.member("b", catalog: oldDigest)], sets: sets)
        #expect(a.suggested.allSatisfy { !$0.hasPrefix("newjob") })
        // b reloads the catalog a runs.
        sets[newDigest] = (Self.common + Self.newJobs).map(\.name)
        let reloadedAt = a.now
        a.run(for: .seconds(2), members: [a.member("b", catalog: newDigest)], sets: sets)
        #expect(a.suggested.allSatisfy { !$0.hasPrefix("newjob") }, "b carries it for less than stability")
        a.run(for: .seconds(4), members: [a.member("b", catalog: newDigest)], sets: sets)
        let twoMembers = ["a", "b"].map { RendezvousMember(name: $0) }
        let bWins = Set(
            Self.newJobs.map(\.name).filter { Rendezvous.preferred(job: $0, among: twoMembers) == "b" })
        let suggested = a.suggested.filter { $0.hasPrefix("newjob") }
        #expect(Set(suggested) == bWins)
        #expect(suggested.count == bWins.count, "each job is suggested once")
        #expect(a.now - reloadedAt >= .seconds(3))
        #expect(a.fetches.count == 1, "a's own digest needs no fetch: \(a.fetches)")
    }

    @Test("a digest whose set is not known yet carries nothing; an empty read is retried, not cached")
    func unknownDigestCarriesNothingUntilFetched() {
        var a = Member(jobs: Self.common)
        let bDigest = "00000000deadbeef"
        let b = a.member("b", catalog: bDigest)
        a.run(for: .seconds(3), members: [b], sets: [:])
        #expect(Self.common.allSatisfy { a.engine.preferredMember(of: $0.name, now: a.now) == "a" })
        let emptyReads = a.fetches.count
        #expect(emptyReads >= 1 && emptyReads <= 3, "retried every couple of ticks: \(a.fetches)")
        a.run(for: .seconds(3), members: [b], sets: [bDigest: Self.common.map(\.name)])
        let all = ["a", "b"].map { RendezvousMember(name: $0) }
        for job in Self.common.map(\.name) {
            #expect(a.engine.preferredMember(of: job, now: a.now) == Rendezvous.preferred(job: job, among: all))
        }
        let fetchesAfter = a.fetches.count
        a.run(for: .seconds(3), members: [b], sets: [bDigest: Self.common.map(\.name)])
        #expect(a.fetches.count == fetchesAfter, "a known digest is not fetched again")
    }

    @Test("the job set is published again when Redis reports it lost")
    func lostJobSetIsRepublished() {
        var a = Member(jobs: Self.common)
        a.run(for: .seconds(2), members: [], sets: [:])
        #expect(a.published.filter { $0 != nil }.count == 1)
        // One tick says the set is gone (a Redis restart without persistence).
        let polled = a.engine.poll(now: a.now)
        for command in polled.commands {
            if case .renew(let id, let batch) = command {
                a.engine.complete(
                    .renew(
                        id: id,
                        .success(
                            RenewReply(
                                redisNowMs: a.redisMs, renewed: batch.leases.map { _ in true }, members: [],
                                catalogPresent: false))), now: a.now)
            }
        }
        a.now += .seconds(1)
        a.published.removeAll()
        a.run(for: .seconds(2), members: [], sets: [:])
        #expect(a.published.first.map { $0 == Self.common.map(\.name) } == true, "\(a.published)")
        #expect(a.published.dropFirst().allSatisfy { $0 == nil })
    }
}

@Suite("Catalog changes at run time")
struct LeaseEngineUpdateJobsTests {
    typealias Member = CatalogPlacementTests.Member

    @Test("removed jobs release, added ones compete, unchanged ones keep their lease and token")
    func updateAppliesTheDifference() {
        let jobs = ["keep", "drop"].map { CatalogPlacementTests.job($0) }
        var a = Member(jobs: jobs)
        a.run(for: .seconds(1), members: [], sets: [:])
        #expect(a.engine.lease(of: "keep") != nil && a.engine.lease(of: "drop") != nil)
        let keepToken = a.engine.lease(of: "keep")!.token
        let oldDigest = a.engine.catalogDigest
        a.acquired.removeAll()
        a.engine.updateJobs(
            ["keep", "add"].map { CatalogPlacementTests.job($0) }, catalogDigest: "feedfacefeedface", now: a.now)
        a.run(for: .seconds(2), members: [], sets: [:])
        #expect(a.released == ["drop"])
        #expect(a.acquired == ["add"])
        #expect(a.engine.lease(of: "keep")?.token == keepToken)
        #expect(a.engine.phase(of: "drop") == nil, "the removed job's entry is gone once released")
        #expect(a.engine.carriedJobs == ["keep", "add"])
        #expect(a.engine.catalogDigest == "feedfacefeedface" && oldDigest != "feedfacefeedface")
        #expect(a.published.compactMap { $0 }.last == ["keep", "add"], "the new set is published")
    }

    @Test("a shorter TTL applies from the next renewal, and validity never outlasts the new TTL")
    func shorterTTLClampsValidity() {
        var a = Member(jobs: [CatalogPlacementTests.job("j", ttl: .seconds(30))])
        a.run(for: .seconds(1), members: [], sets: [:])
        let before = a.engine.lease(of: "j")!
        #expect(before.validUntil > a.now + .seconds(25))
        a.engine.updateJobs([CatalogPlacementTests.job("j", ttl: .seconds(3))], catalogDigest: nil, now: a.now)
        // The next renewal is due at most one new tick (1 s) from now.
        var sentTTL: Int64?
        var sentAt: Duration?
        for _ in 0..<20 where sentTTL == nil {
            a.now += .milliseconds(100)
            for command in a.engine.poll(now: a.now).commands {
                if case .renew(_, let batch) = command, let item = batch.leases.first {
                    sentTTL = item.ttlMs
                    sentAt = a.now
                }
            }
        }
        #expect(sentTTL == 3_000)
        let after = a.engine.lease(of: "j")!
        #expect(after.token == before.token)
        // Even with no reply, the validity is now within the new TTL counted from the send.
        #expect(after.validUntil <= sentAt! + .seconds(3))
    }

    @Test("a job removed while its acquire is in flight gives the lease straight back")
    func removalDuringAcquire() {
        var engine = LeaseEngine(
            settings: .init(owner: OwnerID(member: "a", incarnation: "i1")),
            jobs: [LeaseJob(name: "j", timing: LeaseTiming(ttl: .seconds(3)))], now: .zero)
        var acquireID: Int?
        for command in engine.poll(now: .zero).commands {
            if case .acquire(let id, _) = command { acquireID = id }
        }
        #expect(acquireID != nil)
        engine.updateJobs([], catalogDigest: nil, now: .milliseconds(1))
        engine.complete(
            .acquire(
                id: acquireID!,
                .success(
                    AcquireReply(redisNowMs: 1, outcomes: [.acquired(token: 9, takeover: .acquired, gapMs: nil)]))),
            now: .milliseconds(2))
        let released = engine.poll(now: .milliseconds(3)).commands.compactMap { command -> [ReleaseItem]? in
            if case .release(_, let items, _) = command { items } else { nil }
        }
        #expect(released.flatMap { $0 } == [ReleaseItem(job: "j", token: 9)])
        #expect(engine.lease(of: "j") == nil)
    }

    /// An engine for one job `j` (TTL 3 s) as member a.
    static func oneJobEngine() -> LeaseEngine {
        LeaseEngine(
            settings: .init(owner: OwnerID(member: "a", incarnation: "i1")),
            jobs: [LeaseJob(name: "j", timing: LeaseTiming(ttl: .seconds(3)))], now: .zero)
    }

    static func commands(_ engine: inout LeaseEngine, at now: Duration) -> [LeaseCommand] {
        engine.poll(now: now).commands
    }

    @Test("a job removed with a release of unknown outcome and added back never leads on the old token")
    func readdAfterUnsureRelease() {
        var engine = Self.oneJobEngine()
        var now: Duration = .zero
        for command in Self.commands(&engine, at: now) {
            if case .acquire(let id, _) = command {
                engine.complete(
                    .acquire(
                        id: id,
                        .success(
                            AcquireReply(
                                redisNowMs: 1, outcomes: [.acquired(token: 5, takeover: .acquired, gapMs: nil)]))),
                    now: now)
            }
        }
        #expect(engine.lease(of: "j")?.token == 5)
        now = .milliseconds(10)
        engine.updateJobs([], catalogDigest: nil, now: now)
        for command in Self.commands(&engine, at: now) {
            if case .release(let id, _, _) = command {
                // The release timed out: it may still reach Redis and delete `a:5` later.
                engine.complete(
                    .release(id: id, .failure(LeaseCallFailure(outcomeUnknown: true, message: "t"))), now: now)
            }
        }
        // A poll settles the removal before the job comes back.
        now = .milliseconds(15)
        _ = Self.commands(&engine, at: now)
        now = .milliseconds(20)
        engine.updateJobs([LeaseJob(name: "j", timing: LeaseTiming(ttl: .seconds(3)))], catalogDigest: nil, now: now)
        var releasedAgain = false
        for _ in 0..<50 {
            now += .milliseconds(100)
            for command in Self.commands(&engine, at: now) {
                switch command {
                case .acquire(let id, _):
                    // Redis still has a:5 (the late release has not landed) until a release of
                    // it succeeds; then the lease is free and a new token is issued.
                    let outcome: AcquireOutcome =
                        releasedAgain ? .acquired(token: 6, takeover: .acquired, gapMs: nil) : .alreadyHeld(token: 5)
                    engine.complete(
                        .acquire(id: id, .success(AcquireReply(redisNowMs: 1, outcomes: [outcome]))), now: now)
                case .release(let id, let items, _):
                    releasedAgain = releasedAgain || items == [ReleaseItem(job: "j", token: 5)]
                    engine.complete(.release(id: id, .success([true])), now: now)
                default: break
                }
            }
            #expect(engine.lease(of: "j")?.token != 5, "led again on the token a late release may delete")
        }
        #expect(releasedAgain)
        #expect(engine.lease(of: "j")?.token == 6)
    }

    @Test("a job removed while its lease may be ours sends no release by owner; added back, it takes the lease up")
    func removalWhileMaybeHolding() {
        var engine = Self.oneJobEngine()
        var now: Duration = .zero
        for command in Self.commands(&engine, at: now) {
            if case .acquire(let id, _) = command {
                // Unknown outcome: the lease may be ours.
                engine.complete(
                    .acquire(id: id, .failure(LeaseCallFailure(outcomeUnknown: true, message: "t"))), now: now)
            }
        }
        now = .milliseconds(10)
        engine.updateJobs([], catalogDigest: nil, now: now)
        let releases = Self.commands(&engine, at: now).filter { if case .release = $0 { true } else { false } }
        #expect(releases.isEmpty, "a delayed release by owner could delete a later lease of ours")
        engine.updateJobs([LeaseJob(name: "j", timing: LeaseTiming(ttl: .seconds(3)))], catalogDigest: nil, now: now)
        var acquired = false
        for _ in 0..<20 where !acquired {
            now += .milliseconds(100)
            for command in Self.commands(&engine, at: now) {
                if case .acquire(let id, _) = command {
                    engine.complete(
                        .acquire(id: id, .success(AcquireReply(redisNowMs: 1, outcomes: [.alreadyHeld(token: 7)]))),
                        now: now)
                    acquired = true
                }
            }
        }
        #expect(engine.lease(of: "j")?.token == 7, "the lease our late acquire took is taken up again")
    }

    @Test("a standby does not trust a live holder that no longer carries the job")
    func holderWithoutTheJobIsNotTrusted() {
        var a = Member(jobs: [CatalogPlacementTests.job("j")])
        let bDigest = "00000000000000bb"
        let b = a.member("b", catalog: bDigest)
        // b holds j (a lease it left behind); b's catalog no longer lists it.
        var attempts = 0
        let end = a.now + .seconds(12)
        while a.now < end {
            let polled = a.engine.poll(now: a.now)
            for command in polled.commands {
                switch command {
                case .renew(let id, let batch):
                    a.engine.complete(
                        .renew(
                            id: id,
                            .success(
                                RenewReply(
                                    redisNowMs: a.redisMs, renewed: batch.leases.map { _ in true },
                                    members: [b, a.member("a", catalog: batch.catalogDigest)]))), now: a.now)
                case .acquire(let id, let requests):
                    attempts += 1
                    a.engine.complete(
                        .acquire(
                            id: id,
                            .success(
                                AcquireReply(
                                    redisNowMs: a.redisMs,
                                    outcomes: requests.map { _ in .held(by: "b@x:1", pttlMs: 3_000) }))), now: a.now)
                case .fetchCatalog(let id, _):
                    a.engine.complete(.fetchCatalog(id: id, .success(["other"])), now: a.now)
                default: break
                }
            }
            a.now += .milliseconds(100)
            a.redisMs += 100
        }
        // Held for 3 s at each look: a looks again at each expiry (about 4 times in 12 s),
        // instead of trusting b's heartbeat for up to ten TTLs.
        #expect(attempts >= 3, "attempts: \(attempts)")
    }
}
