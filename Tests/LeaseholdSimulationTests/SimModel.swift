import Leasehold

// The pieces of the simulated world that are not the engine: a seeded generator, an event
// queue ordered by true time, per-member drifting clocks and an in-memory Redis that runs
// the lease scripts' semantics (LeaseScripts.swift) on the Redis clock (= true time).

/// SplitMix64: tiny, fast, reproducible.
struct SimRandom {
    // The seed is scrambled first so neighbouring seeds start far apart (and the seeds named
    // in Docs/TESTING.md keep replaying the same schedules).
    private var generator: SplitMix64
    init(seed: UInt64) { generator = SplitMix64(seed: seed &* 0x2545_F491_4F6C_DD1D &+ 0x1234_5678) }

    mutating func next() -> UInt64 { generator.next() }

    /// Uniform in 0..<n.
    mutating func below(_ n: Int) -> Int { n <= 1 ? 0 : Int(next() % UInt64(n)) }
    /// Uniform in [0, 1).
    mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
    mutating func chance(_ p: Double) -> Bool { p > 0 && unit() < p }
    /// Uniform nanoseconds in [low, high].
    mutating func ns(_ low: Int64, _ high: Int64) -> Int64 {
        high <= low ? low : low + Int64(next() % UInt64(high - low + 1))
    }
}

/// Nanoseconds helpers (true time is an Int64 count of nanoseconds since the simulation start).
enum NS {
    static let us: Int64 = 1_000
    static let ms: Int64 = 1_000_000
    static let s: Int64 = 1_000_000_000
    static func of(_ d: Duration) -> Int64 {
        let (s, atto) = d.components
        return s * 1_000_000_000 + atto / 1_000_000_000
    }
    static func text(_ t: Int64) -> String {
        let ms = Double(t) / 1e6
        return "\((ms * 1000).rounded() / 1000)ms"
    }
}

/// A member's monotonic clock: local = offset + rate × true. `rate` = 1 + ε.
struct SimClock {
    var offsetNs: Double
    var rate: Double

    func local(_ trueNs: Int64) -> Duration { .nanoseconds(Int64((offsetNs + Double(trueNs) * rate).rounded(.down))) }

    /// The first true instant at which the local clock reads at least `local`.
    func trueTime(_ local: Duration) -> Int64 {
        var t = Int64(((Double(NS.of(local)) - offsetNs) / rate).rounded(.up))
        while self.local(t) < local { t += 1 }
        return t
    }
}

/// A binary min-heap of timed events; ties broken by insertion order, so runs replay exactly.
struct EventQueue<Payload> {
    private var heap: [(time: Int64, seq: Int, payload: Payload)] = []
    private var seq = 0

    var isEmpty: Bool { heap.isEmpty }

    mutating func push(_ time: Int64, _ payload: Payload) {
        seq += 1
        heap.append((time, seq, payload))
        var i = heap.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            guard less(i, p) else { break }
            heap.swapAt(i, p)
            i = p
        }
    }

    mutating func pop() -> (time: Int64, payload: Payload)? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let top = heap.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1
            let r = l + 1
            var m = i
            if l < heap.count, less(l, m) { m = l }
            if r < heap.count, less(r, m) { m = r }
            if m == i { break }
            heap.swapAt(i, m)
            i = m
        }
        return (top.time, top.payload)
    }

    private func less(_ a: Int, _ b: Int) -> Bool {
        heap[a].time != heap[b].time ? heap[a].time < heap[b].time : heap[a].seq < heap[b].seq
    }
}

/// The in-memory Redis: keys with expiry on the Redis clock (true time), fence counters,
/// TIME, the members zset/hashes and the released channel. Nothing is persisted: a restart
/// forgets everything, but TIME keeps moving forward.
struct SimRedis {
    struct Lease {
        var owner: String
        var token: UInt64
        var expiresAt: Int64
    }
    struct Member {
        var expiresAtMs: Int64
        var incarnation: String
        var tickAtMs: Int64
        var weight: Double
        var catalog: String? = nil
    }

    /// Redis TIME at true time 0, in microseconds (a realistic epoch, so tokens look real).
    let epochUs: Int64 = 1_750_000_000_000_000
    var leases: [String: Lease] = [:]
    var fence: [String: UInt64] = [:]
    /// The `state` hash's `holder` field (non-empty after an acquire, emptied by a release).
    var holder: [String: String] = [:]
    var members: [String: Member] = [:]
    /// The catalog sets (`ns:catalog:<digest>`).
    var catalogs: [String: Set<String>] = [:]
    var up = true
    /// Every token issued, per job, for invariant (b).
    var lastIssued: [String: UInt64] = [:]
    var tokenViolations: [String] = []

    func nowUs(_ t: Int64) -> Int64 { epochUs + t / NS.us }
    func nowMs(_ t: Int64) -> Int64 { nowUs(t) / 1000 }

    private func live(_ job: String, at t: Int64) -> Lease? {
        guard let lease = leases[job], lease.expiresAt > t else { return nil }
        return lease
    }

    mutating func restart() {
        leases = [:]
        fence = [:]
        holder = [:]
        members = [:]
        catalogs = [:]
    }

    /// LeaseScripts.acquire.
    mutating func acquire(_ requests: [AcquireRequest], owner: String, at t: Int64) -> AcquireReply {
        let us = nowUs(t)
        var outcomes: [AcquireOutcome] = []
        for request in requests {
            let job = request.job
            if let lease = live(job, at: t) {
                if lease.owner == owner {
                    leases[job]!.expiresAt = t + request.ttlMs * NS.ms
                    outcomes.append(.alreadyHeld(token: lease.token))
                } else {
                    outcomes.append(.held(by: "\(lease.owner):\(lease.token)", pttlMs: (lease.expiresAt - t) / NS.ms))
                }
                continue
            }
            let token = max((fence[job] ?? 0) + 1, UInt64(us))
            if let last = lastIssued[job], token <= last {
                tokenViolations.append("job \(job): token \(token) issued after \(last) at \(NS.text(t))")
            }
            lastIssued[job] = token
            fence[job] = token
            leases[job] = Lease(owner: owner, token: token, expiresAt: t + request.ttlMs * NS.ms)
            let takeover: TakeoverKind = (holder[job].map { !$0.isEmpty } ?? false) ? .expiredTakeover : .acquired
            holder[job] = "\(owner):\(token)"
            outcomes.append(
                .acquired(
                    token: token, takeover: takeover, gapMs: takeover == .expiredTakeover ? request.gapHintMs : nil))
        }
        return AcquireReply(redisNowMs: nowMs(t), outcomes: outcomes)
    }

    /// LeaseScripts.renew (heartbeat, duplicate detection and live members included).
    mutating func renew(_ batch: RenewBatch, owner: OwnerID, weight: Double, at t: Int64) -> RenewReply {
        let ms = nowMs(t)
        var renewed: [Bool] = []
        let ownerText = owner.description
        for item in batch.leases {
            if let lease = live(item.job, at: t), lease.owner == ownerText, lease.token == item.token {
                leases[item.job]!.expiresAt = t + item.ttlMs * NS.ms
                renewed.append(true)
            } else {
                renewed.append(false)
            }
        }
        var duplicate: String?
        if batch.previousTickMs > 0, let seen = members[owner.member], seen.incarnation != owner.incarnation,
            seen.tickAtMs >= batch.previousTickMs
        {
            duplicate = seen.incarnation
        }
        members[owner.member] = Member(
            expiresAtMs: ms + batch.heartbeatTTLMs, incarnation: owner.incarnation, tickAtMs: ms, weight: weight,
            catalog: batch.catalogDigest)
        if let names = batch.publishJobs { catalogs[batch.catalogDigest] = Set(names) }
        let liveMembers = members.filter { $0.value.expiresAtMs >= ms }
            .sorted {
                $0.value.expiresAtMs != $1.value.expiresAtMs
                    ? $0.value.expiresAtMs < $1.value.expiresAtMs : $0.key < $1.key
            }
            .map {
                MemberInfo(
                    name: $0.key, expiresAtMs: $0.value.expiresAtMs, weight: $0.value.weight,
                    incarnation: $0.value.incarnation, catalog: $0.value.catalog)
            }
        return RenewReply(
            redisNowMs: ms, renewed: renewed, members: liveMembers, duplicateIncarnation: duplicate,
            catalogPresent: catalogs[batch.catalogDigest] != nil)
    }

    /// SMEMBERS of a catalog set.
    func catalog(_ digest: String) -> [String] {
        catalogs[digest].map { $0.sorted() } ?? []
    }

    /// LeaseScripts.release; returns the flags and the jobs to publish on the released channel.
    mutating func release(_ items: [ReleaseItem], owner: String, at t: Int64) -> (flags: [Bool], published: [String]) {
        var flags: [Bool] = []
        var published: [String] = []
        for item in items {
            guard let lease = live(item.job, at: t), lease.owner == owner,
                item.token == nil || item.token == lease.token
            else {
                flags.append(false)
                continue
            }
            leases[item.job] = nil
            holder[item.job] = ""
            published.append(item.job)
            flags.append(true)
        }
        return (flags, published)
    }
}
