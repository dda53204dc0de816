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

    /// Creates the endpoint; it listens once `run()` is called.
    public init(host: String, port: Int, member: LeaseholdService, metrics: PrometheusCollectorRegistry, logger: Logger)
    {
        self.host = host
        self.port = port
        self.member = member
        self.metrics = metrics
        self.logger = logger
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
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(HTTPRequestHandler(server: self))
                }
            }
            .bind(host: host, port: port).get()
        logger.info("http endpoint listening", metadata: ["address": "\(host):\(port)"])
        try await withGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
    }
}

/// Answers each request on one connection through `StatusHTTPServer.respond(to:)`.
private final class HTTPRequestHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let server: StatusHTTPServer
    private var path = "/"
    private var keepAlive = false

    init(server: StatusHTTPServer) { self.server = server }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            path = head.uri
            keepAlive = head.isKeepAlive
        case .body:
            break
        case .end:
            let response = server.respond(to: path)
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: response.contentType)
            headers.add(name: "Content-Length", value: String(response.body.utf8.count))
            if !keepAlive { headers.add(name: "Connection", value: "close") }
            context.write(
                wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: response.status, headers: headers))),
                promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: response.body)))), promise: nil)
            let keepAlive = self.keepAlive
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
                if !keepAlive { bound.value.close(promise: nil) }
            }
        }
    }
}
