/// The engine's per-job state and the table that holds it.
extension LeaseEngine {
    /// Everything the engine knows about one job on this member.
    struct JobState: Sendable {
        /// Whether an acquire of ours with an unknown outcome may still take the lease.
        func unknownAcquireMayLand(now: Duration) -> Bool {
            unknownAcquireUntil.map { now < $0 } ?? false
        }

        var spec: LeaseJob
        var phase: Phase
        /// Set when Redis may hold a lease in our name that we do not count as ours (an
        /// acquire timed out, or we stepped down while the lease may still exist).
        var mayHold = false
        /// Local time at which we expect the current holder's lease to end, if observed.
        var observedExpiry: Duration?
        /// Local time the lease was seen free (released message or empty holder), for
        /// placement's standby delay.
        var freeSince: Duration?
        /// Whether a handoff was already suggested for the current token.
        var handoffSuggested = false
        /// Consecutive failed attempts (for backoff).
        var failures = 0
        /// A released message came while an acquire was in flight: retry at once if that
        /// acquire found the lease still held.
        var releasedWhileAcquiring = false
        /// The owner (member and incarnation) holding the lease when we last looked (nil: free
        /// or unknown).
        var holder: OwnerID?
        /// When this member last sent an acquire for the job.
        var lastAttemptAt: Duration?
        /// Skip the holder-is-alive shortcut once (after pub/sub messages may have been lost).
        var forceAttempt = false
        /// Until when an acquire of ours whose outcome is unknown may still reach Redis and
        /// take the lease (a request that timed out can be executed long after, once the path
        /// heals). A later reply saying "held by someone else" does not clear `mayHold` before.
        var unknownAcquireUntil: Duration?
        /// When this member last became leader, so a handoff is not suggested before the
        /// leadership itself has been stable (avoids ping-pong with a preferred member that
        /// is live but does not take the job).
        var leadingSince: Duration?
        /// A release of this token failed with an unknown outcome: it may still reach Redis
        /// later and delete a lease carrying this token, so such a lease is never taken up
        /// again (it is released again instead, and a fresh token acquired).
        var unsureReleaseOf: UInt64?
        /// The release in flight only settles `unsureReleaseOf`: it reports no event.
        var quietRelease = false
        /// The last per-job failure reported for this job (a key of the wrong type), so it is
        /// reported once, not on every attempt.
        var failure: String?
        /// An operator asked this member to hand the job over (`leasehold release`).
        var operatorHandoff = false
        /// After an operator's handoff, this member does not take the job back before this
        /// local time: as the rendezvous choice it would otherwise re-acquire it at once.
        var standBackUntil: Duration?
        /// The layer above asked this member to stop competing for the job (its work cannot
        /// run here for now): no acquire is sent until it rejoins.
        var withdrawn = false
        /// The job left this member's catalog: its lease is given back, and the entry goes
        /// once nothing of it is held or in flight any more.
        var removed = false
    }

    /// The engine's jobs in catalog order: addressable by name, and walked without hashing,
    /// because every poll walks all of them (10,000 jobs must stay cheap).
    struct JobTable: Sendable {
        var states: [JobState]
        private var index: [String: Int]

        init(_ states: [JobState]) {
            self.states = states
            self.index = [:]
            reindex()
        }

        subscript(name: String) -> JobState? {
            get { index[name].map { states[$0] } }
            set { if let i = index[name], let newValue { states[i] = newValue } }
        }

        /// Adds a job the table does not know yet (a catalog change).
        mutating func append(_ state: JobState) {
            guard index[state.spec.name] == nil else { return }
            index[state.spec.name] = states.count
            states.append(state)
        }

        /// Drops the entries of removed jobs that hold and await nothing any more. An entry
        /// whose release had an unknown outcome stays (retired): that release may still reach
        /// Redis, and if the job comes back, its `unsureReleaseOf` or stand-back must survive,
        /// or the late release deletes the new leadership's lease.
        mutating func dropSettledRemovals() -> Bool {
            let before = states.count
            states.removeAll {
                $0.removed && $0.phase == .retired && !$0.mayHold && $0.unsureReleaseOf == nil
                    && $0.standBackUntil == nil
            }
            guard states.count != before else { return false }
            reindex()
            return true
        }

        private mutating func reindex() {
            index = Dictionary(states.enumerated().map { ($1.spec.name, $0) }, uniquingKeysWith: { first, _ in first })
        }
    }
}
