import Leasehold
import Testing

struct RendezvousTests {
    private static func members(_ count: Int, weight: Double = 1) -> [RendezvousMember] {
        (0..<count).map { RendezvousMember(name: "member-\($0)", weight: weight) }
    }

    // Sample size for the statistical properties. With 1,000 jobs over 10 members the
    // expected max/mean is itself ≈1.15 (binomial σ ≈ 9.5 %): even SHA-256 exceeds 1.15 for
    // about half of all naming schemes, so a 1,000-job test would pass or fail by the luck
    // of the job names. At 10,000 jobs σ ≈ 3 % and the same bounds are meaningful.
    private static let jobs = (0..<10_000).map { "job-\($0)" }

    @Test func hashVectorsArePinned() {
        // Computed independently (Python); a change here reshuffles every fleet.
        #expect(StableHash.hash64([UInt8]()) == 0xf52a_15e9_a9b5_e89b)
        #expect(StableHash.hash64("a".utf8) == 0x02c0_bdbf_4814_20f8)
        #expect(StableHash.hash64("leasehold".utf8) == 0x5dda_9e23_76c8_ff5e)
        #expect(StableHash.hash64(Array("job\u{0}member".utf8)) == 0xe8cd_daca_6d71_0157)
        #expect(Rendezvous.unitHash(job: "backup", member: "node-1") == 0.8462947321126477)
    }

    @Test func unitHashStaysStrictlyInsideTheUnitInterval() {
        for job in Self.jobs.prefix(2_000) {
            let h = Rendezvous.unitHash(job: job, member: "m")
            #expect(h > 0 && h < 1)
        }
        // The separator keeps concatenation-equal pairs apart.
        #expect(Rendezvous.unitHash(job: "ab", member: "c") != Rendezvous.unitHash(job: "a", member: "bc"))
    }

    @Test func equalMembersGetBalancedShares() {
        let assignment = Rendezvous.assignment(jobs: Self.jobs, members: Self.members(10))
        #expect(assignment.count == Self.jobs.count)
        var counts: [String: Int] = [:]
        for member in assignment.values { counts[member, default: 0] += 1 }
        #expect(counts.count == 10)
        let mean = Double(Self.jobs.count) / 10
        #expect(Double(counts.values.max() ?? 0) / mean <= 1.15)
    }

    @Test func sharesFollowWeights() {
        let members = [RendezvousMember(name: "light", weight: 1), RendezvousMember(name: "heavy", weight: 2)]
        let assignment = Rendezvous.assignment(jobs: Self.jobs, members: members)
        let heavy = Double(assignment.values.filter { $0 == "heavy" }.count) / Double(Self.jobs.count)
        #expect(abs(heavy - 2.0 / 3.0) <= 0.1 * (2.0 / 3.0))
        #expect(abs((1 - heavy) - 1.0 / 3.0) <= 0.1 * (1.0 / 3.0))
    }

    @Test func addingAMemberMovesAboutOneNthAllToIt() {
        let before = Rendezvous.assignment(jobs: Self.jobs, members: Self.members(10))
        let after = Rendezvous.assignment(jobs: Self.jobs, members: Self.members(11))
        let moved = Self.jobs.filter { before[$0] != after[$0] }
        #expect(!moved.isEmpty)
        #expect(Double(moved.count) <= 1.2 * Double(Self.jobs.count) / 11)
        #expect(moved.allSatisfy { after[$0] == "member-10" })
    }

    @Test func removingAMemberMovesOnlyItsJobs() {
        let all = Self.members(10)
        let before = Rendezvous.assignment(jobs: Self.jobs, members: all)
        let after = Rendezvous.assignment(jobs: Self.jobs, members: all.filter { $0.name != "member-3" })
        for job in Self.jobs {
            if before[job] == "member-3" {
                #expect(after[job] != "member-3" && after[job] != nil)
            } else {
                #expect(after[job] == before[job])
            }
        }
    }

    @Test func memberOrderDoesNotMatter() {
        let members = Self.members(7) + [RendezvousMember(name: "big", weight: 3)]
        let reference = Rendezvous.assignment(jobs: Self.jobs, members: members)
        let rotated = Array(members[3...] + members[..<3])
        #expect(Rendezvous.assignment(jobs: Self.jobs, members: members.reversed()) == reference)
        #expect(Rendezvous.assignment(jobs: Self.jobs, members: rotated) == reference)
    }

    @Test func tiesAndIneligibleMembers() {
        // A duplicated entry scores the same as itself; the pick must not depend on order.
        let listed = [
            RendezvousMember(name: "b", weight: 1), RendezvousMember(name: "a", weight: 1),
            RendezvousMember(name: "b", weight: 1),
        ]
        let pick = Rendezvous.preferred(job: "j", among: listed)
        #expect(pick != nil)
        #expect(pick == Rendezvous.preferred(job: "j", among: listed.reversed()))
        #expect(Rendezvous.preferred(job: "j", among: []) == nil)
        let zero = [RendezvousMember(name: "z", weight: 0), RendezvousMember(name: "n", weight: .nan)]
        #expect(Rendezvous.preferred(job: "j", among: zero) == nil)
        #expect(Rendezvous.preferred(job: "j", among: zero + [RendezvousMember(name: "ok", weight: 0.1)]) == "ok")
        #expect(Rendezvous.score(job: "j", member: RendezvousMember(name: "z", weight: -1)) == -.infinity)
    }
}
