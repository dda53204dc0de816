/// Identifies one process incarnation of a member: the stable member name plus a random
/// incarnation, so a restarted process never mistakes its predecessor's lease for its own.
public struct OwnerID: Sendable, Hashable, CustomStringConvertible {
    /// The stable member name used for placement (`--name`, default the hostname).
    public let member: String
    /// Random per process start.
    public let incarnation: String

    /// Creates an owner id; `incarnation` defaults to 8 random hex digits.
    public init(member: String, incarnation: String? = nil) {
        self.member = member
        if let incarnation {
            self.incarnation = incarnation
        } else {
            var generator = SystemRandomNumberGenerator()
            let value = UInt32.random(in: .min ... .max, using: &generator)
            let hex = String(value, radix: 16)
            self.incarnation = String(repeating: "0", count: 8 - hex.count) + hex
        }
    }

    /// Parses `member@incarnation` (the owner part of a lease value).
    public init?(parsing text: Substring) {
        guard let at = text.lastIndex(of: "@") else { return nil }
        let member = text[..<at]
        let incarnation = text[text.index(after: at)...]
        guard !member.isEmpty, !incarnation.isEmpty else { return nil }
        self.member = String(member)
        self.incarnation = String(incarnation)
    }

    /// `member@incarnation`, the form stored in lease values.
    public var description: String { "\(member)@\(incarnation)" }

    /// Whether a member name is usable in keys and owner ids.
    public static func isValidMemberName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 128
            && name.utf8.allSatisfy { byte in
                (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                    || byte == 0x2D || byte == 0x2E || byte == 0x5F
            }
    }
}

/// A lease value as stored in Redis: `<owner>:<token>`.
public struct LeaseValue: Sendable, Hashable, CustomStringConvertible {
    /// Who holds the lease.
    public let owner: OwnerID
    /// The fencing token issued when it was acquired.
    public let token: UInt64

    /// Creates a lease value.
    public init(owner: OwnerID, token: UInt64) {
        self.owner = owner
        self.token = token
    }

    /// Parses `member@incarnation:token`; nil for anything else.
    public init?(parsing text: String) {
        guard let colon = text.lastIndex(of: ":"),
            let owner = OwnerID(parsing: text[..<colon]),
            let token = UInt64(text[text.index(after: colon)...])
        else { return nil }
        self.owner = owner
        self.token = token
    }

    /// `member@incarnation:token`.
    public var description: String { "\(owner):\(token)" }
}
