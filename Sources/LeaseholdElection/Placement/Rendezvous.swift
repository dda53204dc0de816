#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A 64-bit hash that is identical in every process, run and platform (unlike Swift's
/// per-process seeded `Hasher`), so every member computes the same placement.
///
/// FNV-1a 64 over the bytes, then the splitmix64 finalizer: FNV-1a alone mixes the last
/// bytes poorly into the high bits, which are the bits `Rendezvous.unitHash` uses.
/// Changing this function moves jobs across the whole fleet: the test vectors pin it.
public enum StableHash {
    /// FNV-1a 64 + splitmix64 finalizer of `bytes`.
    public static func hash64(_ bytes: some Sequence<UInt8>) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a 64 offset basis
        for byte in bytes {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01b3  // FNV-1a 64 prime
        }
        hash ^= hash >> 30
        hash &*= 0xbf58_476d_1ce4_e5b9
        hash ^= hash >> 27
        hash &*= 0x94d0_49bb_1331_11eb
        hash ^= hash >> 31
        return hash
    }
}

/// A live member as placement sees it: a name and a relative capacity.
public struct RendezvousMember: Sendable, Hashable {
    /// The member name (unique within the fleet).
    public var name: String
    /// Relative capacity; a member with twice the weight gets about twice the jobs.
    /// Members with a weight that is not positive and finite are never chosen.
    public var weight: Double

    /// Creates a member; weight 1 is the default capacity.
    public init(name: String, weight: Double = 1) {
        self.name = name
        self.weight = weight
    }
}

/// Weighted rendezvous (highest-random-weight) hashing: each job goes to the member with the
/// highest `−weight / ln(h(job, member))`. Shares follow the weights, and when a member joins
/// or leaves only the jobs it wins or held move (about 1/N of them).
public enum Rendezvous {
    private static let twoTo53 = 9_007_199_254_740_992.0  // 2^53

    /// h(job, member) strictly inside (0, 1): the top 53 bits of `hash64("job\0member")`
    /// plus a half step. The NUL separator keeps ("ab","c") and ("a","bc") apart.
    public static func unitHash(job: String, member: String) -> Double {
        var bytes = Array(job.utf8)
        bytes.append(0)
        bytes.append(contentsOf: member.utf8)
        let top53 = StableHash.hash64(bytes) >> 11
        // (2^53 − 1) + 0.5 is not representable and rounds up to 2^53 (h = 1, ln h = 0);
        // clamp that single value to the largest Double below 1.
        return min((Double(top53) + 0.5) / twoTo53, 1.0.nextDown)
    }

    /// The member's score for `job`: `−weight / ln(h)`, larger is better; −∞ for a member
    /// whose weight is not positive and finite (never chosen).
    public static func score(job: String, member: RendezvousMember) -> Double {
        guard member.weight > 0, member.weight.isFinite else { return -.infinity }
        return -member.weight / log(unitHash(job: job, member: member.name))
    }

    /// The member that should lead `job`: highest score, ties broken by the smaller name so
    /// every member agrees. `nil` when no member has a positive weight.
    public static func preferred(job: String, among members: [RendezvousMember]) -> String? {
        var best: (name: String, score: Double)?
        for member in members {
            let score = score(job: job, member: member)
            guard score > -.infinity else { continue }
            if let current = best, score < current.score || (score == current.score && member.name >= current.name) {
                continue
            }
            best = (member.name, score)
        }
        return best?.name
    }

    /// The preferred member of every job; jobs with no eligible member are left out.
    public static func assignment(jobs: [String], members: [RendezvousMember]) -> [String: String] {
        var result: [String: String] = [:]
        result.reserveCapacity(jobs.count)
        for job in jobs {
            if let member = preferred(job: job, among: members) { result[job] = member }
        }
        return result
    }
}
