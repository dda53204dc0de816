import Foundation
import Leasehold
import LeaseholdTesting
import Testing

/// The checks run after the faults stop and a quiet period has passed (Docs/TESTING.md, "Multi-process fault suite").
struct FaultChecker {
    let fleet: FaultFleet
    let monitor: LeaseMonitor
    let quietStart: ContinuousClock.Instant
    let quietStartUs: Int64

    /// Longest a job may stay leaderless once faults have stopped: TTL + renew interval +
    /// generous slack for loaded CI cores.
    static let leaderlessBound: Duration = FaultFleet.ttl + FaultFleet.renewEvery + .seconds(5)
    struct Grant {
        var job: String
        var token: UInt64
        var member: String
        var atUs: Int64
    }

    struct Summary {
        var accepted = 0
        var rejected = 0
        var rejectedAfterWriterKnew = 0
        var rejectedBeforeWriterKnew = 0
        var staleAcceptedOnWake = 0
        var grants = 0
        var maxGapDuringFaults: (job: String, length: Duration)?
        var maxGapQuiet: (job: String, length: Duration)?
    }

    /// Every leadership grant, from the members' own "acquired leadership" lines (logged after
    /// the acquire reply, so the time is at or after the grant in Redis).
    func grants() -> [String: [Grant]] {
        var result: [String: [Grant]] = [:]
        for process in fleet.allProcesses {
            for line in process.lines where line.message == "acquired leadership" {
                guard let job = line.job, let token = line.token, let at = logTimeMicros(line) else { continue }
                result[job, default: []].append(Grant(job: job, token: token, member: process.name, atUs: at))
            }
        }
        return result.mapValues { $0.sorted { $0.atUs < $1.atUs } }
    }

    /// When each leadership (job, token) was first given up, as its member logged it.
    func endings() -> [String: [UInt64: Int64]] {
        var result: [String: [UInt64: Int64]] = [:]
        let ends: Set<String> = ["lost leadership", "released leadership", "handed off leadership"]
        for process in fleet.allProcesses {
            for line in process.lines where ends.contains(line.message ?? "") {
                guard let job = line.job, let token = line.token, let at = logTimeMicros(line) else { continue }
                result[job, default: [:]][token] = min(result[job]?[token] ?? .max, at)
            }
        }
        return result
    }

    /// A job frozen with its whole member (vm-pause) and woken before its supervisor may write
    /// with its old token until the supervisor kills it: if the store has not yet seen the
    /// newer token, that write is accepted. Downstream fencing cannot refuse what it has not
    /// seen; counted, and bounded to one second after the supervisor's wake.
    func isWakeOfFrozenMember(_ write: FencedResource.Write) -> Bool {
        fleet.faults.contains {
            $0.kind == .vmPause && $0.member == write.member && write.atUs >= $0.startedUs
                && write.atUs <= $0.endedUs + 1_000_000
        }
    }

    func run() async throws -> Summary {
        var summary = Summary()
        let grants = grants()
        let endings = endings()
        summary.grants = grants.values.map(\.count).reduce(0, +)

        for job in FaultFleet.jobs {
            let (accepted, rejected) = try await fleet.writes(job)
            let jobGrants = grants[job] ?? []
            summary.accepted += accepted.count
            summary.rejected += rejected.count

            // (1a) The resource's own rule, re-checked: accepted tokens never go down.
            for (previous, next) in zip(accepted, accepted.dropFirst()) where next.token < previous.token {
                fleet.violation("\(job): accepted \(next) after \(previous)")
            }
            // (1b) Every rejected write came from a superseded leadership: a newer token had
            // been granted by the time of the write (100 ms for log-timestamp resolution).
            for write in rejected {
                guard jobGrants.contains(where: { $0.token > write.token && $0.atUs <= write.atUs + 100_000 }) else {
                    fleet.violation(
                        "\(job): rejected write from a leadership that was not superseded: \(write); grants \(jobGrants.map { "\($0.token)@\($0.atUs)" })"
                    )
                    continue
                }
                if let ended = endings[job]?[write.token], ended <= write.atUs {
                    summary.rejectedAfterWriterKnew += 1
                } else {
                    summary.rejectedBeforeWriterKnew += 1
                }
            }
            // (1c) No write of an older leadership was accepted after a newer one was granted:
            // the old leader's shell job must be dead by then (its supervisor kills it at
            // validity, which ends before the lease can expire). A lease store that lost its
            // data is no exception: the restart quarantine keeps every lease free until the old
            // leaders' validity ended (faults come one at a time, so no member starts afresh
            // inside the loss, the one case the quarantine cannot cover).
            for write in accepted {
                guard let newer = jobGrants.first(where: { $0.token > write.token && $0.atUs + 2_000 < write.atUs })
                else { continue }
                if isWakeOfFrozenMember(write) {
                    summary.staleAcceptedOnWake += 1
                } else {
                    fleet.violation(
                        "\(job): write \(write) accepted \((write.atUs - newer.atUs) / 1000) ms after token \(newer.token) was granted to \(newer.member) at \(newer.atUs)"
                    )
                }
            }
            // Liveness: the job kept being written to after the faults stopped.
            let lateWrites = accepted.filter {
                $0.atUs > quietStartUs + Int64(milliseconds(Self.leaderlessBound)) * 1000
            }
            if lateWrites.isEmpty {
                fleet.violation("\(job): no accepted write in the quiet period after \(Self.leaderlessBound)")
            }
        }

        // (2) Leaderless gaps: bounded once faults stopped; every job led at the end.
        summary.maxGapDuringFaults = monitor.longestGap()
        summary.maxGapQuiet = monitor.longestGap(since: quietStart)
        if let gap = summary.maxGapQuiet, gap.length > Self.leaderlessBound {
            fleet.violation(
                "\(gap.job) leaderless for \(gap.length) after faults stopped (bound \(Self.leaderlessBound))")
        }
        let final = try await fleet.leaseValues()
        for (job, holder) in final where holder == nil { fleet.violation("\(job) has no leader at the end") }

        // (3) No member crashed: all current members run; ended ones exited as expected.
        await fleet.checkProcesses("end")
        for member in fleet.currentMembers where !member.isRunning {
            fleet.violation("\(member.name) is not running at the end\n\(member.logTail(30))")
        }
        // (4) is checked at each SIGTERM (FaultInjector.inject(.sigterm)).
        return summary
    }
}
