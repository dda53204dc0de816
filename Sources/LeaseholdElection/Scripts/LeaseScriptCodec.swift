import RedisClient

/// Turns engine commands into script calls and script replies back into engine values.
///
/// Kept apart from the driver so the decoding of every reply shape (including malformed
/// ones) can be tested without a server.
package struct LeaseScriptCodec: Sendable {
    /// The key schema.
    package let keys: LeaseKeys
    /// This process's owner id.
    package let owner: OwnerID
    /// How many entries each job's events stream keeps (approximately).
    package let eventsMaxLength: Int

    /// Creates a codec for one owner in one namespace.
    package init(keys: LeaseKeys, owner: OwnerID, eventsMaxLength: Int = 1000) {
        self.keys = keys
        self.owner = owner
        self.eventsMaxLength = eventsMaxLength
    }

    /// A script call: which script, with which keys and arguments.
    package struct Call: Sendable, Hashable {
        /// The script to run.
        package var script: RedisScript
        /// Its KEYS.
        package var keys: [String]
        /// Its ARGV.
        package var arguments: [String]
        /// A short name for metrics and logs (acquire, renew, release).
        package var operation: String
    }

    /// The call for an acquire batch; `epoch` is the namespace epoch this member saw last.
    package func acquireCall(_ requests: [AcquireRequest], epoch: EpochArguments = EpochArguments()) -> Call {
        var keyList = [keys.jobs, keys.epoch]
        var args = [
            owner.description, owner.member, String(eventsMaxLength), String(requests.count), epoch.seen,
            String(epoch.quarantineMs),
        ]
        keyList.reserveCapacity(2 + requests.count * 4)
        args.reserveCapacity(6 + requests.count * 4)
        for request in requests {
            keyList += [
                keys.lease(request.job), keys.fence(request.job), keys.state(request.job), keys.events(request.job),
            ]
            args += [
                request.job, String(request.ttlMs), request.gapHintMs.map(String.init) ?? "",
                request.minFreeMs.map(String.init) ?? "",
            ]
        }
        return Call(script: LeaseScripts.acquire, keys: keyList, arguments: args, operation: "acquire")
    }

    /// The call for a renew batch; `metadata` is written into the member hash.
    package func renewCall(
        _ batch: RenewBatch, metadata: [String: String], epoch: EpochArguments = EpochArguments()
    ) -> Call {
        var keyList = [
            keys.members, keys.member(owner.member), keys.handoffRequests(owner.member),
            keys.catalog(batch.catalogDigest), keys.epoch,
        ]
        let publish = batch.publishJobs ?? []
        var args = [
            owner.description, owner.member, String(batch.heartbeatTTLMs), owner.incarnation,
            String(batch.previousTickMs), keys.member(""), String(eventsMaxLength), String(batch.leases.count),
            batch.catalogDigest, String(batch.jobCount), String(publish.count), epoch.seen,
            String(epoch.quarantineMs),
        ]
        for item in batch.leases {
            keyList += [keys.lease(item.job), keys.events(item.job)]
            args += [item.job, String(item.token), String(item.ttlMs)]
        }
        args += publish
        for (field, value) in metadata.sorted(by: { $0.key < $1.key }) {
            args += [field, value]
        }
        return Call(script: LeaseScripts.renew, keys: keyList, arguments: args, operation: "renew")
    }

    /// The call for a release batch; `leaving` tells standbys this member is shutting down;
    /// `downMs` (a crash release) says how long ago the holder died.
    package func releaseCall(
        _ items: [ReleaseItem], reason: ReleaseReason, leaving: Bool = false, downMs: Int64? = nil
    ) -> Call {
        var keyList: [String] = []
        var args = [
            owner.description, owner.member, reason.rawValue, keys.releasedChannel, String(eventsMaxLength),
            String(items.count), leaving ? "1" : "0",
        ]
        for item in items {
            keyList += [keys.lease(item.job), keys.state(item.job), keys.events(item.job)]
            args += [item.job, item.token.map(String.init) ?? ""]
        }
        if let downMs { args.append(String(max(0, downMs))) }
        return Call(script: LeaseScripts.release, keys: keyList, arguments: args, operation: "release")
    }

    /// The call that reads the job set advertised under `digest`.
    package func fetchCatalogCommand(_ digest: String) -> [String] { ["SMEMBERS", keys.catalog(digest)] }

    /// Decodes a catalog fetch: the job names (an empty set reads as none).
    package func decodeCatalog(_ reply: RedisReply) throws(LeaseCallFailure) -> [String] {
        try Self.array(reply, what: "catalog set").compactMap(\.string)
    }

    /// Parses a released-channel message: the job, and the member if it is leaving.
    package static func parseReleasedMessage(_ payload: String) -> (job: String, leavingMember: String?) {
        let parts = payload.split(separator: " ", maxSplits: 1).map(String.init)
        return (parts.first ?? payload, parts.count > 1 ? parts[1] : nil)
    }

    /// Decodes an acquire reply for `count` requests.
    package func decodeAcquire(_ reply: RedisReply, count: Int) throws(LeaseCallFailure) -> AcquireReply {
        let items = try Self.array(reply, what: "acquire reply")
        guard items.count == count + 3, let now = items[0].integer else {
            throw Self.malformed("acquire reply has \(items.count) elements, expected \(count + 3)")
        }
        let epoch = try Self.epoch(items[1], items[2])
        var outcomes: [AcquireOutcome] = []
        outcomes.reserveCapacity(count)
        for item in items.dropFirst(3) {
            let fields = try Self.array(item, what: "acquire outcome")
            switch fields.first?.integer {
            case 1?:
                guard fields.count == 4, let token = fields[1].string.flatMap(UInt64.init),
                    let kind = fields[2].string.flatMap(TakeoverKind.init(rawValue:))
                else { throw Self.malformed("bad acquired outcome") }
                outcomes.append(.acquired(token: token, takeover: kind, gapMs: fields[3].string.flatMap { Int64($0) }))
            case 2?:
                guard fields.count == 2, let token = fields[1].string.flatMap(UInt64.init)
                else { throw Self.malformed("bad re-acquired outcome") }
                outcomes.append(.alreadyHeld(token: token))
            case 3?:
                guard fields.count >= 2, let message = fields[1].string else {
                    throw Self.malformed("bad failed outcome")
                }
                outcomes.append(.failed(message: message))
            case 0?:
                guard fields.count == 3, let holder = fields[1].string, let pttl = fields[2].integer
                else { throw Self.malformed("bad held outcome") }
                outcomes.append(.held(by: holder, pttlMs: pttl))
            default:
                throw Self.malformed("unknown acquire outcome")
            }
        }
        return AcquireReply(redisNowMs: now, outcomes: outcomes, epoch: epoch)
    }

    /// Decodes a renew reply for `count` leases.
    package func decodeRenew(_ reply: RedisReply, count: Int) throws(LeaseCallFailure) -> RenewReply {
        let items = try Self.array(reply, what: "renew reply")
        guard items.count == 8, let now = items[0].integer else {
            throw Self.malformed("renew reply has \(items.count) elements, expected 8")
        }
        let flags = try Self.array(items[1], what: "renewed flags")
        guard flags.count == count else {
            throw Self.malformed("renew reply has \(flags.count) flags, expected \(count)")
        }
        var renewed: [Bool] = []
        renewed.reserveCapacity(count)
        for flag in flags {
            guard let value = flag.integer else { throw Self.malformed("renewed flag is not an integer") }
            renewed.append(value == 1)
        }
        let flat = try Self.array(items[2], what: "member list")
        guard flat.count % 5 == 0 else {
            throw Self.malformed("member list length \(flat.count) is not a multiple of 5")
        }
        var members: [MemberInfo] = []
        var index = 0
        while index < flat.count {
            guard let name = flat[index].string, let expiry = flat[index + 1].string.flatMap(Double.init),
                let weight = flat[index + 2].string.flatMap(Double.init), expiry.isFinite, weight.isFinite,
                abs(expiry) < 9.0e18  // Int64(expiry) traps beyond Int64's range
            else { throw Self.malformed("bad member entry") }
            let incarnation = flat[index + 3].string.flatMap { $0.isEmpty ? nil : $0 }
            let catalog = flat[index + 4].string.flatMap { $0.isEmpty ? nil : $0 }
            members.append(
                MemberInfo(
                    name: name, expiresAtMs: Int64(expiry), weight: weight, incarnation: incarnation, catalog: catalog))
            index += 5
        }
        let duplicate = items[3].string.flatMap { $0.isEmpty ? nil : $0 }
        let requests = try Self.array(items[4], what: "handoff requests").compactMap(\.string)
        return RenewReply(
            redisNowMs: now, renewed: renewed, members: members, duplicateIncarnation: duplicate,
            handoffRequests: requests, catalogPresent: items[5].integer == 1, epoch: try Self.epoch(items[6], items[7]))
    }

    private static func epoch(_ id: RedisReply, _ quarantine: RedisReply) throws(LeaseCallFailure) -> NamespaceEpoch {
        guard let id = id.string, !id.isEmpty, let until = quarantine.integer else {
            throw malformed("bad namespace epoch")
        }
        return NamespaceEpoch(id: id, quarantineUntilMs: until)
    }

    /// Decodes a release reply for `count` items.
    package func decodeRelease(_ reply: RedisReply, count: Int) throws(LeaseCallFailure) -> [Bool] {
        let flags = try Self.array(reply, what: "release reply")
        guard flags.count == count else {
            throw Self.malformed("release reply has \(flags.count) flags, expected \(count)")
        }
        return flags.map { $0.integer == 1 }
    }

    private static func array(_ reply: RedisReply, what: String) throws(LeaseCallFailure) -> [RedisReply] {
        if case .error(let text) = reply {
            // Redis does not roll back a script's earlier writes when a command raises, so
            // what ran before the error may stand: the outcome is unknown. (Each job's step
            // catches its own errors; this is for the rest, e.g. a server without scripting.)
            throw LeaseCallFailure(outcomeUnknown: true, message: "Redis rejected the \(what): \(text)")
        }
        guard let items = reply.array else { throw malformed("\(what) is not an array") }
        return items
    }

    private static func malformed(_ detail: String) -> LeaseCallFailure {
        // The script ran, but we cannot tell what it did: treat like a timeout.
        LeaseCallFailure(outcomeUnknown: true, message: "malformed lease script reply: \(detail)")
    }
}

/// What a member tells the acquire and renew scripts about the namespace epoch.
package struct EpochArguments: Sendable, Hashable {
    /// The epoch id this member saw last ("" before its first reply).
    package var seen: String
    /// How long a quarantine this member asks for when it finds the epoch lost: its longest
    /// lease TTL (ms).
    package var quarantineMs: Int64

    /// Creates the arguments.
    package init(seen: String = "", quarantineMs: Int64 = 0) {
        self.seen = seen
        self.quarantineMs = quarantineMs
    }
}

extension RedisError {
    /// Whether a command that failed this way may still have been executed by Redis: a
    /// timeout or a connection lost after sending leaves the outcome unknown.
    package var mayHaveExecuted: Bool {
        switch kind {
        case .timeout, .connectionClosed, .protocolError, .readOnly: true
        default: false
        }
    }
}
