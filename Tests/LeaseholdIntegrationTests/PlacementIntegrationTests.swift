import LeaseholdTesting
import RedisClient
import Testing

@testable import Leasehold

/// Placement end to end: in-process members against a private redis-server, with the
/// daemon's default ratios (standby delay = renew interval, stability = lease).
@Suite("Placement against redis-server", .serialized, .timeLimit(.minutes(4)))
struct PlacementIntegrationTests {
    /// Handoffs and graceful leaves must be far quicker than a crash failover (one lease).
    static let handoffGapBound: Duration = .milliseconds(1500)
    /// A crash is noticed when the lease expires; the preferred survivor takes it at once.
    static var crashFailoverBound: Duration { PlacementTiming.ttl * 2 + PlacementTiming.standbyDelay }
    static let convergeLimit: Duration = .seconds(60)

    @Test func joinMovesOnlyPreferredJobsLeaveAndCrashSpreadPerRendezvous() async throws {
        let server = try await RedisServerProcess()
        let recorder = PlacementRecorder()
        let jobs = PlacementTiming.jobs(30)
        let names = jobs.map(\.name)
        try await withMembers(
            ["m1", "m2", "m3"], redis: PlacementMember.redis(server), jobs: jobs,
            options: { PlacementMember.options($0, server: server, recorder: recorder) }
        ) { members in
            let three = members.map { RendezvousMember(name: $0.name) }
            let initial = try await PlacementHarness.waitForConvergence(
                names, members: three, server: server, recorder: recorder, within: Self.convergeLimit)
            print(
                "PLACEMENT-FIGURES integration: 30 jobs over 3 members: \(PlacementHarness.shares(initial).sorted { $0.key < $1.key })"
            )

            // A 4th member joins: exactly the jobs it wins move, each by a handoff.
            var mark = recorder.acquisitions.count
            let joinedAt = ContinuousClock.now
            let won = try await withMember(
                "m4", redis: PlacementMember.redis(server), jobs: jobs,
                options: PlacementMember.options("m4", server: server, recorder: recorder)
            ) { m4 in
                let four = three + [RendezvousMember(name: "m4")]
                let afterJoin = try await PlacementHarness.waitForConvergence(
                    names, members: four, server: server, recorder: recorder, within: Self.convergeLimit)
                let convergedIn = ContinuousClock.now - joinedAt
                let won = Set(names.filter { afterJoin[$0] == "m4" })
                #expect(Set(names.filter { afterJoin[$0] != initial[$0] }) == won)
                let joinMoves = recorder.acquisitions(since: mark)
                #expect(
                    joinMoves.count == won.count,
                    "only the jobs m4 wins are acquired, once each: \(joinMoves.map { "\($0.job)→\($0.member)" })")
                #expect(Set(joinMoves.map(\.job)) == won)
                for move in joinMoves {
                    #expect(move.member == "m4" && move.takeover == .acquired, "\(move)")
                    #expect(
                        (move.gapMs ?? .max) <= Self.handoffGapBound.wholeMilliseconds,
                        "handoff gap of \(move.job): \(move.gapMs as Any) ms")
                }
                if joinMoves.count != won.count { print(recorder.timeline.suffix(80).joined(separator: "\n")) }
                let joinGaps = joinMoves.compactMap(\.gapMs)
                print(
                    "PLACEMENT-FIGURES integration: join of m4 moved \(won.count)/30 jobs (rendezvous predicts \(won.count)); converged in \(convergedIn); handoff gaps ms max=\(joinGaps.max() ?? -1) all=\(joinGaps.sorted())"
                )

                // m4 leaves gracefully: its jobs go straight back to their rendezvous choice.
                mark = recorder.acquisitions.count
                recorder.note("test", "m4 leaves")
                await m4.stop()
                return won
            }
            let leftAt = ContinuousClock.now
            let afterLeave = try await PlacementHarness.waitForConvergence(
                names, members: three, server: server, recorder: recorder, within: Self.convergeLimit)
            #expect(afterLeave == initial)
            let leaveMoves = recorder.acquisitions(since: mark)
            #expect(
                leaveMoves.count == won.count && Set(leaveMoves.map(\.job)) == won,
                "\(leaveMoves.map { "\($0.job)→\($0.member)" })")
            for move in leaveMoves {
                #expect(move.member == initial[move.job], "\(move)")
                #expect(
                    (move.gapMs ?? .max) <= Self.handoffGapBound.wholeMilliseconds,
                    "leave gap of \(move.job): \(move.gapMs as Any) ms")
            }
            let leaveGaps = leaveMoves.compactMap(\.gapMs)
            print(
                "PLACEMENT-FIGURES integration: graceful leave of m4 moved \(leaveMoves.count) jobs in \(ContinuousClock.now - leftAt); gaps ms max=\(leaveGaps.max() ?? -1)"
            )

            // m2 crashes (no release): only its jobs move, spread per rendezvous over m1 and m3.
            mark = recorder.acquisitions.count
            let orphaned = Set(names.filter { initial[$0] == "m2" })
            let crashedAt = ContinuousClock.now
            recorder.note("test", "crash m2")
            await members[1].crash()
            let survivors = [RendezvousMember(name: "m1"), RendezvousMember(name: "m3")]
            let afterCrash = try await PlacementHarness.waitForConvergence(
                names, members: survivors, server: server, recorder: recorder, within: Self.convergeLimit)
            #expect(Set(names.filter { afterCrash[$0] != initial[$0] }) == orphaned)
            let crashMoves = recorder.acquisitions(since: mark)
            #expect(
                crashMoves.count == orphaned.count && Set(crashMoves.map(\.job)) == orphaned,
                "\(crashMoves.map { "\($0.job)→\($0.member)" })")
            if crashMoves.count != orphaned.count { print(recorder.timeline.suffix(60).joined(separator: "\n")) }
            var worstFailover: Duration = .zero
            for move in crashMoves {
                #expect(move.member == afterCrash[move.job] && move.takeover == .expiredTakeover, "\(move)")
                worstFailover = max(worstFailover, move.at - crashedAt)
            }
            #expect(worstFailover <= Self.crashFailoverBound)
            print(
                "PLACEMENT-FIGURES integration: crash of m2 moved \(crashMoves.count) jobs (it held \(orphaned.count)): \(PlacementHarness.shares(afterCrash).sorted { $0.key < $1.key }); slowest failover \(worstFailover) after the crash (lease \(PlacementTiming.ttl))"
            )

            // Settled: nothing moves any more over a stability window and a tick.
            let settled = recorder.acquisitions.count
            let quietUntil = ContinuousClock.now + PlacementTiming.stability + PlacementTiming.timing.renewEvery
            while ContinuousClock.now < quietUntil, recorder.acquisitions.count == settled {
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(
                recorder.acquisitions(since: settled).isEmpty,
                "moved after settling: \(recorder.acquisitions(since: settled))")

            await members[0].stop()
            await members[2].stop()
        }
        try await Self.checkFencing(names, recorder: recorder, server: server)
    }

    @Test func memberJoiningAndLeavingWithinStabilityMovesNothing() async throws {
        let server = try await RedisServerProcess()
        let recorder = PlacementRecorder()
        let jobs = PlacementTiming.jobs(30, prefix: "flap")
        let names = jobs.map(\.name)
        try await withMembers(
            ["a", "b", "c"], redis: PlacementMember.redis(server), jobs: jobs,
            options: { PlacementMember.options($0, server: server, recorder: recorder) }
        ) { members in
            let initial = try await PlacementHarness.waitForConvergence(
                names, members: members.map { RendezvousMember(name: $0.name) }, server: server, recorder: recorder,
                within: Self.convergeLimit)
            let mark = recorder.acquisitions.count
            let handoffsBefore = recorder.handoffCount

            let started = ContinuousClock.now
            try await withMember(
                "d", redis: PlacementMember.redis(server), jobs: jobs,
                options: PlacementMember.options("d", server: server, recorder: recorder)
            ) { flapper in
                // Leave as soon as another member has seen it (a graceful leave ends its heartbeat at
                // once, so leaving before anyone looked would prove nothing).
                _ = try await eventually("another member sees the new one", within: .seconds(20)) {
                    members.contains { $0.manager.liveMembers.contains { $0.name == "d" } } ? true : nil
                }
                await flapper.stop()
            }
            let lived = ContinuousClock.now - started
            let wouldWin = Rendezvous.assignment(
                jobs: names, members: (members.map(\.name) + ["d"]).map { RendezvousMember(name: $0) }
            ).values.filter { $0 == "d" }.count
            // Watch until its heartbeat has surely expired (2 renew intervals), plus the
            // stability window and a tick: any handoff would have started by then.
            let watchUntil = ContinuousClock.now + PlacementTiming.timing.renewEvery * 3 + PlacementTiming.stability
            while ContinuousClock.now < watchUntil {
                #expect(recorder.handoffCount == handoffsBefore, "a handoff started: \(recorder.handoffs)")
                #expect(try await PlacementHarness.leaseHolders(names, server: server) == initial)
                if recorder.handoffCount != handoffsBefore { break }
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(recorder.acquisitions(since: mark).isEmpty)
            let sawIt = recorder.timeline.filter {
                $0.contains("membersChanged") && $0.contains("\"d\"") && !$0.contains(" d: ")
            }
            #expect(!sawIt.isEmpty, "the other members never saw d: the test proved nothing")
            print(
                "PLACEMENT-FIGURES integration: member alive \(lived) (would win \(wouldWin)/30) moved \(recorder.acquisitions(since: mark).count) jobs"
            )

            for member in members { await member.stop() }
        }
        try await Self.checkFencing(names, recorder: recorder, server: server)
    }

    @Test func weightsOneToTwoGiveSharesOfOneToTwo() async throws {
        let server = try await RedisServerProcess()
        let recorder = PlacementRecorder()
        let jobs = PlacementTiming.jobs(60, prefix: "w")
        let names = jobs.map(\.name)
        try await withMembers(
            ["light", "heavy"], redis: PlacementMember.redis(server), jobs: jobs,
            options: { PlacementMember.options($0, weight: $0 == "heavy" ? 2 : 1, server: server, recorder: recorder) }
        ) { _ in
            let weighted = [RendezvousMember(name: "light", weight: 1), RendezvousMember(name: "heavy", weight: 2)]
            let holders = try await PlacementHarness.waitForConvergence(
                names, members: weighted, server: server, recorder: recorder, within: Self.convergeLimit)
            let counts = PlacementHarness.shares(holders)
            let heavyShare = Double(counts["heavy", default: 0]) / Double(names.count)
            #expect(heavyShare > 0.55 && heavyShare < 0.78, "heavy share \(heavyShare)")
            // The check below needs the leaders to have written: convergence can beat the writer.
            try await eventually("a fenced write by a leader") { recorder.acceptedWrites > 0 }
            print(
                "PLACEMENT-FIGURES integration: weights 1:2 over 60 jobs: light=\(counts["light", default: 0]) heavy=\(counts["heavy", default: 0]) (heavy share \(heavyShare), ideal 0.667)"
            )
        }
        try await Self.checkFencing(names, recorder: recorder, server: server)
    }

    @Test func duplicateMemberNameIsReported() async throws {
        let server = try await RedisServerProcess()
        let recorder = PlacementRecorder()
        let jobs = PlacementTiming.jobs(2, prefix: "dup")
        try await withMember(
            "twin", redis: PlacementMember.redis(server), jobs: jobs,
            options: PlacementMember.options("twin", incarnation: "aaaa0001", server: server, recorder: recorder)
        ) { _ in
            try await withMember(
                "twin", redis: PlacementMember.redis(server), jobs: jobs,
                options: PlacementMember.options("twin", incarnation: "bbbb0002", server: server, recorder: recorder)
            ) { _ in
                let seen = try await eventually("a duplicateMember event", within: .seconds(30)) {
                    recorder.duplicates.isEmpty ? nil : recorder.duplicates
                }
                try await eventually("a fenced write by a leader") { recorder.acceptedWrites > 0 }
                for report in seen {
                    #expect(report.member == "twin" && ["aaaa0001", "bbbb0002"].contains(report.incarnation))
                }
            }
        }
        try await Self.checkFencing(jobs.map(\.name), recorder: recorder, server: server)
    }

    /// No job ever had two valid leaders: no valid leader's fenced write was rejected, and
    /// accepted tokens only grew, each written by one member.
    static func checkFencing(_ jobs: [String], recorder: PlacementRecorder, server: RedisServerProcess) async throws {
        let split = recorder.rejections.filter(\.stillValid)
        #expect(split.isEmpty, "valid leaders rejected: \(split)")
        #expect(try await FencedResource.audit(jobs: jobs, server: server) == [])
        #expect(recorder.acceptedWrites > 0)
        let losses = recorder.losses
        print(
            "PLACEMENT-FIGURES fencing: accepted=\(recorder.acceptedWrites) rejected(stale, after handoff)=\(recorder.rejections.count) rejected(valid leader)=\(split.count) losses=\(losses.map { "\($0.job)@\($0.member):\($0.reason.rawValue)" })"
        )
    }
}
