import Foundation
import Leasehold
import LeaseholdTesting
import RedisClient
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Picks and injects faults one at a time (each is healed before the next starts), from a
/// seeded generator: `LEASEHOLD_FAULT_SEED` replays a schedule (up to timing: the processes
/// themselves are not deterministic).
struct FaultInjector {
    let fleet: FaultFleet
    var rng: SeededRNG
    let kinds: [FaultKind]
    private var round: [FaultKind] = []

    init(fleet: FaultFleet, seed: UInt64, kinds: [FaultKind]) {
        self.fleet = fleet
        rng = SeededRNG(seed: seed)
        self.kinds = kinds
    }

    /// Kinds are drawn as shuffled rounds (every kind once per round, random order), so even a
    /// short run covers them all.
    mutating func nextKind() -> FaultKind {
        if round.isEmpty { round = kinds.shuffled(using: &rng) }
        return round.removeFirst()
    }
    var roundComplete: Bool { round.isEmpty }

    mutating func millis(_ range: ClosedRange<Int>) -> Duration { .milliseconds(Int.random(in: range, using: &rng)) }

    /// A member that leads at least one job (the interesting victim), else any member.
    mutating func pickLeader() async -> DaemonProcess? {
        let leaders = await fleet.leaders()
        let running = fleet.currentMembers.filter(\.isRunning).sorted { $0.name < $1.name }
        let leading = running.filter { ownerID($0).map { leaders[$0] != nil } ?? false }
        let pool = leading.isEmpty ? running : leading
        guard !pool.isEmpty else { return nil }
        return pool[Int.random(in: 0..<pool.count, using: &rng)]
    }

    /// Waits (bounded, not asserted) until every job has a holder, so each fault starts from
    /// a working fleet; then a short random pause.
    mutating func settle() async {
        let deadline = ContinuousClock.now + .seconds(15)
        while ContinuousClock.now < deadline {
            if let values = try? await fleet.leaseValues(), values.values.allSatisfy({ $0 != nil }) { break }
            try? await Task.sleep(for: .milliseconds(100))
        }
        try? await Task.sleep(for: millis(300...1500))
    }

    /// Injects one fault of `kind` and heals it.
    mutating func inject(_ kind: FaultKind) async throws {
        let started = wallMicros()
        var detail = ""
        var member: String?
        var resumedUs: Int64?
        switch kind {
        case .kill9:
            guard let victim = await pickLeader() else { return }
            let leads = await fleet.leads(victim)
            fleet.expectEnd(victim, code: 128 + SIGKILL)
            victim.signal(SIGKILL)
            _ = try await victim.waitForExit(within: .seconds(20))
            let down = millis(500...3000)
            try await Task.sleep(for: down)
            try fleet.start(victim.name)
            detail = "\(victim.name) leading \(leads.sorted()), restarted after \(milliseconds(down)) ms"

        case .sigstop:
            guard let victim = await pickLeader() else { return }
            let leads = await fleet.leads(victim)
            let pause = FaultFleet.ttl + millis(500...2000)
            victim.signal(SIGSTOP)
            try? await Task.sleep(for: pause)
            victim.signal(SIGCONT)
            member = victim.name
            detail = "\(victim.name) (daemon only) leading \(leads.sorted()) for \(milliseconds(pause)) ms"

        case .vmPause:
            // The whole member freezes, as in a VM pause: the daemon, its supervisors and the
            // job processes. On wake the jobs are resumed first (the adversarial order): a job
            // may write with its old token before anything can stop it; only fencing saves us.
            guard let victim = await pickLeader() else { return }
            let leads = await fleet.leads(victim)
            let pause = FaultFleet.ttl + millis(500...2000)
            victim.signal(SIGSTOP)
            var frozen: Set<Int32> = []
            for _ in 0..<3 {  // again, for processes forked while we were stopping the others
                for pid in descendants(of: victim.pid) where !frozen.contains(pid) {
                    kill(pid, SIGSTOP)
                    frozen.insert(pid)
                }
            }
            try? await Task.sleep(for: pause)
            // The job processes wake first; the daemon and its supervisors (the daemon's direct
            // children; jobs are the supervisors' children) get the CPU a little later, as on a
            // loaded host: in between, the jobs may act on their old token.
            let supervisors = Set(frozen.filter { parentPID(of: $0) == victim.pid })
            resumedUs = wallMicros()
            for pid in frozen where !supervisors.contains(pid) { kill(pid, SIGCONT) }
            let lag = millis(300...800)
            try? await Task.sleep(for: lag)
            for pid in supervisors { kill(pid, SIGCONT) }
            victim.signal(SIGCONT)
            member = victim.name
            detail =
                "\(victim.name) leading \(leads.sorted()) with \(frozen.count) descendants for \(milliseconds(pause)) ms, jobs woken \(milliseconds(lag)) ms before their supervisors"

        case .sigterm:
            guard let victim = await pickLeader() else { return }
            let leads = await fleet.leads(victim)
            fleet.expectEnd(victim, code: 0)
            let termAt = ContinuousClock.now
            victim.signal(SIGTERM)
            let code = try await victim.waitForExit(within: .seconds(30))
            let exitedAfter = ContinuousClock.now - termAt
            // Check 4: right after a graceful exit, none of its leases may remain.
            do {
                // By owner id: a previous incarnation's leases (say, after a kill -9) may still
                // be there, legitimately, until they expire.
                let owner = ownerID(victim)
                let leftovers = try await fleet.leaseValues().compactMap { job, holder in
                    holder.flatMap { $0.owner.description == owner ? "\(job)=\($0)" : nil }
                }
                if owner == nil {
                    fleet.note("sigterm of \(victim.name): no 'member starting' line, leases not checked")
                }
                if !leftovers.isEmpty {
                    fleet.violation(
                        "\(victim.name) exited after SIGTERM (code \(code)) but still holds \(leftovers)\n\(victim.logTail(30))"
                    )
                }
            } catch {
                fleet.note("sigterm of \(victim.name): could not read leases after exit: \(error)")
            }
            let down = millis(300...2000)
            try await Task.sleep(for: down)
            try fleet.start(victim.name)
            detail =
                "\(victim.name) leading \(leads.sorted()) exited \(code) after \(milliseconds(exitedAfter)) ms, restarted after \(milliseconds(down)) ms"

        case .redisRestartNoPersistence:
            await fleet.leaseRedis.kill()
            try? FileManager.default.removeItem(atPath: fleet.leaseRedis.directory + "/appendonlydir")
            try await fleet.leaseRedis.restart()
            detail = "crash, data deleted, restart"

        case .redisRestartAOF:
            await fleet.leaseRedis.kill()
            let down = millis(0...1500)
            try await Task.sleep(for: down)
            try await fleet.leaseRedis.restart()
            detail = "crash, down \(milliseconds(down)) ms, restart from AOF (appendfsync always)"

        case .clientPause:
            _ = try await fleet.leaseCommand(["CLIENT", "PAUSE", "3000", "ALL"])
            try await Task.sleep(for: .milliseconds(3100))
            detail = "CLIENT PAUSE 3000 ALL"

        case .proxyDelay, .proxyDrop, .proxyBlackHole:
            // Half the time one leader is cut off alone (the others and the test still reach
            // Redis: a partitioned leader), else every member at once.
            let target: String? = Bool.random(using: &rng) ? await pickLeader()?.name : nil
            var leads: [String] = []
            if let target, let process = fleet.current(target) { leads = await fleet.leads(process) }
            let mode: FaultProxy.Mode
            let length: Duration
            switch kind {
            case .proxyDelay:
                mode = .delay(milliseconds: Int.random(in: 100...700, using: &rng))
                length = millis(2000...5000)
            case .proxyDrop:
                mode = .drop
                length = millis(1000...4000)
            default:
                mode = .blackHole
                length = millis(1500...5000)
            }
            fleet.setProxies(mode, only: target)
            try await Task.sleep(for: length)
            fleet.setProxies(.pass, only: target)
            member = target
            detail =
                "\(mode) for \(milliseconds(length)) ms, "
                + (target.map { "\($0) only (leading \(leads.sorted()))" } ?? "all members")

        case .wrongPassword:
            // The members cannot reach the server while it restarts (proxy drops), so none
            // connects before the password is set; then they see NOAUTH until a second restart
            // brings the server back without a password. (CONFIG SET right after the start
            // stands in for `--requirepass`: RedisServerProcess's readiness probe has no password.)
            fleet.setProxies(.drop)
            await fleet.leaseRedis.kill()
            try await fleet.leaseRedis.restart()
            let password = "wrong-\(UInt32.random(in: 0 ... .max, using: &rng))"
            _ = try await fleet.leaseCommand(["CONFIG", "SET", "requirepass", password])
            fleet.leasePassword = password
            fleet.setProxies(.pass)
            let length = millis(2000...4000)
            try await Task.sleep(for: length)
            fleet.setProxies(.drop)
            await fleet.leaseRedis.kill()
            try await fleet.leaseRedis.restart()
            fleet.leasePassword = nil
            fleet.setProxies(.pass)
            detail = "requirepass for \(milliseconds(length)) ms (members have none), restarted without"
        }
        fleet.record(
            FaultRecord(
                kind: kind, detail: detail, startedUs: resumedUs ?? started, endedUs: wallMicros(), member: member))
        faultLog("fault \(fleet.faults.count): \(kind.rawValue) \(detail)")
        await fleet.checkProcesses("after \(kind.rawValue)")
    }
}
