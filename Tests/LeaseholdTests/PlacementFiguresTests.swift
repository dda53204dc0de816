import Testing

@testable import Leasehold

/// Balance and movement figures of rendezvous placement, printed for Docs/PLACEMENT.md.
/// Reproduce: `swift test --filter PlacementFigures 2>&1 | grep PLACEMENT-FIGURES`.
/// Deterministic: the hash is pinned, job and member names are fixed.
@Suite("PlacementFigures")
struct PlacementFiguresTests {
    static func members(_ count: Int) -> [RendezvousMember] {
        (1...count).map { RendezvousMember(name: "member-\($0)") }
    }

    static func jobs(_ count: Int) -> [String] { (0..<count).map { "job-\($0)" } }

    static func counts(_ assignment: [String: String], _ members: [RendezvousMember]) -> [Int] {
        var counts = Dictionary(uniqueKeysWithValues: members.map { ($0.name, 0) })
        for member in assignment.values { counts[member, default: 0] += 1 }
        return members.map { counts[$0.name, default: 0] }
    }

    static func format(_ value: Double) -> String {
        let scaled = (value * 1000).rounded() / 1000
        return "\(scaled)"
    }

    @Test(arguments: [3, 4, 5, 10])
    func balanceAndMovesOnJoinAndLeave(memberCount: Int) {
        let jobs = Self.jobs(10_000)
        let before = Self.members(memberCount)
        let assigned = Rendezvous.assignment(jobs: jobs, members: before)
        let counts = Self.counts(assigned, before)
        let mean = Double(jobs.count) / Double(memberCount)
        let maxRatio = Double(counts.max()!) / mean
        let minRatio = Double(counts.min()!) / mean
        #expect(maxRatio < 1.1 && minRatio > 0.9)

        // Join: only jobs the newcomer wins move.
        let joined = before + [RendezvousMember(name: "member-new")]
        let afterJoin = Rendezvous.assignment(jobs: jobs, members: joined)
        let joinMoved = jobs.filter { assigned[$0] != afterJoin[$0] }
        #expect(joinMoved.allSatisfy { afterJoin[$0] == "member-new" })

        // Leave (member-1): only its jobs move.
        let left = Array(before.dropFirst())
        let afterLeave = Rendezvous.assignment(jobs: jobs, members: left)
        let leaveMoved = jobs.filter { assigned[$0] != afterLeave[$0] }
        #expect(leaveMoved.allSatisfy { assigned[$0] == "member-1" })
        #expect(leaveMoved.count == counts[0])

        print(
            "PLACEMENT-FIGURES rendezvous: 10000 jobs, \(memberCount) members: max/mean=\(Self.format(maxRatio)) min/mean=\(Self.format(minRatio)); "
                + "join moves \(joinMoved.count) (\(Self.format(Double(joinMoved.count) / 100))%, ideal \(Self.format(100.0 / Double(memberCount + 1)))%, all to the newcomer); "
                + "leave moves \(leaveMoved.count) (\(Self.format(Double(leaveMoved.count) / 100))%, ideal \(Self.format(100.0 / Double(memberCount)))%, all from the leaver)"
        )
    }

    @Test func weightsOneToTwo() {
        let jobs = Self.jobs(10_000)
        let members = [RendezvousMember(name: "light", weight: 1), RendezvousMember(name: "heavy", weight: 2)]
        let counts = Self.counts(Rendezvous.assignment(jobs: jobs, members: members), members)
        let heavyShare = Double(counts[1]) / Double(jobs.count)
        #expect(abs(heavyShare - 2.0 / 3.0) < 0.02)
        print(
            "PLACEMENT-FIGURES rendezvous: 10000 jobs, weights 1:2: light=\(counts[0]) heavy=\(counts[1]) ratio=\(Self.format(Double(counts[1]) / Double(counts[0])))"
        )
    }

    /// The exact case of the integration test: 30 jobs `job-N`, members m1…m3, then m4.
    @Test func integrationScenario() {
        let jobs = Self.jobs(30)
        let three = ["m1", "m2", "m3"].map { RendezvousMember(name: $0) }
        let four = three + [RendezvousMember(name: "m4")]
        let before = Rendezvous.assignment(jobs: jobs, members: three)
        let after = Rendezvous.assignment(jobs: jobs, members: four)
        let moved = jobs.filter { before[$0] != after[$0] }
        #expect(moved.allSatisfy { after[$0] == "m4" })
        print(
            "PLACEMENT-FIGURES rendezvous: 30 jobs over m1..m3: \(Self.counts(before, three)); with m4: \(Self.counts(after, four)); moved \(moved.count)"
        )
    }
}
