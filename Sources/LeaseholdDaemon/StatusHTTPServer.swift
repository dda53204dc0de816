import Leasehold
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle

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
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                        withErrorHandling: false, withEncoderConfiguration: .init(),
                        withDecoderLimitConfiguration: decoderLimits)
                    try channel.pipeline.syncOperations.addHandler(
                        HTTPRequestHandler(server: self, limits: limits))
                }
            }
            .bind(host: host, port: port).get()
        logger.info(
            "http endpoint listening",
            metadata: [
                "address": "\(host):\(port)", "idle_timeout_ms": "\(limits.idleTimeout.wholeMilliseconds)",
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
    /// Bytes of request target plus header names and values at most (more: 431).
    package var maxHeadBytes: Int
    /// Bytes of request body at most (more: 413); the endpoints take none.
    package var maxBodyBytes: Int
    /// After an error response, how long the rest of the request is read and dropped before
    /// the close, so the client reads the answer instead of a reset.
    package var linger: Duration

    /// Builds limits; every parameter defaults to the production value.
    package init(
        idleTimeout: Duration = .seconds(10), maxHeadBytes: Int = 8192, maxBodyBytes: Int = 1024,
        linger: Duration = .seconds(2)
    ) {
        self.idleTimeout = idleTimeout
        self.maxHeadBytes = maxHeadBytes
        self.maxBodyBytes = maxBodyBytes
        self.linger = linger
    }

    /// What `leaseholdd` uses: 10 s idle timeout, 8 KiB head, 1 KiB body.
    package static let production = HTTPLimits()
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
    private var state = State.waiting
    private var deadline: Scheduled<Void>?

    init(server: StatusHTTPServer, limits: HTTPLimits) {
        self.server = server
        self.limits = limits
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
