import Logging

/// Built-in handler `log`: logs one line with job and token per run (demos, smoke tests).
///
/// Config: `message` (optional string). Each run logs once and returns; as a continuous job
/// it is therefore restarted with backoff (1 s, doubling to 30 s) while leader.
public struct LogHandler: JobHandler {
    /// `handler: log`.
    public static let kind = "log"
    /// The text logged with every run.
    public let message: String

    /// Reads `config.message`.
    public init(config: HandlerConfig) throws {
        try config.checkKeys(allowed: ["message"], handler: Self.kind)
        message = try config.string("message") ?? "run"
    }

    /// Logs the line.
    public func run(_ context: LeaseContext) async throws {
        try context.checkLeadership()
        context.logger.info("\(message)", metadata: ["job": "\(context.job)", "token": "\(context.token)"])
    }
}
