/// The lease state machine of one member for all its jobs, with no I/O.
///
/// Inputs are the current time (a monotonic `Duration` since an arbitrary origin), command
/// completions, released-channel messages and requests from the layer above; outputs are
/// commands to send, leadership events and the next time the engine must be polled. The
/// driver (`LeaseManager`) binds it to Redis and a real clock; tests and the simulator bind
/// it to a fake clock, so the timing rules are checked deterministically.
///
/// Safety rests on three rules kept here:
/// - validity is counted from the *send* time of the acquire/renew that succeeded;
/// - step-down is a timer, independent of any reply, so a hung call cannot keep a leader;
/// - a failed call with an unknown outcome is never taken as success, and a lease we might
///   hold is taken up again (the acquire script is idempotent for its owner) or released by
///   value on shutdown.
package struct LeaseEngine: Sendable {
    /// What one `poll` asks of the driver.
    package struct Step: Sendable {
        /// Commands to send now.
        package var commands: [LeaseCommand] = []
        /// Leadership changes to act on, in order.
        package var events: [LeadershipEvent] = []
        /// When to poll again at the latest (nil: only on a new input).
        package var wakeAt: Duration?
    }

    /// Member-level settings (package as ``LeaseMemberSettings``).
    package typealias Settings = LeaseMemberSettings

    /// What one job is doing on this member.
    package enum Phase: Sendable, Hashable {
        /// Not leading; next acquire attempt due at `attemptAt`.
        case standby(attemptAt: Duration)
        /// An acquire for this job is in flight.
        case acquiring
        /// Leading with `token` until `validUntil`; the handler is cancelled at `stepDownAt`.
        case leading(token: UInt64, validUntil: Duration, stepDownAt: Duration)
        /// The handler stopped; a release is queued or in flight. A nil token releases
        /// whatever lease this owner may hold (after an unknown outcome).
        case releasing(token: UInt64?, reason: ReleaseReason, sent: Bool)
        /// Shut down: no more attempts.
        case retired
    }

    private enum InFlight: Sendable {
        case acquire(jobs: [String], sentAt: Duration)
        /// `timings` are the rules each item was renewed under (a catalog change may replace
        /// them before the reply); `catalogGeneration` is set when the tick published the set.
        case renew(items: [RenewItem], timings: [LeaseTiming], sentAt: Duration, catalogGeneration: Int?)
        case release(items: [ReleaseItem], reason: ReleaseReason)
        case fetchCatalog(digest: String)
    }

    /// The member settings.
    package let settings: Settings
    private var jobs: JobTable
    private var inFlight: [Int: InFlight] = [:]
    private var nextCommandID = 1
    private var rng: SplitMix64

    // Member tick (renew + heartbeat).
    private var tickInterval: Duration
    private var heartbeatTTL: Duration { fleet.heartbeatTTL }
    private var nextTickAt: Duration
    private var tickFailures = 0
    private var lastTickRedisMs: Int64 = 0

    // What the last tick told us about the world.
    private var fleet: Membership
    private var membersKnown: Bool { fleet.isKnown }
    private var reportedDuplicate: String?
    private var redisUp: Bool?
    /// Local time of the latest successful call: older failures say nothing about Redis now.
    private var lastSuccessAt: Duration?
    private var shuttingDown = false
    private var pendingEvents: [LeadershipEvent] = []
    /// Preferred member per job for one set of candidates (see `suggestHandoffs`).
    private var preferredMemo: (key: PlacementKey, byJob: [String: String?]) = (PlacementKey(), [:])

    // Catalog advertising: which jobs each live member carries.
    /// The digest of the job set this member carries.
    package private(set) var catalogDigest: String
    /// Job sets by digest (this member's own included), fetched once per new digest.
    private var catalogs: [String: Set<String>] = [:]
    /// Digests whose fetch is in flight (nil) or must wait until a local time (a set not
    /// published yet reads as empty: its member publishes it on its next tick).
    private var catalogFetches: [String: Duration?] = [:]
    /// Bumped when the known job sets change, so placement memos are recomputed.
    private var catalogsRevision = 0
    /// Bumped by every catalog change; the job set is published until a tick of the current
    /// generation confirms it.
    private var catalogGeneration = 0
    private var publishedGeneration: Int?
    /// Removed jobs still releasing: their entries go once settled.
    private var removalsPending = false

    /// Creates the engine for `jobs` at local time `now`; the first tick is due at once.
    package init(settings: Settings, jobs: [LeaseJob], now: Duration) {
        self.settings = settings
        self.rng = SplitMix64(seed: settings.seed)
        self.jobs = JobTable(jobs.map { JobState(spec: $0, phase: .standby(attemptAt: now)) })
        let timing = Self.fleetTiming(for: jobs)
        self.tickInterval = timing.tick
        self.fleet = Membership(
            me: MemberInfo(name: settings.owner.member, expiresAtMs: .max, weight: settings.weight),
            heartbeatTTL: timing.heartbeat, livenessGrace: timing.grace)
        self.nextTickAt = now
        self.catalogDigest = settings.catalogDigest ?? Self.catalogDigest(of: jobs.map(\.name))
        self.catalogs[catalogDigest] = Set(jobs.map(\.name))
    }

    /// The member tick, heartbeat TTL and liveness slack for a set of jobs.
    private static func fleetTiming(for jobs: [LeaseJob]) -> (tick: Duration, heartbeat: Duration, grace: Duration) {
        let shortestRenew = jobs.map(\.timing.renewEvery).min() ?? .seconds(3)
        let shortestTTL = jobs.map(\.timing.ttl).min() ?? .seconds(10)
        // Two ticks of heartbeat: a member that misses two renewals in a row is considered
        // gone, which happens before any of its leases (TTL ≥ 3 ticks) can expire, so a
        // standby never waits on placement for a member that crashed.
        let heartbeat = min(shortestRenew * 2, shortestTTL)
        // The member list is a snapshot up to one tick old (more when our own tick is slow):
        // a member whose tick came a little late has a newer expiry we have not seen yet.
        // Without slack it would look gone as soon as it is late at all, and its jobs would
        // move away and back. Half a tick of slack still drops a crashed member before its
        // leases (TTL ≥ heartbeat + slack × 2) can expire.
        let grace = max(.zero, min(shortestRenew / 2, (shortestTTL - heartbeat) / 2))
        return (shortestRenew, heartbeat, grace)
    }

    /// The digest a member advertises for a job set when the layer above names none: the
    /// same names give the same digest in every process.
    package static func catalogDigest(of names: [String]) -> String {
        var bytes: [UInt8] = []
        for name in names.sorted() {
            bytes.append(contentsOf: name.utf8)
            bytes.append(0)
        }
        let hex = String(StableHash.hash64(bytes), radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    // MARK: - Reading

    /// The phase of a job, or nil if the engine does not know it.
    package func phase(of job: String) -> Phase? { jobs[job]?.phase }

    /// The token and validity of a job this member leads right now.
    package func lease(of job: String) -> (token: UInt64, validUntil: Duration)? {
        if case .leading(let token, let validUntil, _) = jobs[job]?.phase { return (token, validUntil) }
        return nil
    }

    /// Bumped whenever a lease's token or validity changes, so drivers can refresh snapshots
    /// only when needed.
    package private(set) var leaseRevision = 0

    /// Every lease this member leads, with its validity and step-down time.
    package var heldLeases: [(job: String, token: UInt64, validUntil: Duration, stepDownAt: Duration)] {
        jobs.states.compactMap { state in
            if case .leading(let token, let validUntil, let stepDownAt) = state.phase {
                return (state.spec.name, token, validUntil, stepDownAt)
            }
            return nil
        }
    }

    /// The jobs this member leads.
    package var ledJobs: [String] {
        jobs.states.compactMap { if case .leading = $0.phase { $0.spec.name } else { nil } }
    }

    /// The live members as of the last tick.
    package var liveMembers: [MemberInfo] { fleet.members }

    /// True once shutdown was requested and nothing is held or in flight any more.
    package var isShutDown: Bool {
        shuttingDown
            && inFlight.values.allSatisfy {
                switch $0 {
                case .renew, .fetchCatalog: true
                default: false
                }
            }
            && jobs.states.allSatisfy { $0.phase == .retired }
    }

    /// The jobs this member carries (its catalog), in table order.
    package var carriedJobs: [String] { jobs.states.filter { !$0.removed }.map(\.spec.name) }

    /// Whether `member` carries `job`, as far as this member knows: a member of an older
    /// version (no digest) carries everything; one whose set is not known yet carries nothing,
    /// so no handoff goes to a member that may not take the job.
    private func carries(_ member: MemberInfo, _ job: String) -> Bool {
        if member.name == settings.owner.member { return jobs[job].map { !$0.removed } ?? false }
        guard let digest = member.catalog else { return true }
        return catalogs[digest]?.contains(job) ?? false
    }

    /// Whether the member `name` (a lease holder) carries `job`: only then does its live
    /// heartbeat mean it renews the lease. A holder that dropped the job (a catalog change) may
    /// have left a lease that just runs out.
    private func holderCarries(_ name: String, _ job: String) -> Bool {
        guard let info = fleet.members.first(where: { $0.name == name }) else { return true }
        return carries(info, job)
    }

    /// The live members that carry `job`, as rendezvous candidates.
    private func candidates(for job: String, among live: [MemberInfo]) -> [RendezvousMember] {
        live.filter { carries($0, job) }.map { RendezvousMember(name: $0.name, weight: $0.weight) }
    }

    /// The preferred member of a job among the members live at `now` that carry it, by
    /// rendezvous.
    package func preferredMember(of job: String, now: Duration) -> String? {
        Rendezvous.preferred(job: job, among: candidates(for: job, among: fleet.live(at: now)))
    }

    // MARK: - Inputs

    /// A `released` message arrived for `job`: a standby tries at once instead of waiting.
    /// `leavingMember` names a member that released because it is shutting down: it stops
    /// counting as live for placement at once, instead of when its heartbeat expires.
    package mutating func releasedMessage(job: String, leavingMember: String? = nil, now: Duration) {
        if let leavingMember, leavingMember != settings.owner.member {
            fleet.memberLeft(leavingMember, at: now)
        }
        guard var state = jobs[job] else { return }
        if state.phase == .acquiring {
            state.releasedWhileAcquiring = true
            jobs[job] = state
            return
        }
        guard case .standby = state.phase else { return }
        state.observedExpiry = nil
        state.holder = nil
        state.freeSince = now
        state.phase = .standby(attemptAt: placementDelayedAttempt(for: state, earliest: now, now: now))
        jobs[job] = state
    }

    /// The released channel was (re)subscribed: messages may have been lost while it was
    /// down, so every standby looks at its lease once more instead of trusting that a live
    /// holder still holds it.
    package mutating func recheckAll(now: Duration) {
        for i in jobs.states.indices {
            guard case .standby = jobs.states[i].phase else { continue }
            jobs.states[i].forceAttempt = true
            jobs.states[i].phase = .standby(attemptAt: now)
        }
    }

    /// The handler of `job` has stopped; give the lease up (shutdown, handoff or a voluntary
    /// release). Nothing happens unless the job is led (with `token`, when given).
    package mutating func release(job: String, token expected: UInt64? = nil, reason: ReleaseReason, now: Duration) {
        guard var state = jobs[job], case .leading(let token, _, _) = state.phase,
            expected == nil || expected == token
        else { return }
        state.phase = .releasing(token: token, reason: reason, sent: false)
        jobs[job] = state
        leaseRevision += 1
    }

    /// Stops competing for `job` until `rejoin(job:now:)`: a lease this member holds is given
    /// back (with `reason`), and no acquire is sent meanwhile. For work that cannot run here
    /// now (a handler that never returned), so the job can be led elsewhere.
    package mutating func withdraw(job: String, reason: ReleaseReason, now: Duration) {
        guard var state = jobs[job], !state.withdrawn else { return }
        state.withdrawn = true
        jobs[job] = state
        release(job: job, reason: reason, now: now)
    }

    /// Competes for `job` again after `withdraw(job:reason:now:)`, at once.
    package mutating func rejoin(job: String, now: Duration) {
        guard var state = jobs[job], state.withdrawn else { return }
        state.withdrawn = false
        state.forceAttempt = true
        if case .standby = state.phase { state.phase = .standby(attemptAt: now) }
        jobs[job] = state
    }

    /// Whether `job` is withdrawn (for status and tests).
    package func isWithdrawn(_ job: String) -> Bool { jobs[job]?.withdrawn ?? false }

    /// Stop acquiring; leaders keep renewing until the layer above releases them.
    package mutating func beginShutdown(now: Duration) {
        shuttingDown = true
    }

    /// The catalog changed: competes for `newJobs` from now on. Jobs that are gone give their
    /// lease back (call it only once their work has stopped); new ones compete at once;
    /// jobs that stay keep their lease and token, and changed timing applies from the next
    /// renewal. The job set is advertised under `catalogDigest` (nil: derived from the names).
    package mutating func updateJobs(_ newJobs: [LeaseJob], catalogDigest digest: String?, now: Duration) {
        guard !shuttingDown else { return }
        let names = Set(newJobs.map(\.name))
        for i in jobs.states.indices where !jobs.states[i].removed && !names.contains(jobs.states[i].spec.name) {
            var state = jobs.states[i]
            state.removed = true
            settleRemoved(&state)
            jobs.states[i] = state
            removalsPending = true
        }
        for job in newJobs {
            if var state = jobs[job.name] {
                state.spec = job
                if state.removed {
                    state.removed = false
                    state.forceAttempt = true
                    if state.phase == .retired { state.phase = .standby(attemptAt: now) }
                }
                jobs[job.name] = state
            } else {
                jobs.append(JobState(spec: job, phase: .standby(attemptAt: now)))
            }
        }
        if removalsPending {
            _ = jobs.dropSettledRemovals()
            removalsPending = hasRemovedEntries
        }
        let timing = Self.fleetTiming(for: newJobs)
        tickInterval = timing.tick
        fleet.heartbeatTTL = timing.heartbeat
        fleet.livenessGrace = timing.grace
        nextTickAt = min(nextTickAt, now + tickInterval)
        let previous = catalogDigest
        catalogDigest = digest ?? Self.catalogDigest(of: newJobs.map(\.name))
        if previous != catalogDigest, !fleet.members.contains(where: { $0.catalog == previous }) {
            catalogs[previous] = nil
        }
        catalogs[catalogDigest] = names
        catalogGeneration += 1
        catalogsRevision += 1
        leaseRevision += 1
    }

    /// Removed jobs not settled yet (kept, settled entries need no more polls).
    private var hasRemovedEntries: Bool { jobs.states.contains { $0.removed && $0.phase != .retired } }

    /// A removed job gives back what it holds, then retires.
    ///
    /// A lease it only *may* hold (an acquire or renewal with an unknown outcome) is not
    /// released by owner: such a release, delayed, would delete any later lease of ours if the
    /// job comes back. The entry stays (with `mayHold`), so a comeback takes that lease up
    /// again; otherwise it ends at its TTL, and the other members do not wait for us because
    /// we no longer advertise the job (see `makeAcquireCommands`).
    private mutating func settleRemoved(_ state: inout JobState) {
        guard state.removed else { return }
        switch state.phase {
        case .leading(let token, _, _):
            state.phase = .releasing(token: token, reason: .released, sent: false)
            leaseRevision += 1
        case .standby:
            state.phase = .retired
        default:
            break
        }
    }

    /// Feeds a command's result back into the engine.
    package mutating func complete(_ completion: LeaseCompletion, now: Duration) {
        switch completion {
        case .acquire(let id, let result):
            guard case .acquire(let names, let sentAt)? = inFlight.removeValue(forKey: id) else { return }
            handleAcquire(names: names, sentAt: sentAt, result: result, now: now)
        case .renew(let id, let result):
            guard case .renew(let items, let timings, let sentAt, let generation)? = inFlight.removeValue(forKey: id)
            else { return }
            handleRenew(
                items: items, timings: timings, sentAt: sentAt, catalogGeneration: generation, result: result, now: now)
        case .release(let id, let result):
            guard case .release(let items, let reason)? = inFlight.removeValue(forKey: id) else { return }
            handleRelease(items: items, reason: reason, result: result, now: now)
        case .fetchCatalog(let id, let result):
            guard case .fetchCatalog(let digest)? = inFlight.removeValue(forKey: id) else { return }
            handleCatalog(digest: digest, result: result, now: now)
        }
    }

    // MARK: - Poll

    /// Advances timers to `now` and returns what to do next.
    package mutating func poll(now: Duration) -> Step {
        var step = Step()
        stepDownExpiredLeaders(now: now)
        suggestHandoffs(now: now)
        if shuttingDown { retireIdleJobs() }

        if let command = makeRenewCommand(now: now) { step.commands.append(command) }
        step.commands.append(contentsOf: makeAcquireCommands(now: now))
        step.commands.append(contentsOf: makeReleaseCommands(now: now))
        step.commands.append(contentsOf: makeCatalogFetches(now: now))
        if removalsPending {
            _ = jobs.dropSettledRemovals()
            removalsPending = hasRemovedEntries
        }

        step.events = pendingEvents
        pendingEvents.removeAll(keepingCapacity: true)
        step.wakeAt = nextWake(now: now)
        return step
    }

    // MARK: - Timers

    private mutating func stepDownExpiredLeaders(now: Duration) {
        for i in jobs.states.indices {
            guard case .leading(let token, _, let stepDownAt) = jobs.states[i].phase, now >= stepDownAt else {
                continue
            }
            // The renewal did not come back in time. The lease may still be ours in Redis
            // (a slow reply): mark it so a later acquire takes it up or shutdown releases it.
            jobs.states[i].phase = .standby(attemptAt: now)
            jobs.states[i].mayHold = true
            jobs.states[i].handoffSuggested = false
            leaseRevision += 1
            pendingEvents.append(.lost(job: jobs.states[i].spec.name, token: token, reason: .steppedDown))
        }
    }

    private mutating func suggestHandoffs(now: Duration) {
        guard membersKnown, !shuttingDown else { return }
        let me = settings.owner.member
        // Rendezvous is pure: while the live set and the known job sets are unchanged, each
        // job's preferred member is too. Without this memo every poll hashed every led job
        // against every member (~20 ms per poll at 10,000 jobs / 10 members).
        let live = fleet.live(at: now)
        let key = PlacementKey(
            members: live.map { RendezvousMember(name: $0.name, weight: $0.weight) }, catalogs: live.map(\.catalog),
            revision: catalogsRevision)
        if key != preferredMemo.key { preferredMemo = (key, [:]) }
        for i in jobs.states.indices {
            guard case .leading = jobs.states[i].phase, !jobs.states[i].handoffSuggested,
                case .spread(_, let stability) = jobs.states[i].spec.placement,
                let leadingSince = jobs.states[i].leadingSince, now - leadingSince >= stability
            else { continue }
            let name = jobs.states[i].spec.name
            // A member that just gained the job (a catalog change) must carry it for a
            // stability window too before the job moves to it.
            guard let preferred = memoizedPreferred(of: name, among: live), preferred != me,
                let firstSeen = fleet.firstSeen[preferred],
                now - max(firstSeen, fleet.catalogSince[preferred] ?? firstSeen) >= stability
            else { continue }
            jobs.states[i].handoffSuggested = true
            pendingEvents.append(.handoffSuggested(job: name, to: preferred))
        }
    }

    /// The preferred member of `job` among the carriers in `live` (which must match
    /// `preferredMemo.key`).
    private mutating func memoizedPreferred(of job: String, among live: [MemberInfo]) -> String? {
        if let known = preferredMemo.byJob[job] { return known }
        let preferred = Rendezvous.preferred(job: job, among: candidates(for: job, among: live))
        preferredMemo.byJob[job] = preferred
        return preferred
    }

    private mutating func retireIdleJobs() {
        for i in jobs.states.indices {
            guard case .standby = jobs.states[i].phase else { continue }
            // We may own this lease without knowing: release it by value, whatever its token.
            jobs.states[i].phase =
                jobs.states[i].mayHold ? .releasing(token: nil, reason: .released, sent: false) : .retired
        }
    }

    /// Handoff suggestions need no timer of their own: they are checked on every poll, and
    /// the member tick polls at least once per renew interval.
    private func nextWake(now: Duration) -> Duration? {
        // While a renew is in flight the next tick waits for its completion (which polls):
        // asking to be woken at a tick time already past would spin the driver until then.
        let renewInFlight = inFlight.values.contains { if case .renew = $0 { true } else { false } }
        var wake: Duration? = renewInFlight ? nil : nextTickAt
        func consider(_ t: Duration) { wake = min(wake ?? t, t) }
        for state in jobs.states {
            switch state.phase {
            case .standby(let attemptAt):
                if !shuttingDown, gateOpen(for: state) { consider(max(attemptAt, state.standBackUntil ?? attemptAt)) }
            case .leading(_, _, let stepDownAt):
                consider(stepDownAt)
            case .releasing(_, _, let sent):
                if !sent { consider(now) }
            default:
                break
            }
        }
        return wake.map { max($0, now) }
    }

    // MARK: - Commands

    private mutating func makeRenewCommand(now: Duration) -> LeaseCommand? {
        guard now >= nextTickAt, !inFlight.values.contains(where: { if case .renew = $0 { true } else { false } })
        else { return nil }
        var items: [RenewItem] = []
        var timings: [LeaseTiming] = []
        for i in jobs.states.indices {
            guard case .leading(let token, let validUntil, let stepDownAt) = jobs.states[i].phase else { continue }
            let timing = jobs.states[i].spec.timing
            if validUntil > now + timing.validityWindow {
                // A shorter TTL from a catalog change: once this renewal lands, Redis counts
                // the new TTL from now, so the old validity may no longer be relied on, even
                // if the reply never comes.
                let clamped = now + timing.validityWindow
                jobs.states[i].phase = .leading(
                    token: token, validUntil: clamped, stepDownAt: min(stepDownAt, clamped - timing.grace))
                leaseRevision += 1
            }
            items.append(RenewItem(job: jobs.states[i].spec.name, token: token, ttlMs: timing.ttlMilliseconds))
            timings.append(timing)
        }
        let publish = publishedGeneration != catalogGeneration
        let id = allocateID()
        inFlight[id] = .renew(
            items: items, timings: timings, sentAt: now, catalogGeneration: publish ? catalogGeneration : nil)
        // Until the reply: if it never comes, retry after a short backoff (the step-down
        // timers guard validity meanwhile).
        nextTickAt = now + backoff(failures: tickFailures + 1, cap: tickInterval)
        let carried = carriedJobs
        return .renew(
            id: id,
            batch: RenewBatch(
                leases: items, heartbeatTTLMs: heartbeatTTL.wholeMilliseconds, previousTickMs: lastTickRedisMs,
                catalogDigest: catalogDigest, jobCount: carried.count, publishJobs: publish ? carried : nil))
    }

    /// Fetches the job set of every digest a reported member advertises that is not known
    /// yet: once per new digest, never per tick.
    private mutating func makeCatalogFetches(now: Duration) -> [LeaseCommand] {
        var commands: [LeaseCommand] = []
        for member in fleet.members {
            guard let digest = member.catalog, catalogs[digest] == nil else { continue }
            if let entry = catalogFetches[digest] {
                guard let retryAt = entry, now >= retryAt else { continue }
            }
            let id = allocateID()
            inFlight[id] = .fetchCatalog(digest: digest)
            catalogFetches[digest] = .some(nil)
            commands.append(.fetchCatalog(id: id, digest: digest))
        }
        return commands
    }

    private mutating func makeAcquireCommands(now: Duration) -> [LeaseCommand] {
        guard !shuttingDown else { return [] }
        var due: [AcquireRequest] = []
        for i in jobs.states.indices {
            guard case .standby(let attemptAt) = jobs.states[i].phase, attemptAt <= now,
                gateOpen(for: jobs.states[i]), now >= jobs.states[i].standBackUntil ?? now
            else { continue }
            var state = jobs.states[i]
            let name = state.spec.name
            // Never skip while we may hold the lease ourselves (an unknown outcome): only our
            // own attempt can take such a lease up again, and everyone else skips it.
            if !state.forceAttempt, !state.mayHold, let holder = state.holder, holder.member != settings.owner.member,
                holderCarries(holder.member, name), let heartbeatEnd = fleet.heartbeatEnd(of: holder, now: now),
                now - (state.lastAttemptAt ?? now) < state.spec.timing.ttl * 10
            {
                // The holder still heartbeats, and its leases are renewed in the same script
                // call as its heartbeat: asking now would only find the lease held. Look
                // again when that heartbeat would lapse (a crashed holder's heartbeat lapses
                // a third of a TTL before its leases expire), or after a slow safety-net
                // interval. This keeps standbys from costing Redis anything per job.
                // No jitter: nothing is sent then unless the heartbeat did lapse, and all jobs
                // of one holder wake together, in one poll.
                state.phase = .standby(attemptAt: heartbeatEnd)
                jobs.states[i] = state
                continue
            }
            // Placement may ask us to hold back even though the attempt timer fired.
            let delayed = placementDelayedAttempt(for: state, earliest: now, now: now)
            if delayed > now {
                // Remember when the wait began, or every poll would start it afresh.
                state.freeSince = state.freeSince ?? state.observedExpiry ?? now
                state.phase = .standby(attemptAt: delayed)
                jobs.states[i] = state
                continue
            }
            var gap: Int64?
            if let expiry = state.observedExpiry, now > expiry { gap = (now - expiry).wholeMilliseconds }
            var request = AcquireRequest(job: name, ttlMs: state.spec.timing.ttlMilliseconds, gapHintMs: gap)
            if case .spread(let standbyDelay, _) = state.spec.placement,
                preferredMember(of: name, now: now).map({ $0 != settings.owner.member }) ?? false
            {
                // Our own view of when the lease became free may be stale (we missed the
                // release, or our routine expiry check coincides with the holder's tick, when
                // handoffs are released): let Redis enforce the standby delay.
                request.minFreeMs = standbyDelay.wholeMilliseconds
            }
            due.append(request)
            state.phase = .acquiring
            state.lastAttemptAt = now
            state.forceAttempt = false
            jobs.states[i] = state
        }
        var commands: [LeaseCommand] = []
        var start = 0
        while start < due.count {
            let batch = Array(due[start..<min(start + settings.maxAcquireBatch, due.count)])
            let id = allocateID()
            inFlight[id] = .acquire(jobs: batch.map(\.job), sentAt: now)
            commands.append(.acquire(id: id, requests: batch))
            start += batch.count
        }
        return commands
    }

    private mutating func makeReleaseCommands(now: Duration) -> [LeaseCommand] {
        var byReason: [ReleaseReason: [ReleaseItem]] = [:]
        for i in jobs.states.indices {
            guard case .releasing(let token, let reason, false) = jobs.states[i].phase else { continue }
            byReason[reason, default: []].append(ReleaseItem(job: jobs.states[i].spec.name, token: token))
            jobs.states[i].phase = .releasing(token: token, reason: reason, sent: true)
        }
        var commands: [LeaseCommand] = []
        for reason in [ReleaseReason.released, .handedOff] {
            guard let items = byReason[reason] else { continue }
            let id = allocateID()
            inFlight[id] = .release(items: items, reason: reason)
            commands.append(.release(id: id, items: items, reason: reason))
        }
        return commands
    }

    // MARK: - Replies

    private mutating func handleAcquire(
        names: [String], sentAt: Duration, result: Result<AcquireReply, LeaseCallFailure>, now: Duration
    ) {
        switch result {
        case .failure(let failure):
            // Not an availability signal (see `noteRedis`): the member tick decides "down".
            for name in names {
                guard var state = jobs[name], state.phase == .acquiring else { continue }
                state.releasedWhileAcquiring = false
                state.failures += 1
                if failure.outcomeUnknown {
                    state.mayHold = true
                    state.unknownAcquireUntil = now + state.spec.timing.ttl * 10
                }
                state.phase = .standby(attemptAt: now + backoff(failures: state.failures, cap: .seconds(2)))
                settleRemoved(&state)
                jobs[name] = state
            }
        case .success(let reply):
            noteRedis(up: true, detail: nil, now: now)
            fleet.noteRedisClock(reply.redisNowMs, at: now)
            for (name, outcome) in zip(names, reply.outcomes) {
                guard var state = jobs[name], state.phase == .acquiring else { continue }
                let previousFailures = state.failures
                state.failures = 0
                let releasedMeanwhile = state.releasedWhileAcquiring
                state.releasedWhileAcquiring = false
                if case .failed = outcome {
                } else if state.failure != nil {
                    state.failure = nil
                    pendingEvents.append(.jobFailure(job: name, message: nil))
                }
                switch outcome {
                case .failed(let message):
                    // The step left no lease in our name; the key stays broken until someone
                    // fixes it, so retry with backoff and report the message once.
                    state.failures = previousFailures + 1
                    state.mayHold = state.unknownAcquireMayLand(now: now)
                    if state.failure != message {
                        state.failure = message
                        pendingEvents.append(.jobFailure(job: name, message: message))
                    }
                    state.phase =
                        shuttingDown
                        ? .retired
                        : .standby(attemptAt: now + backoff(failures: state.failures, cap: state.spec.timing.ttl))
                case .acquired(let token, let takeover, let gap):
                    becomeLeader(&state, token: token, sentAt: sentAt, now: now, takeover: takeover, gapMs: gap)
                case .alreadyHeld(let token) where token == state.unsureReleaseOf && !shuttingDown:
                    state.phase = .releasing(token: token, reason: .released, sent: false)
                    state.quietRelease = true
                case .alreadyHeld(let token):
                    becomeLeader(&state, token: token, sentAt: sentAt, now: now, takeover: .reacquired, gapMs: nil)
                case .held(let holder, let pttl) where holder.isEmpty && pttl >= 0:
                    // Free, but released less than our standby delay ago (the placement
                    // wait Redis enforced): try again when the delay is over.
                    state.mayHold = state.unknownAcquireMayLand(now: now)
                    state.observedExpiry = nil
                    state.holder = nil
                    let remaining = Duration.milliseconds(pttl)
                    if case .spread(let standbyDelay, _) = state.spec.placement {
                        state.freeSince = now + remaining - standbyDelay
                    }
                    state.phase = shuttingDown ? .retired : .standby(attemptAt: now + remaining)
                case .held(let holderValue, let pttl):
                    // Someone else holds it now, but an earlier acquire of ours that timed out
                    // may still land after it expires: until then we keep checking ourselves,
                    // since every other standby trusts that we, a live holder, renew it.
                    state.mayHold = state.unknownAcquireMayLand(now: now)
                    let remaining: Duration
                    switch pttl {
                    case ..<(-1): remaining = .zero  // vanished between GET and PTTL
                    case -1: remaining = state.spec.timing.ttl  // no TTL: someone set it by hand
                    default: remaining = .milliseconds(pttl)
                    }
                    state.observedExpiry = now + remaining
                    state.holder = LeaseValue(parsing: holderValue)?.owner
                    state.freeSince = nil
                    let jitter = self.jitter(upTo: min(.milliseconds(20), state.spec.timing.ttl / 100))
                    if shuttingDown {
                        state.phase = .retired
                    } else {
                        let attemptAt = releasedMeanwhile ? now : now + remaining + jitter
                        state.phase = .standby(attemptAt: attemptAt)
                    }
                }
                // Withdrawn while this acquire was in flight: give the lease straight back.
                if state.withdrawn, case .leading(let token, _, _) = state.phase {
                    state.phase = .releasing(token: token, reason: .released, sent: false)
                    leaseRevision += 1
                }
                // Removed from the catalog meanwhile: the same, and then the entry goes.
                settleRemoved(&state)
                jobs[name] = state
            }
        }
    }

    private mutating func becomeLeader(
        _ state: inout JobState, token: UInt64, sentAt: Duration, now: Duration,
        takeover: TakeoverKind, gapMs: Int64?
    ) {
        state.mayHold = false
        state.standBackUntil = nil
        state.unknownAcquireUntil = nil
        state.observedExpiry = nil
        state.holder = nil
        state.freeSince = nil
        state.handoffSuggested = false
        let timing = state.spec.timing
        let validUntil = sentAt + timing.validityWindow
        let stepDownAt = sentAt + timing.stepDownWindow
        if shuttingDown {
            // Acquired while shutting down (a reply that raced the shutdown): give it back.
            state.phase = .releasing(token: token, reason: .released, sent: false)
            return
        }
        if now >= stepDownAt {
            // The reply came back too late to act on: we hold it, but not long enough to use.
            state.phase = .standby(attemptAt: now)
            state.mayHold = true
            return
        }
        state.phase = .leading(token: token, validUntil: validUntil, stepDownAt: stepDownAt)
        state.leadingSince = now
        leaseRevision += 1
        pendingEvents.append(
            .acquired(job: state.spec.name, token: token, validUntil: validUntil, takeover: takeover, gapMs: gapMs))
    }

    private mutating func handleRenew(
        items: [RenewItem], timings: [LeaseTiming], sentAt: Duration, catalogGeneration sentGeneration: Int?,
        result: Result<RenewReply, LeaseCallFailure>, now: Duration
    ) {
        switch result {
        case .failure(let failure):
            tickFailures += 1
            // A tick sent before the latest success completed, or one that never reached Redis
            // (reconnect backoff), is stale news once Redis answered.
            if lastSuccessAt == nil || (failure.attempted && sentAt >= lastSuccessAt!) {
                noteRedis(up: false, detail: failure.message)
            }
            nextTickAt = now + backoff(failures: tickFailures, cap: tickInterval)
        case .success(let reply):
            tickFailures = 0
            noteRedis(up: true, detail: nil, now: now)
            fleet.noteRedisClock(reply.redisNowMs, at: now)
            lastTickRedisMs = reply.redisNowMs
            nextTickAt = sentAt + tickInterval
            if !items.isEmpty { leaseRevision += 1 }
            if let sentGeneration { publishedGeneration = sentGeneration }
            if !reply.catalogPresent, !carriedJobs.isEmpty, publishedGeneration == catalogGeneration {
                // Redis lost the job set (a restart without persistence): publish it again.
                publishedGeneration = nil
            }
            for ((item, timing), renewed) in zip(zip(items, timings), reply.renewed) {
                guard var state = jobs[item.job], case .leading(let token, let validUntil, _) = state.phase,
                    token == item.token
                else { continue }
                if renewed {
                    // The rules this renewal was sent under, not the current ones: Redis
                    // counts the TTL that was sent.
                    let newValidUntil = max(validUntil, sentAt + timing.validityWindow)
                    state.phase = .leading(
                        token: token, validUntil: newValidUntil, stepDownAt: newValidUntil - timing.grace)
                } else {
                    state.phase = .standby(attemptAt: now)
                    state.handoffSuggested = false
                    pendingEvents.append(.lost(job: item.job, token: token, reason: .expired))
                }
                jobs[item.job] = state
            }
            if fleet.update(reply.members, now: now) {
                forgetUnadvertisedCatalogs()
                pendingEvents.append(.membersChanged(fleet.members))
            }
            if let duplicate = reply.duplicateIncarnation, duplicate != reportedDuplicate {
                reportedDuplicate = duplicate
                pendingEvents.append(.duplicateMember(incarnation: duplicate))
            }
            for job in reply.handoffRequests {
                guard var state = jobs[job], case .leading = state.phase else { continue }
                state.handoffSuggested = true
                state.operatorHandoff = true
                jobs[job] = state
                pendingEvents.append(.handoffSuggested(job: job, to: nil))
            }
        }
    }

    private mutating func handleRelease(
        items: [ReleaseItem], reason: ReleaseReason, result: Result<[Bool], LeaseCallFailure>, now: Duration
    ) {
        let flags: [Bool]
        switch result {
        case .failure:
            flags = Array(repeating: false, count: items.count)
        case .success(let released):
            noteRedis(up: true, detail: nil, now: now)
            flags = released
        }
        let outcomeUnknown = (try? result.get()) == nil
        for (item, released) in zip(items, flags) {
            guard var state = jobs[item.job], case .releasing(let token, _, true) = state.phase else { continue }
            // A failed call may or may not have deleted the lease: if it did not, the lease
            // expires on its own, and a later acquire takes it up again. On shutdown we do
            // not wait for it.
            state.mayHold = outcomeUnknown
            if outcomeUnknown {
                // Delayed, this release may still delete the lease it names: see unsureReleaseOf.
                if let token { state.unsureReleaseOf = token }
            } else {
                // Redis answered: no lease with an older token of ours can exist any more.
                state.unsureReleaseOf = nil
            }
            let quiet = state.quietRelease
            state.quietRelease = false
            if shuttingDown || state.removed {
                // A removed job whose release failed is not retried: its lease ends at its TTL.
                state.phase = .retired
            } else {
                state.freeSince = now
                state.phase = .standby(
                    attemptAt: placementDelayedAttempt(for: state, earliest: now + .milliseconds(1), now: now))
                if state.operatorHandoff, released {
                    // The operator wants the job elsewhere: stand back for a stability window
                    // (the lease TTL for `any` placement), then placement decides again.
                    var window = state.spec.timing.ttl
                    if case .spread(_, let stability) = state.spec.placement { window = max(window, stability) }
                    state.standBackUntil = now + window
                }
            }
            state.operatorHandoff = false
            jobs[item.job] = state
            if let token, !quiet {
                pendingEvents.append(.released(job: item.job, token: token, reason: reason, confirmed: released))
            }
        }
    }

    private mutating func handleCatalog(digest: String, result: Result<[String], LeaseCallFailure>, now: Duration) {
        switch result {
        case .success(let names) where !names.isEmpty:
            catalogFetches[digest] = nil
            catalogs[digest] = Set(names)
            catalogsRevision += 1
        case .success:
            // Not published yet (its member publishes on its next tick) or lost with Redis's
            // data: look again after a tick or two.
            catalogFetches[digest] = .some(now + tickInterval * 2)
        case .failure:
            catalogFetches[digest] = .some(now + backoff(failures: 3, cap: tickInterval))
        }
    }

    /// Forgets job sets no reported member advertises any more (and their pending fetches).
    private mutating func forgetUnadvertisedCatalogs() {
        var advertised = Set(fleet.members.compactMap(\.catalog))
        advertised.insert(catalogDigest)
        for digest in catalogs.keys where !advertised.contains(digest) { catalogs[digest] = nil }
        for digest in catalogFetches.keys where !advertised.contains(digest) { catalogFetches[digest] = nil }
    }

    // MARK: - Placement

    /// Standbys of `spread` jobs wait until membership is known, so a member that just
    /// started does not grab everything before it has seen the others.
    private func gateOpen(for state: JobState) -> Bool {
        if state.withdrawn || state.removed { return false }
        if case .spread = state.spec.placement { return membersKnown }
        return true
    }

    private func placementDelayedAttempt(for state: JobState, earliest: Duration, now: Duration) -> Duration {
        guard case .spread(let standbyDelay, _) = state.spec.placement, membersKnown,
            let preferred = preferredMember(of: state.spec.name, now: now),
            preferred != settings.owner.member
        else { return earliest }
        // The preferred member is live: let it take the lease first.
        let freeSince = state.freeSince ?? state.observedExpiry ?? now
        return max(earliest, freeSince + standbyDelay)
    }

    /// Availability is reported once per state change. Any success proves Redis up; only the
    /// member tick (one call at a time on its own connection, every renew interval even with
    /// no leases) proves it down, and only with a call that reached Redis after the latest
    /// success. After an outage a connection may still sit in its reconnect backoff and fail
    /// calls without trying, and a call sent before the recovery may fail after it: both made
    /// the state flap (up, down, up, down, up) right after Redis came back.
    private mutating func noteRedis(up: Bool, detail: String?, now: Duration? = nil) {
        if up, let now { lastSuccessAt = max(lastSuccessAt ?? now, now) }
        guard redisUp != up else { return }
        redisUp = up
        pendingEvents.append(.redisAvailability(up: up, detail: detail))
    }

    // MARK: - Helpers

    private mutating func allocateID() -> Int {
        defer { nextCommandID += 1 }
        return nextCommandID
    }

    /// Exponential backoff from 50 ms, capped, with full jitter on the upper half so members
    /// retrying against a recovering Redis do not move in lockstep.
    private mutating func backoff(failures: Int, cap: Duration) -> Duration {
        let base = Duration.milliseconds(50) * (1 << min(max(failures - 1, 0), 10))
        let ceiling = min(base, cap)
        return ceiling / 2 + jitter(upTo: ceiling / 2)
    }

    private mutating func jitter(upTo limit: Duration) -> Duration {
        let micros = limit.wholeMilliseconds * 1000
        guard micros > 0 else { return .zero }
        return .microseconds(Int64(rng.next() % UInt64(micros)))
    }
}

/// What placement memos are valid for: the live candidates, the digests they advertise and
/// the revision of the known job sets.
private struct PlacementKey: Hashable, Sendable {
    var members: [RendezvousMember] = []
    var catalogs: [String?] = []
    var revision = 0
}

/// Who this member is and what it publishes: its owner id, placement weight and heartbeat
/// metadata, plus the engine's batch size and jitter seed.
public struct LeaseMemberSettings: Sendable, Hashable {
    /// This process's owner id.
    public var owner: OwnerID
    /// Placement weight published in the heartbeat.
    public var weight: Double
    /// Extra member metadata published in the heartbeat (host, pid, version, ...).
    public var metadata: [String: String]
    /// Largest batch of jobs in one acquire script call (keeps each call short on Redis).
    public var maxAcquireBatch: Int
    /// Seed for jitter, so simulations replay exactly.
    public var seed: UInt64
    /// The digest this member advertises for its job set (same digest, same jobs); nil
    /// derives one from the job names. The daemon passes its catalog's digest.
    public var catalogDigest: String?

    /// Creates member settings.
    public init(
        owner: OwnerID, weight: Double = 1, metadata: [String: String] = [:],
        maxAcquireBatch: Int = 500, seed: UInt64 = 0, catalogDigest: String? = nil
    ) {
        self.owner = owner
        self.weight = weight
        self.metadata = metadata
        self.maxAcquireBatch = maxAcquireBatch
        self.seed = seed
        self.catalogDigest = catalogDigest
    }
}
