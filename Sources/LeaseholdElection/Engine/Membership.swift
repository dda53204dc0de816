/// What one member knows about the fleet: the members the last tick reported, when each was
/// first seen, who announced leaving, and the Redis clock, so liveness is judged at decision
/// time rather than at the time of the report. Pure state with no I/O, owned by the engine.
struct Membership: Sendable {
    /// This member, live by definition while it decides.
    let me: MemberInfo
    /// How long a member's heartbeat stays live after its tick (changes with the catalog).
    var heartbeatTTL: Duration
    /// How far past its known heartbeat expiry another member still counts as live.
    var livenessGrace: Duration

    /// The members as reported by the last tick, sorted by name.
    private(set) var members: [MemberInfo] = []
    /// Whether a tick has reported the members yet.
    private(set) var isKnown = false
    /// When each reported member was first seen (local time), for the stability window.
    private(set) var firstSeen: [String: Duration] = [:]
    /// When each reported member was first seen advertising its current catalog (local
    /// time): a member that just gained a job must be stable with it before a handoff.
    private(set) var catalogSince: [String: Duration] = [:]
    /// Members that announced their shutdown, by local time of the announcement.
    private var departed: [String: Duration] = [:]
    /// Redis time (ms) at a local instant: lets liveness be judged at decision time.
    private var redisClock: (redisMs: Int64, local: Duration)?

    init(me: MemberInfo, heartbeatTTL: Duration, livenessGrace: Duration) {
        self.me = me
        self.heartbeatTTL = heartbeatTTL
        self.livenessGrace = livenessGrace
    }

    /// Records the Redis time a reply carried.
    mutating func noteRedisClock(_ redisMs: Int64, at now: Duration) {
        redisClock = (redisMs, now)
    }

    /// `name` announced that it is shutting down: it stops counting as live at once.
    mutating func memberLeft(_ name: String, at now: Duration) {
        departed[name] = now
    }

    /// Takes the member list of a tick; returns true when it differs from the last one (or is
    /// the first), so the engine reports a membership change.
    mutating func update(_ reported: [MemberInfo], now: Duration) -> Bool {
        let sorted = reported.sorted { $0.name < $1.name }
        let names = Set(sorted.map(\.name))
        for name in firstSeen.keys where !names.contains(name) { firstSeen[name] = nil }
        for name in names where firstSeen[name] == nil { firstSeen[name] = now }
        let previousCatalogs = Dictionary(members.map { ($0.name, $0.catalog) }, uniquingKeysWith: { a, _ in a })
        for name in catalogSince.keys where !names.contains(name) { catalogSince[name] = nil }
        for member in sorted where catalogSince[member.name] == nil || previousCatalogs[member.name] != member.catalog {
            catalogSince[member.name] = now
        }
        let changed =
            sorted.map(\.name) != members.map(\.name) || sorted.map(\.weight) != members.map(\.weight)
            || sorted.map(\.catalog) != members.map(\.catalog)
        members = sorted
        defer { isKnown = true }
        return changed || !isKnown
    }

    /// When the heartbeat of the process `owner` lapses, in local time, if it is live now.
    /// Only the same incarnation counts: a restarted process under the same name does not
    /// renew its predecessor's leases.
    func heartbeatEnd(of owner: OwnerID, now: Duration) -> Duration? {
        let member = owner.member
        guard let clock = redisClock, departed[member] == nil || now - departed[member]! >= heartbeatTTL,
            let info = members.first(where: { $0.name == member }), info.incarnation == owner.incarnation
        else { return nil }
        let end = clock.local + .milliseconds(info.expiresAtMs - clock.redisMs) + livenessGrace
        return end > now ? end : nil
    }

    /// The members live at `now` (this member always among them).
    func live(at now: Duration) -> [MemberInfo] {
        guard let clock = redisClock else { return members.filter { departed[$0.name] == nil } }
        let redisNow = clock.redisMs + (now - clock.local - livenessGrace).wholeMilliseconds
        var live = members.filter { member in
            if let leftAt = departed[member.name], now - leftAt < heartbeatTTL + livenessGrace { return false }
            return member.expiresAtMs > redisNow
        }
        if !live.contains(where: { $0.name == me.name }) {
            // We are alive by definition while deciding.
            live.append(me)
        }
        return live
    }
}
