// FencedCounterExample: a daemon built by a user, with its own Swift handler.
//
// Run two or three of these on the same catalog (each with its own --name) and kill, pause
// (SIGSTOP) or restart them: the counter only ever moves forward, because the store itself
// refuses writes that carry a fencing token lower than one it has already seen. A lease alone
// cannot promise that — a paused leader may wake up after its lease expired and write once
// more before it notices. The token makes that late write harmless.
//
//   swift run FencedCounterExample --config Examples/FencedCounter/jobs.yaml --name m1
//   redis-cli -n 1 HGETALL example:counter
import Leasehold
import LeaseholdDaemon
import RedisClient

/// `handler: fenced-counter`: adds one to a counter in a downstream store on every run.
struct FencedCounterHandler: JobHandler {
    static let kind = "fenced-counter"

    /// The store: any system that can compare-and-set atomically can do this check; here it
    /// is a Redis hash `{value, fence}` updated by one Lua script (atomic on the server).
    static let increment = RedisScript(
        """
        local seen = tonumber(redis.call('HGET', KEYS[1], 'fence') or '0')
        if tonumber(ARGV[1]) < seen then return -1 end
        redis.call('HSET', KEYS[1], 'fence', ARGV[1])
        return redis.call('HINCRBY', KEYS[1], 'value', 1)
        """)

    let key: String
    let store: RedisConnection

    init(config: HandlerConfig) throws {
        // Unknown keys and bad values are reported with their jobs.yaml line:column, and the
        // daemon refuses to start (exit 2) before it talks to Redis.
        try config.checkKeys(allowed: ["store", "key"], handler: Self.kind)
        key = try config.string("key") ?? "fenced-counter"
        let url = try config.string("store") ?? "redis://127.0.0.1:6379/1"
        let endpoint: RedisEndpoint
        do {
            endpoint = try RedisEndpoint(url: url)
        } catch {
            let location =
                config.node?.value(for: "store")?.location ?? config.jobLocation
                ?? SourceLocation(file: "jobs.yaml", line: 0, column: 0)
            throw ConfigError(location: location, message: "invalid 'store' URL: \(error.message)")
        }
        // No I/O here: init also runs when the catalog is only being checked.
        store = RedisConnection(configuration: RedisConfiguration(endpoint: endpoint))
    }

    func run(_ context: LeaseContext) async throws {
        // Cheap local check first; it can be stale by the time the write lands, which is why
        // the store checks the token again on its side.
        try context.checkLeadership()
        let reply = try await store.evaluate(Self.increment, keys: [key], arguments: [String(context.token)])
        guard let value = reply.integer, value >= 0 else {
            // A newer leader has written already: this member is a zombie for this job.
            context.logger.warning("store refused a stale token", metadata: ["token": "\(context.token)"])
            throw StaleTokenError(token: context.token)
        }
        context.logger.info("counter incremented", metadata: ["value": "\(value)"])
    }
}

/// The run fails (and is counted as failed) when the store has seen a newer leader.
struct StaleTokenError: Error, CustomStringConvertible {
    let token: UInt64
    var description: String { "the store has seen a token newer than \(token)" }
}

await LeaseholdDaemon.main(handlers: [FencedCounterHandler.self])
