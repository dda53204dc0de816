import LeaseholdElection

/// One lease engine on a fake clock: tests and the bench poll it, move its time and answer
/// its commands by hand, with no real time and no Redis. (`package`: the engine's messages
/// are not public API.)
package struct EngineDriver {
    /// The engine driven.
    package var engine: LeaseEngine
    /// The fake clock (engine time).
    package var now: Duration = .zero
    private var sent: [LeaseCommand] = []
    private var events: [LeadershipEvent] = []

    /// An engine for `jobs` as member `member` (incarnation `i1` unless given).
    package init(jobs: [LeaseJob], member: String = "a", incarnation: String? = "i1", seed: UInt64 = 1) {
        engine = LeaseEngine(
            settings: .init(owner: OwnerID(member: member, incarnation: incarnation), seed: seed), jobs: jobs,
            now: .zero)
    }

    /// Polls at the current time and records what came out.
    @discardableResult
    package mutating func poll() -> LeaseEngine.Step {
        let step = engine.poll(now: now)
        sent += step.commands
        events += step.events
        return step
    }

    /// Moves the clock forward, polling at every wake-up the engine asks for on the way.
    package mutating func advance(to target: Duration) {
        while true {
            let step = poll()
            guard let wake = step.wakeAt, wake <= target, wake > now else { break }
            now = wake
        }
        now = target
        poll()
    }

    /// The commands sent since the last call.
    package mutating func takeCommands() -> [LeaseCommand] {
        defer { sent.removeAll() }
        return sent
    }

    /// The events reported since the last call.
    package mutating func takeEvents() -> [LeadershipEvent] {
        defer { events.removeAll() }
        return events
    }

    /// Feeds a command's result back at the current time.
    package mutating func complete(_ completion: LeaseCompletion) {
        engine.complete(completion, now: now)
    }

    /// Answers a renew tick with the given membership.
    package mutating func answerTick(
        _ command: LeaseCommand, members: [MemberInfo], renewed: Bool = true, redisNowMs: Int64 = 1_000_000
    ) {
        guard case .renew(let id, let batch) = command else { preconditionFailure("not a renew: \(command)") }
        complete(
            .renew(
                id: id,
                .success(
                    RenewReply(
                        redisNowMs: redisNowMs, renewed: Array(repeating: renewed, count: batch.leases.count),
                        members: members))))
    }

    /// Answers a renew tick with members `names`, each live for another minute.
    package mutating func answerTick(
        _ command: LeaseCommand, members names: [String] = ["a"], renewed: Bool = true, redisNowMs: Int64 = 1_000_000
    ) {
        answerTick(
            command, members: names.map { MemberInfo(name: $0, expiresAtMs: redisNowMs + 60_000, weight: 1) },
            renewed: renewed,
            redisNowMs: redisNowMs)
    }

    /// Answers every acquire among `commands` with `outcome(request)`.
    package mutating func answerAcquires(
        _ commands: [LeaseCommand], redisNowMs: Int64 = 1_000_000, _ outcome: (Int, AcquireRequest) -> AcquireOutcome
    ) {
        for (id, requests) in Self.acquires(commands) {
            complete(
                .acquire(
                    id: id,
                    .success(
                        AcquireReply(
                            redisNowMs: redisNowMs,
                            outcomes: requests.enumerated().map { outcome($0.offset, $0.element) }))))
        }
    }

    /// The acquire commands among `commands`.
    package static func acquires(_ commands: [LeaseCommand]) -> [(id: Int, requests: [AcquireRequest])] {
        commands.compactMap { if case .acquire(let id, let requests) = $0 { (id, requests) } else { nil } }
    }

    /// The renew commands among `commands`.
    package static func renews(_ commands: [LeaseCommand]) -> [(id: Int, batch: RenewBatch)] {
        commands.compactMap { if case .renew(let id, let batch) = $0 { (id, batch) } else { nil } }
    }

    /// The release commands among `commands`.
    package static func releases(_ commands: [LeaseCommand]) -> [(id: Int, items: [ReleaseItem])] {
        commands.compactMap { if case .release(let id, let items, _) = $0 { (id, items) } else { nil } }
    }
}
