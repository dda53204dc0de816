import Leasehold
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle
import Synchronization

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// The daemon's HTTP endpoint: `/metrics` (Prometheus text), `/healthz` (process up),
/// `/readyz` (Redis reachable and catalog loaded), `/status` (this member's view as JSON).
public final class StatusHTTPServer: Service, Sendable {
    private let host: String
    private let port: Int
    private let member: LeaseholdService
    private let metrics: PrometheusCollectorRegistry
    private let logger: Logger
    private let limits: HTTPLimits

    /// Creates the endpoint with the production ``HTTPLimits``; it listens once `run()` is called.
    public convenience init(
        host: String, port: Int, member: LeaseholdService, metrics: PrometheusCollectorRegistry, logger: Logger
    ) {
        self.init(host: host, port: port, member: member, metrics: metrics, logger: logger, limits: .production)
    }

    /// Creates the endpoint with other `limits` (tests use short ones).
    package init(
        host: String, port: Int, member: LeaseholdService, metrics: PrometheusCollectorRegistry, logger: Logger,
        limits: HTTPLimits
    ) {
        self.host = host
        self.port = port
        self.member = member
        self.metrics = metrics
        self.logger = logger
        self.limits = limits
    }

    /// A response: status, content type and body.
    public struct Response: Sendable {
        /// HTTP status.
        public var status: HTTPResponseStatus
        /// Content-Type header.
        public var contentType: String
        /// Body bytes.
        public var body: String
    }

    /// Answers one request path (pure over the member's state; used by tests).
    public func respond(to path: String) -> Response {
        switch path.split(separator: "?").first.map(String.init) ?? path {
        case "/healthz":
            return Response(status: .ok, contentType: "text/plain; charset=utf-8", body: "ok\n")
        case "/readyz":
            return member.isRedisUp
                ? Response(status: .ok, contentType: "text/plain; charset=utf-8", body: "ready\n")
                : Response(
                    status: .serviceUnavailable, contentType: "text/plain; charset=utf-8", body: "redis unreachable\n")
        case "/metrics":
            return Response(
                status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: metrics.emitToString())
        case "/status":
            return Response(status: .ok, contentType: "application/json", body: statusJSON())
        default:
            return Response(
                status: .notFound, contentType: "text/plain; charset=utf-8",
                body: "not found: try /metrics, /healthz, /readyz or /status\n")
        }
    }

    private func statusJSON() -> String {
        let now = ContinuousClock.now
        let leases: [JSONValue] = member.manager.currentGrants.map { grant in
            .object([
                ("job", .string(grant.job)), ("token", .uint(grant.token)),
                ("valid_for_ms", .int((grant.validUntil - now).wholeMilliseconds)),
            ])
        }
        // Keys in sorted order, as the page has always been written.
        let object: JSONValue = .object([
            ("instance", .string(member.manager.owner.description)),
            ("jobs", .array(member.catalog.jobs.map { .string($0.name) })),
            ("leading", .array(leases)),
            ("member", .string(member.manager.owner.member)),
            ("members", .array(member.manager.liveMembers.map { .string($0.name) })),
            ("redis_up", .bool(member.isRedisUp)),
        ])
        return object.serialized + "\n"
    }

    /// Listens until graceful shutdown.
    public func run() async throws {
        let limits = self.limits
        let table = ConnectionTable(limits: limits, logger: logger)
        // The decoder counts the URL and every header name and value against this, so a
        // huge head fails at the limit instead of being buffered whole.
        let decoderLimits = {
            var configuration = NIOHTTPDecoderLimitConfiguration()
            configuration.maxHeaderFieldSize = limits.maxHeadBytes
            configuration.maxHeaderListSize = limits.maxHeadBytes
            return configuration
        }()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    // Over the cap, a connection is shed before it costs a pipeline.
                    guard table.admit(channel) else {
                        channel.close(mode: .all, promise: nil)
                        return
                    }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                        withErrorHandling: false, withEncoderConfiguration: .init(),
                        withDecoderLimitConfiguration: decoderLimits)
                    try channel.pipeline.syncOperations.addHandler(
                        HTTPRequestHandler(server: self, limits: limits, table: table))
                }
            }
            .bind(host: host, port: port).get()
        logger.info(
            "http endpoint listening",
            metadata: [
                "address": "\(host):\(port)", "idle_timeout_ms": "\(limits.idleTimeout.wholeMilliseconds)",
                "max_connections": "\(limits.maxConnections)",
            ])
        try await withGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
    }
}

/// What one client may cost the HTTP endpoint: connections, time and bytes. The endpoint
/// shares the process's file descriptors with Redis connections and job pipes, and
/// `/healthz` must keep answering while slow or hostile clients are connected.
package struct HTTPLimits: Sendable {
    /// A connection is closed when it has not completed a request (or sat idle in keep-alive)
    /// for this long: a slow client cannot hold its descriptor by trickling bytes.
    package var idleTimeout: Duration
    /// Open connections at most; one more first evicts an idle connection, else is closed.
    package var maxConnections: Int
    /// Bytes of request target plus header names and values at most (more: 431).
    package var maxHeadBytes: Int
    /// Bytes of request body at most (more: 413); the endpoints take none.
    package var maxBodyBytes: Int
    /// After an error response, how long the rest of the request is read and dropped before
    /// the close, so the client reads the answer instead of a reset.
    package var linger: Duration
    /// Shed connections are logged at most once per this interval, with counts.
    package var shedLogInterval: Duration

    /// Builds limits; every parameter defaults to the production value.
    package init(
        idleTimeout: Duration = .seconds(10), maxConnections: Int = 64, maxHeadBytes: Int = 8192,
        maxBodyBytes: Int = 1024, linger: Duration = .seconds(2), shedLogInterval: Duration = .seconds(60)
    ) {
        self.idleTimeout = idleTimeout
        self.maxConnections = maxConnections
        self.maxHeadBytes = maxHeadBytes
        self.maxBodyBytes = maxBodyBytes
        self.linger = linger
        self.shedLogInterval = shedLogInterval
    }

    /// What `leaseholdd` uses: 10 s idle timeout, 64 connections, 8 KiB head, 1 KiB body.
    package static let production = HTTPLimits()
}

/// The open connections of one server, across its event loops: enforces the cap and picks
/// which connection to shed.
private final class ConnectionTable: Sendable {
    private struct Entry {
        var channel: any Channel
        /// Since when it has waited for its next request (accept, or the last response sent).
        var waitingSince: NIODeadline
        /// Whether it completed a request: a client that did is more likely a scraper in
        /// keep-alive than a slow or hostile one.
        var served = false
        /// Whether a request is being answered (never shed then).
        var busy = false
    }

    private struct State {
        var entries: [ObjectIdentifier: Entry] = [:]
        var evicted = 0
        var rejected = 0
        var lastReport: NIODeadline?
    }

    private let limits: HTTPLimits
    private let logger: Logger
    private let state = Mutex(State())

    init(limits: HTTPLimits, logger: Logger) {
        self.limits = limits
        self.logger = logger
    }

    /// Registers `channel`; false if it must be closed at once. At the cap the connection
    /// waiting longest without a request is closed to make room (else the longest idle
    /// keep-alive one), so a handful of stalled clients cannot lock `/healthz` out; only
    /// when every connection is busy answering is the new one refused.
    func admit(_ channel: any Channel) -> Bool {
        let id = ObjectIdentifier(channel)
        let now = NIODeadline.now()
        let (admitted, victim, report) = state.withLock { state -> (Bool, (any Channel)?, (Int, Int)?) in
            var victim: (any Channel)?
            var admitted = true
            if state.entries.count >= limits.maxConnections {
                let candidates = state.entries.filter { !$0.value.busy }
                let chosen =
                    candidates.filter { !$0.value.served }.min { $0.value.waitingSince < $1.value.waitingSince }
                    ?? candidates.min { $0.value.waitingSince < $1.value.waitingSince }
                if let chosen {
                    victim = chosen.value.channel
                    state.entries[chosen.key] = nil
                    state.evicted += 1
                } else {
                    admitted = false
                    state.rejected += 1
                }
                var report: (Int, Int)?
                if state.lastReport.map({ now - $0 >= TimeAmount(limits.shedLogInterval) }) ?? true {
                    report = (state.evicted, state.rejected)
                    state.evicted = 0
                    state.rejected = 0
                    state.lastReport = now
                }
                if admitted { state.entries[id] = Entry(channel: channel, waitingSince: now) }
                return (admitted, victim, report)
            }
            state.entries[id] = Entry(channel: channel, waitingSince: now)
            return (true, nil, nil)
        }
        victim?.close(promise: nil)
        if admitted {
            channel.closeFuture.whenComplete { [self] _ in
                state.withLock { state in
                    if state.entries[id]?.channel === channel { state.entries[id] = nil }
                }
            }
        }
        if let (evicted, rejected) = report {
            logger.warning(
                "http connection limit reached",
                metadata: [
                    "max_connections": "\(limits.maxConnections)", "evicted": "\(evicted)", "rejected": "\(rejected)",
                    "report_every_s": "\(limits.shedLogInterval.components.seconds)",
                ])
        }
        return admitted
    }

    /// Marks `channel` as answering a request.
    func startedRequest(_ channel: any Channel) {
        state.withLock { $0.entries[ObjectIdentifier(channel)]?.busy = true }
    }

    /// Marks `channel` as waiting for its next request after a response, from now.
    func finishedRequest(_ channel: any Channel) {
        let now = NIODeadline.now()
        state.withLock {
            guard var entry = $0.entries[ObjectIdentifier(channel)] else { return }
            entry.busy = false
            entry.served = true
            entry.waitingSince = now
            $0.entries[ObjectIdentifier(channel)] = entry
        }
    }
}

/// Answers each request on one connection through `StatusHTTPServer.respond(to:)`, within
/// the ``HTTPLimits``: a deadline per request, a body cap, an error answer for a head the
/// decoder refused.
private final class HTTPRequestHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        case waiting
        case reading(path: String, keepAlive: Bool, bodyBytes: Int)
        /// An error answer went out: the rest of the request is dropped until the close.
        case closing
    }

    private let server: StatusHTTPServer
    private let limits: HTTPLimits
    private let table: ConnectionTable
    private var state = State.waiting
    private var deadline: Scheduled<Void>?

    init(server: StatusHTTPServer, limits: HTTPLimits, table: ConnectionTable) {
        self.server = server
        self.limits = limits
        self.table = table
    }

    func handlerAdded(context: ChannelHandlerContext) { arm(context, for: limits.idleTimeout) }

    func handlerRemoved(context: ChannelHandlerContext) { deadline?.cancel() }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        context.fireChannelInactive()
    }

    /// Closes the connection unless it makes progress (a request head, a response sent) within `timeout`.
    private func arm(_ context: ChannelHandlerContext, for timeout: Duration) {
        deadline?.cancel()
        let channel = context.channel
        deadline = context.eventLoop.scheduleTask(in: TimeAmount(timeout)) { channel.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch (unwrapInboundIn(data), state) {
        case (_, .closing):
            break
        case (.head(let head), _):
            // A fresh budget for the body and the answer; the head itself had to come in time.
            arm(context, for: limits.idleTimeout)
            if let length = head.headers["content-length"].first.flatMap({ Int($0) }), length > limits.maxBodyBytes {
                reject(context, .payloadTooLarge)
                return
            }
            state = .reading(path: head.uri, keepAlive: head.isKeepAlive, bodyBytes: 0)
        case (.body(let body), .reading(let path, let keepAlive, let bodyBytes)):
            // Chunked bodies carry no length up front: count as they come, drop the bytes.
            let total = bodyBytes + body.readableBytes
            guard total <= limits.maxBodyBytes else {
                reject(context, .payloadTooLarge)
                return
            }
            state = .reading(path: path, keepAlive: keepAlive, bodyBytes: total)
        case (.end, .reading(let path, let keepAlive, _)):
            // Busy only while answering: a client stalled in its body stays evictable.
            table.startedRequest(context.channel)
            state = .waiting
            answer(context, server.respond(to: path), keepAlive: keepAlive)
        case (.body, .waiting), (.end, .waiting):
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if case .closing = state { return }
        guard let parserError = error as? HTTPParserError else {
            context.close(promise: nil)
            return
        }
        reject(context, parserError == .headerOverflow ? .requestHeaderFieldsTooLarge : .badRequest)
    }

    private func answer(_ context: ChannelHandlerContext, _ response: StatusHTTPServer.Response, keepAlive: Bool) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: String(response.body.utf8.count))
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: response.status, headers: headers))),
            promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: response.body)))), promise: nil)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { result in
            let (handler, context) = bound.value
            guard keepAlive, case .success = result else {
                context.close(promise: nil)
                return
            }
            // Keep-alive: the next request has the idle timeout to arrive.
            handler.table.finishedRequest(context.channel)
            if case .waiting = handler.state { handler.arm(context, for: handler.limits.idleTimeout) }
        }
    }

    /// Answers `status` and closes: output first, then, after the linger, everything; what
    /// the client still sends meanwhile is dropped, never buffered.
    private func reject(_ context: ChannelHandlerContext, _ status: HTTPResponseStatus) {
        state = .closing
        arm(context, for: limits.linger)
        let body = "\(status.code) \(status.reasonPhrase)\n"
        let headers = HTTPHeaders([
            ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", String(body.utf8.count)),
            ("Connection", "close"),
        ])
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            channel.close(mode: .output, promise: nil)
        }
    }
}
