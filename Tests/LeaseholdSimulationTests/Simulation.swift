import Leasehold

/// How a family of schedules is generated. Every figure is drawn per schedule from the seed;
/// the knobs here exist so tests can break the configuration on purpose.
struct SimConfig: Sendable {
    /// Clock-rate error bound as a fraction of the job's `drift` (1 = |ε| ≤ drift).
    var clockErrorOfDrift = 1.0
    /// If set, every member clock runs at exactly 1 + this (negative = slow), ignoring the bound.
    var forcedClockError: Double?
    /// Overrides of the engine's timing (nil: engine defaults).
    var drift: Double?
    var margin: Duration?
    /// A Redis restart keeps Redis down at least this multiple of the largest TTL before it
    /// comes back empty (the operational rule for Redis without persistence).
    var redisDowntimeOfTTL = 1.0
    /// Length of the fault phase (true time).
    var faultPhase: Int64 = 20 * NS.s
    /// Quiet period delays are uniform in [0, this].
    var quietMaxDelay: Int64 = 2 * NS.ms
    /// Keep a human-readable trace (for replaying one seed).
    var trace = false
}

/// Counters of what a schedule injected.
struct FaultCounts: Sendable {
    var pauses = 0, crashes = 0, gracefulRestarts = 0, redisRestarts = 0, catalogChanges = 0
    var requestsLost = 0, repliesLost = 0, longDelays = 0, releasedLost = 0, clientTimeouts = 0

    static func + (a: Self, b: Self) -> Self {
        var r = a
        r.pauses += b.pauses
        r.crashes += b.crashes
        r.gracefulRestarts += b.gracefulRestarts
        r.redisRestarts += b.redisRestarts
        r.catalogChanges += b.catalogChanges
        r.requestsLost += b.requestsLost
        r.repliesLost += b.repliesLost
        r.longDelays += b.longDelays
        r.releasedLost += b.releasedLost
        r.clientTimeouts += b.clientTimeouts
        return r
    }

    var total: Int {
        pauses + crashes + gracefulRestarts + redisRestarts + catalogChanges + requestsLost + repliesLost + longDelays
            + releasedLost
    }

    var summary: String {
        "pause=\(pauses) crash=\(crashes) graceful-restart=\(gracefulRestarts) redis-restart=\(redisRestarts) "
            + "catalog-change=\(catalogChanges) "
            + "request-lost=\(requestsLost) reply-lost=\(repliesLost) long-delay=\(longDelays) "
            + "released-msg-lost=\(releasedLost) (client timeouts seen: \(clientTimeouts))"
    }
}

/// The result of one schedule.
struct ScheduleResult: Sendable {
    var seed: UInt64
    var violations: [String] = []
    var faults = FaultCounts()
    var leaderships = 0
    var events = 0
    var description = ""
    var trace: [String] = []
}

/// One seeded schedule: members running real `LeaseEngine`s against `SimRedis`, with faults.
final class Simulation {
    private enum Event {
        case wake(member: Int, incarnation: Int, generation: Int)
        case execute(member: Int, incarnation: Int, owner: OwnerID, command: LeaseCommand, faulty: Bool)
        case completion(member: Int, incarnation: Int, LeaseCompletion)
        case timeout(member: Int, incarnation: Int, id: Int)
        case released(member: Int, incarnation: Int, job: String)
        case handlerStopped(member: Int, incarnation: Int, job: String, token: UInt64, reason: ReleaseReason)
        case pause(member: Int, until: Int64)
        case crash(member: Int, restartAfter: Int64)
        case graceful(member: Int, restartAfter: Int64)
        case forceExit(member: Int, incarnation: Int, restartAfter: Int64)
        case start(member: Int)
        case redisCrash(downFor: Int64)
        /// The member's catalog now lists only these jobs (a reload during a rolling deploy).
        case catalog(member: Int, jobs: [Int])
        case redisBack
        case checkLiveness
    }

    private struct Member {
        var name: String
        var incarnation = 0
        var alive = false
        var engine: LeaseEngine?
        var owner: OwnerID?
        var clock = SimClock(offsetNs: 0, rate: 1)
        var pausedUntil: Int64 = 0
        var wakeGeneration = 0
        var scheduledWake: Int64?
        /// Command ids awaiting a reply or a client timeout.
        var pending: [Int: LeaseCommand] = [:]
        /// Open leadership windows: job → index into `windows[job]`.
        var open: [String: Int] = [:]
        var stopping = false
    }

    /// A member's leader-validity window on the true timeline.
    private struct Window {
        var member: Int
        var incarnation: Int
        var token: UInt64
        var start: Int64
        var end: Int64
    }

    let seed: UInt64
    let config: SimConfig
    private var rng: SimRandom
    private var queue = EventQueue<Event>()
    private var now: Int64 = 0
    private var redis = SimRedis()
    private var members: [Member] = []
    private var jobs: [LeaseJob] = []
    private var windows: [String: [Window]] = [:]
    private var result: ScheduleResult

    // Schedule parameters drawn from the seed.
    private var ttl: Int64 = 0
    private var renewEvery: Int64 = 0
    private var clientTimeout: Int64 = 0
    private var lossP = 0.0
    private var longDelayP = 0.0
    private var slowP = 0.0
    private var standbyDelay: Int64 = 0
    private var faultEnd: Int64 = 0
    private var faultsOverAt: Int64 = 0
    private var livenessDeadline: Int64 = 0
    private var endAt: Int64 = 0
    private var redisDownUntil: Int64 = 0
    private var kindCounts: [String: Int] = [:]

    init(seed: UInt64, config: SimConfig = SimConfig()) {
        self.seed = seed
        self.config = config
        self.rng = SimRandom(seed: seed)
        self.result = ScheduleResult(seed: seed)
    }

    // MARK: - Setup

    func run() -> ScheduleResult {
        setUp()
        while let (time, event) = queue.pop() {
            guard time <= endAt else { break }
            now = time
            result.events += 1
            if config.trace {
                kindCounts[String(describing: event).prefix(while: { $0 != "(" }).description, default: 0] += 1
            }
            handle(event)
        }
        if config.trace { result.trace.append("event kinds: \(kindCounts.sorted { $0.key < $1.key })") }
        result.violations = redis.tokenViolations.map { "(b) \($0)" } + result.violations
        return result
    }

    private func setUp() {
        let memberCount = 2 + rng.below(3)
        let jobCount = 1 + rng.below(3)
        let ttlChoices: [Int64] = [2 * NS.s, 3 * NS.s, 5 * NS.s]
        ttl = ttlChoices[rng.below(ttlChoices.count)]
        let spread = rng.chance(0.4)
        standbyDelay = spread ? rng.ns(0, 500 * NS.ms) : 0
        let timing = LeaseTiming(ttl: .nanoseconds(ttl), drift: config.drift ?? 0.01, margin: config.margin)
        renewEvery = NS.of(timing.renewEvery)
        clientTimeout = min(NS.s, ttl / 3)
        lossP = [0, 0.01, 0.05, 0.15][rng.below(4)]
        longDelayP = [0, 0.01, 0.03][rng.below(3)]
        slowP = rng.unit() * 0.2
        let placement: LeasePlacement =
            spread
            ? .spread(standbyDelay: .nanoseconds(standbyDelay), stability: .nanoseconds(2 * ttl)) : .any
        jobs = (0..<jobCount).map { LeaseJob(name: "job\($0)", timing: timing, placement: placement) }
        members = (0..<memberCount).map { Member(name: "m\($0)") }

        faultEnd = config.faultPhase
        let maxFaultDelay = 2 * ttl
        faultsOverAt = faultEnd + max(maxFaultDelay, clientTimeout)
        livenessDeadline = faultsOverAt + ttl + renewEvery + standbyDelay + 10 * config.quietMaxDelay + 40 * NS.ms
        endAt = livenessDeadline + 2 * ttl

        result.description =
            "members=\(memberCount) jobs=\(jobCount) ttl=\(NS.text(ttl)) placement=\(spread ? "spread(\(NS.text(standbyDelay)))" : "any") "
            + "loss=\(lossP) longDelay=\(longDelayP) slow=\((slowP * 1000).rounded() / 1000)"

        for m in members.indices { queue.push(rng.ns(0, 50 * NS.ms), .start(member: m)) }

        // Process and Redis faults at random instants of the fault phase. Everything ends by
        // `faultEnd`: pauses and restarts are cut short, Redis restarts that would still be
        // down are not injected.
        let faultCount = rng.below(10)
        for _ in 0..<faultCount {
            let at = rng.ns(ttl, faultEnd)
            let m = rng.below(memberCount)
            switch rng.below(10) {
            case 0...3:
                queue.push(at, .pause(member: m, until: min(faultEnd, at + rng.ns(ttl / 4, 3 * ttl))))
            case 4...5:
                queue.push(at, .crash(member: m, restartAfter: rng.ns(0, 2 * ttl)))
            case 6...7:
                queue.push(at, .graceful(member: m, restartAfter: rng.ns(0, ttl)))
            default:
                let down = Int64(Double(ttl) * config.redisDowntimeOfTTL) + rng.ns(0, ttl)
                if at + down < faultEnd { queue.push(at, .redisCrash(downFor: down)) }
            }
        }
        // Catalog changes, drawn from a stream of their own so the other faults of a seed stay
        // what they were: members drop and regain jobs (removed jobs release, added ones
        // compete, placement ranks only carriers), and all carry every job again when faults end.
        var catalogRng = SimRandom(seed: seed ^ 0x00ca_7a10)
        if catalogRng.chance(0.5) {
            for _ in 0..<(1 + catalogRng.below(4)) {
                let subset = (0..<jobCount).filter { _ in catalogRng.chance(0.6) }
                queue.push(catalogRng.ns(ttl, faultEnd), .catalog(member: catalogRng.below(memberCount), jobs: subset))
            }
            // Just after `faultEnd`: a change deferred by a pause lands at its end (≤ faultEnd)
            // and must not undo this one.
            for m in 0..<memberCount { queue.push(faultEnd + 1, .catalog(member: m, jobs: Array(0..<jobCount))) }
        }
        queue.push(livenessDeadline, .checkLiveness)
    }

    // MARK: - Events

    private func handle(_ event: Event) {
        switch event {
        case .start(let m):
            start(m)
        case .wake(let m, let inc, let generation):
            guard deliverable(m, inc, event) else { return }
            guard members[m].wakeGeneration == generation else { return }
            members[m].scheduledWake = nil
            step(m)
        case .execute(let m, let inc, let owner, let command, let faulty):
            execute(m, inc, owner: owner, command: command, faulty: faulty)
        case .completion(let m, let inc, let completion):
            guard deliverable(m, inc, event) else { return }
            guard members[m].pending.removeValue(forKey: completionID(completion)) != nil else { return }
            log("\(members[m].name) completion \(completionID(completion))")
            members[m].engine!.complete(completion, now: localNow(m))
            step(m)
        case .timeout(let m, let inc, let id):
            guard deliverable(m, inc, event) else { return }
            guard let command = members[m].pending.removeValue(forKey: id) else { return }
            result.faults.clientTimeouts += 1
            log("\(members[m].name) timeout \(id)")
            let failure = LeaseCallFailure(outcomeUnknown: true, message: "client timeout")
            members[m].engine!.complete(failureCompletion(id: id, command: command, failure), now: localNow(m))
            step(m)
        case .released(let m, let inc, let job):
            guard deliverable(m, inc, event) else { return }
            members[m].engine!.releasedMessage(job: job, now: localNow(m))
            step(m)
        case .handlerStopped(let m, let inc, let job, let token, let reason):
            guard deliverable(m, inc, event) else { return }
            members[m].engine!.release(job: job, token: token, reason: reason, now: localNow(m))
            step(m)
        case .pause(let m, let until):
            guard members[m].alive else { return }
            result.faults.pauses += 1
            log("PAUSE \(members[m].name) until \(NS.text(until))")
            members[m].pausedUntil = max(members[m].pausedUntil, until)
        case .crash(let m, let restartAfter):
            guard members[m].alive else { return }
            result.faults.crashes += 1
            exit(m, why: "CRASH", restartAfter: restartAfter)
        case .graceful(let m, let restartAfter):
            guard members[m].alive, !members[m].stopping, members[m].pausedUntil <= now else { return }
            result.faults.gracefulRestarts += 1
            log("SHUTDOWN \(members[m].name)")
            members[m].stopping = true
            members[m].engine!.beginShutdown(now: localNow(m))
            for lease in members[m].engine!.heldLeases {
                stopHandler(m, job: lease.job, token: lease.token, reason: .released)
            }
            queue.push(
                now + 5 * NS.s, .forceExit(member: m, incarnation: members[m].incarnation, restartAfter: restartAfter))
            step(m)
            if members[m].alive, members[m].engine!.isShutDown { exit(m, why: "EXIT", restartAfter: restartAfter) }
        case .forceExit(let m, let inc, let restartAfter):
            guard members[m].alive, members[m].incarnation == inc else { return }
            exit(m, why: "EXIT(timeout)", restartAfter: restartAfter)
        case .redisCrash(let downFor):
            guard redis.up else { return }
            result.faults.redisRestarts += 1
            log("REDIS DOWN for \(NS.text(downFor)) (all keys lost)")
            redis.up = false
            redis.restart()
            redisDownUntil = now + downFor
            queue.push(now + downFor, .redisBack)
        case .redisBack:
            log("REDIS UP")
            redis.up = true
        case .catalog(let m, let indices):
            guard members[m].alive, !members[m].stopping else { return }
            if members[m].pausedUntil > now {
                queue.push(members[m].pausedUntil, event)
                return
            }
            let list = indices.map { jobs[$0] }
            if list.map(\.name) != members[m].engine!.carriedJobs { result.faults.catalogChanges += 1 }
            log("CATALOG \(members[m].name): \(list.map(\.name))")
            members[m].engine!.updateJobs(list, catalogDigest: nil, now: localNow(m))
            step(m)
        case .checkLiveness:
            checkLiveness()
        }
    }

    /// Whether an event for member `m` incarnation `inc` may be processed now; events that
    /// arrive during a pause are deferred, in order, to the end of the pause.
    private func deliverable(_ m: Int, _ inc: Int, _ event: Event) -> Bool {
        guard members[m].alive, members[m].incarnation == inc else { return false }
        if members[m].pausedUntil > now {
            queue.push(members[m].pausedUntil, event)
            return false
        }
        return true
    }

    private func start(_ m: Int) {
        members[m].incarnation += 1
        let inc = members[m].incarnation
        let error: Double
        if let forced = config.forcedClockError {
            error = forced
        } else {
            let bound = (config.drift ?? 0.01) * config.clockErrorOfDrift
            error = (rng.unit() * 2 - 1) * bound
        }
        members[m].clock = SimClock(offsetNs: Double(rng.ns(0, 1_000 * NS.s)), rate: 1 + error)
        let owner = OwnerID(member: members[m].name, incarnation: "i\(inc)")
        members[m].owner = owner
        members[m].alive = true
        members[m].stopping = false
        members[m].pending = [:]
        members[m].open = [:]
        members[m].pausedUntil = 0
        members[m].scheduledWake = nil
        members[m].engine = LeaseEngine(
            settings: .init(owner: owner, seed: rng.next()), jobs: jobs, now: localNow(m))
        log("START \(owner) clock rate \(1 + error)")
        step(m)
    }

    private func exit(_ m: Int, why: String, restartAfter: Int64) {
        log("\(why) \(members[m].name)")
        for (job, index) in members[m].open {
            windows[job]![index].end = min(windows[job]![index].end, now)
        }
        members[m].open = [:]
        members[m].alive = false
        members[m].engine = nil
        let restartAt = now + restartAfter
        // Everyone is back by the time faults stop.
        queue.push(min(max(restartAt, now + 1), max(faultEnd, now + 1)), .start(member: m))
    }

    private func localNow(_ m: Int) -> Duration { members[m].clock.local(now) }

    // MARK: - The member step: poll, act on events, send commands, arm the timer

    private func step(_ m: Int) {
        guard members[m].alive else { return }
        let s = members[m].engine!.poll(now: localNow(m))
        for event in s.events { apply(event, m) }
        refreshWindows(m)
        for command in s.commands { send(command, from: m) }
        if members[m].stopping, members[m].engine!.isShutDown {
            exit(m, why: "EXIT", restartAfter: rng.ns(0, ttl))
            return
        }
        if let wake = s.wakeAt {
            var t = members[m].clock.trueTime(wake)
            if t <= now { t = now + 100 * NS.us }
            if members[m].scheduledWake.map({ t < $0 }) ?? true {
                members[m].wakeGeneration += 1
                members[m].scheduledWake = t
                queue.push(
                    t, .wake(member: m, incarnation: members[m].incarnation, generation: members[m].wakeGeneration))
            }
        }
    }

    private func apply(_ event: LeadershipEvent, _ m: Int) {
        switch event {
        case .acquired(let job, let token, let validUntil, let takeover, _):
            result.leaderships += 1
            let end = members[m].clock.trueTime(validUntil)
            log(
                "\(members[m].name)#\(members[m].incarnation) ACQUIRED \(job) token \(token) (\(takeover.rawValue)) valid until \(NS.text(end))"
            )
            let window = Window(
                member: m, incarnation: members[m].incarnation, token: token, start: now, end: max(end, now))
            windows[job, default: []].append(window)
            members[m].open[job] = windows[job]!.count - 1
            checkOverlap(job: job, index: windows[job]!.count - 1)
        case .lost(let job, let token, let reason):
            log("\(members[m].name)#\(members[m].incarnation) LOST \(job) token \(token) (\(reason.rawValue))")
            closeWindow(m, job: job)
        case .handoffSuggested(let job, _):
            if let lease = members[m].engine!.lease(of: job) {
                stopHandler(m, job: job, token: lease.token, reason: .handedOff)
            }
        case .released(let job, let token, _, let confirmed):
            log("\(members[m].name)#\(members[m].incarnation) RELEASED \(job) token \(token) confirmed=\(confirmed)")
        default:
            break
        }
    }

    /// The handler takes a little while to stop; then the layer above releases the lease.
    private func stopHandler(_ m: Int, job: String, token: UInt64, reason: ReleaseReason) {
        queue.push(
            now + rng.ns(0, 50 * NS.ms),
            .handlerStopped(member: m, incarnation: members[m].incarnation, job: job, token: token, reason: reason))
    }

    private func closeWindow(_ m: Int, job: String) {
        guard let index = members[m].open.removeValue(forKey: job) else { return }
        windows[job]![index].end = min(windows[job]![index].end, now)
    }

    /// Follows renewals (validity moves forward with no event) and releases (the lease is
    /// gone from the engine once the handler stopped).
    private func refreshWindows(_ m: Int) {
        for (job, index) in members[m].open {
            if let lease = members[m].engine!.lease(of: job), lease.token == windows[job]![index].token {
                let end = members[m].clock.trueTime(lease.validUntil)
                if end > windows[job]![index].end {
                    windows[job]![index].end = end
                    checkOverlap(job: job, index: index)
                }
            } else {
                closeWindow(m, job: job)
            }
        }
    }

    /// Invariant (a): no two validity windows of one job overlap on the true timeline.
    private func checkOverlap(job: String, index: Int) {
        let w = windows[job]![index]
        guard w.end > w.start else { return }
        for (i, o) in windows[job]!.enumerated() where i != index {
            guard o.end > o.start, !(o.member == w.member && o.incarnation == w.incarnation) else { continue }
            let from = max(w.start, o.start)
            let to = min(w.end, o.end)
            if from < to {
                let message =
                    "(a) job \(job): \(members[w.member].name)#\(w.incarnation) token \(w.token) "
                    + "[\(NS.text(w.start)), \(NS.text(w.end))) overlaps \(members[o.member].name)#\(o.incarnation) "
                    + "token \(o.token) [\(NS.text(o.start)), \(NS.text(o.end))) by \(NS.text(to - from))"
                result.violations.append(message)
                log("VIOLATION \(message)")
            }
        }
    }

    /// Invariant (c): after faults stop, every job has a leader within the bound.
    private func checkLiveness() {
        for job in jobs.map(\.name) {
            let led = (windows[job] ?? []).contains {
                $0.end > faultsOverAt && $0.start <= livenessDeadline && $0.end > $0.start
            }
            if !led {
                result.violations.append(
                    "(c) job \(job): no leader between \(NS.text(faultsOverAt)) (faults over) and \(NS.text(livenessDeadline)) (TTL + renew interval + slack later)"
                )
            }
        }
    }

    // MARK: - The network and Redis

    private func delay(faulty: Bool) -> Int64? {
        guard faulty else { return rng.ns(0, config.quietMaxDelay) }
        if rng.chance(lossP) { return nil }
        if rng.chance(longDelayP) {
            result.faults.longDelays += 1
            return rng.ns(ttl / 2, 2 * ttl)
        }
        return rng.chance(slowP) ? rng.ns(5 * NS.ms, 300 * NS.ms) : rng.ns(50 * NS.us, 3 * NS.ms)
    }

    private func send(_ command: LeaseCommand, from m: Int) {
        let inc = members[m].incarnation
        members[m].pending[command.id] = command
        // The client timeout runs on the member's clock.
        let deadline = members[m].clock.trueTime(localNow(m) + .nanoseconds(clientTimeout))
        queue.push(deadline, .timeout(member: m, incarnation: inc, id: command.id))
        let faulty = now < faultEnd
        guard let d = delay(faulty: faulty) else {
            result.faults.requestsLost += 1
            log("\(members[m].name) request \(command.id) LOST")
            return
        }
        queue.push(
            now + d, .execute(member: m, incarnation: inc, owner: members[m].owner!, command: command, faulty: faulty))
    }

    private func execute(_ m: Int, _ inc: Int, owner: OwnerID, command: LeaseCommand, faulty: Bool) {
        guard redis.up else {
            // Connection refused while Redis is down: a known failure, or nothing at all.
            if rng.chance(0.5) {
                let failure = LeaseCallFailure(outcomeUnknown: false, message: "connection refused")
                queue.push(
                    now + rng.ns(50 * NS.us, 2 * NS.ms),
                    .completion(
                        member: m, incarnation: inc, failureCompletion(id: command.id, command: command, failure)))
            }
            return
        }
        let completion: LeaseCompletion
        switch command {
        case .acquire(let id, let requests):
            let reply = redis.acquire(requests, owner: owner.description, at: now)
            log("\(owner) acquire#\(id) \(zip(requests.map(\.job), reply.outcomes).map { "\($0.0)=\($0.1)" })")
            completion = .acquire(id: id, .success(reply))
        case .renew(let id, let batch):
            completion = .renew(id: id, .success(redis.renew(batch, owner: owner, weight: 1, at: now)))
        case .release(let id, let items, _):
            let (flags, published) = redis.release(items, owner: owner.description, at: now)
            log("\(owner) release \(zip(items.map(\.job), flags).map { "\($0.0)=\($0.1)" })")
            completion = .release(id: id, .success(flags))
            for job in published { publish(job) }
        case .fetchCatalog(let id, let digest):
            completion = .fetchCatalog(id: id, .success(redis.catalog(digest)))
        }
        let replyFaulty = faulty || now < faultEnd
        guard let d = delay(faulty: replyFaulty) else {
            result.faults.repliesLost += 1
            return
        }
        queue.push(now + d, .completion(member: m, incarnation: inc, completion))
    }

    private func publish(_ job: String) {
        for m in members.indices where members[m].alive {
            if now < faultEnd, rng.chance(lossP) {
                result.faults.releasedLost += 1
                continue
            }
            let d = delay(faulty: false)!
            queue.push(now + d, .released(member: m, incarnation: members[m].incarnation, job: job))
        }
    }

    private func completionID(_ c: LeaseCompletion) -> Int {
        switch c {
        case .acquire(let id, _), .renew(let id, _), .release(let id, _), .fetchCatalog(let id, _): id
        }
    }

    private func failureCompletion(id: Int, command: LeaseCommand, _ failure: LeaseCallFailure) -> LeaseCompletion {
        switch command {
        case .acquire: .acquire(id: id, .failure(failure))
        case .renew: .renew(id: id, .failure(failure))
        case .release: .release(id: id, .failure(failure))
        case .fetchCatalog: .fetchCatalog(id: id, .failure(failure))
        }
    }

    private func log(_ line: @autoclosure () -> String) {
        if config.trace { result.trace.append("\(NS.text(now)) \(line())") }
    }
}
