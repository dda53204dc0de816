// A user-built daemon whose handler can trap (fatalError), for the crash-release tests: the
// trap kills the whole daemon process, and its guardian must still release the leases fast.
//
// The handler traps on a run when the file named by LEASEHOLD_EXAMPLE_TRAP_FILE exists (the
// variable is set for one member only), and otherwise just logs.
import Leasehold
import LeaseholdDaemon

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// A handler that traps when asked to, like a force unwrap of nil in production code.
struct TrappingHandler: JobHandler {
    static let kind = "trap"

    init(config: HandlerConfig) throws {
        try config.checkKeys(allowed: [], handler: Self.kind)
    }

    func run(_ context: LeaseContext) async throws {
        if let path = ProcessInfo.processInfo.environment["LEASEHOLD_EXAMPLE_TRAP_FILE"],
            FileManager.default.fileExists(atPath: path)
        {
            fatalError("trapping as asked (token \(context.token))")
        }
        context.logger.info("no trap", metadata: ["token": "\(context.token)"])
    }
}

await LeaseholdDaemon.main(handlers: [TrappingHandler.self])
