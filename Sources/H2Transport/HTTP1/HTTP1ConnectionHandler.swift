import Logging
import NIOCore
import NIOHTTP1

/// Serves HTTP/1.1 (after NIOHTTP1's decoder and pipelining helper) with the same handlers as
/// HTTP/2. One exchange at a time; request-body backpressure pauses reading from the socket.
final class HTTP1ConnectionHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// Stop reading when this many request-body bytes are unprocessed.
    static let pauseThreshold = 1 << 20

    private let router: Router
    private let registry: ConnectionRegistry
    private let logger: Logger
    private var context: ChannelHandlerContext?
    private var connectionContext: ConnectionContext?
    private var exchange: HTTP1Exchange?
    private var registration: ConnectionRegistry.Token?
    fileprivate var unreleased = 0
    private var readPending = false
    private var shuttingDown = false

    let secure: Bool

    init(router: Router, registry: ConnectionRegistry, logger: Logger, secure: Bool) {
        self.router = router
        self.registry = registry
        self.logger = logger
        self.secure = secure
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let cc = router.makeConnectionContext(for: context, secure: secure)
        cc.flush = { [weak context] in context?.flush() }
        connectionContext = cc
        router.statistics.h1Connections.wrappingAdd(1, ordering: .relaxed)
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let channel = context.channel
        registration = registry.register(eventLoop: context.eventLoop, shutdown: { bound.value.shutdown() },
                                         forceClose: { channel.close(promise: nil) })
    }

    func handlerRemoved(context: ChannelHandlerContext) { finish() }

    func channelInactive(context: ChannelHandlerContext) {
        finish()
        context.fireChannelInactive()
    }

    private func finish() {
        guard let registration else { return }
        self.registration = nil
        connectionContext?.ingest.submit()
        exchange?.handler?.cancelled()
        exchange?.handler = nil
        connectionContext?.ingest.publishCounters()
        connectionContext?.ingest.context = nil
        exchange = nil
        router.statistics.h1Connections.wrappingAdd(-1, ordering: .relaxed)
        registry.unregister(registration)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            var headers: [(String, String)] = []
            for (name, value) in head.headers {
                let lower = name.lowercased()
                if RequestHead.keptHeaders.contains(lower) { headers.append((lower, value)) }
            }
            let request = RequestHead(method: head.method.rawValue, target: head.uri, headers: headers)
            let ex = HTTP1Exchange(connection: self, context: context, keepAlive: head.isKeepAlive && !shuttingDown,
                                   isHead: head.method == .HEAD, version: head.version)
            exchange = ex
            ex.handler = router.makeHandler(for: request, writer: ex, connection: connectionContext!)
            // A client that waits for `100 Continue` before its body (curl does for bodies over
            // 1 MiB) would otherwise wait out its own timeout (a second) on every request; not
            // when the handler already gave its final answer (a 401, a 413...).
            if head.version.major == 1 && head.version.minor >= 1, ex.handler != nil, !ex.hasWrittenHead,
               head.headers[canonicalForm: "expect"].contains(where: { $0.lowercased() == "100-continue" }) {
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))), promise: nil)
            }
        case .body(let buffer):
            guard let ex = exchange else { return }
            guard let handler = ex.handler else {
                // The response already ended: discard the rest of the body, within a bound.
                ex.discarded += buffer.readableBytes
                if ex.discarded > Self.pauseThreshold { context.close(promise: nil) }
                return
            }
            unreleased += buffer.readableBytes
            buffer.withUnsafeReadableBytes { handler.requestBody($0) }
        case .end:
            guard let ex = exchange else { return }
            ex.requestEnded = true
            if let handler = ex.handler {
                handler.requestEnd()
            } else {
                exchangeEnded(ex)
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        connectionContext?.ingest.submit()
        context.flush()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { exchange?.handler?.responseWritable() }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if unreleased >= Self.pauseThreshold {
            readPending = true
            return
        }
        context.read()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("HTTP/1.1 connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    fileprivate func released(_ n: Int) {
        unreleased -= n
        if readPending && unreleased < Self.pauseThreshold / 2, let context {
            readPending = false
            context.read()
        }
    }

    /// Called when the response ended, and again when a request that outlived its response ends.
    fileprivate func exchangeEnded(_ ex: HTTP1Exchange) {
        guard exchange === ex else { return }
        if !ex.requestEnded && ex.keepAlive && !shuttingDown {
            return  // keep the exchange to discard the rest of the body, then reuse the connection
        }
        exchange = nil
        unreleased = 0
        if readPending, let context {
            readPending = false
            context.read()
        }
        if !ex.keepAlive || !ex.requestEnded || shuttingDown, let context {
            context.close(promise: nil)
        }
    }

    private func shutdown() {
        shuttingDown = true
        if let ex = exchange {
            ex.keepAlive = false
            ex.handler?.drain()
        } else {
            context?.close(promise: nil)
        }
    }
}

/// One HTTP/1.1 request/response, the ``ResponseWriter`` its handler writes to.
final class HTTP1Exchange: ResponseWriter, FlushingWriter {
    /// Weak: a handler may complete after the connection is gone (then this is a no-op).
    private weak var connection: HTTP1ConnectionHandler?
    private let context: ChannelHandlerContext
    var handler: (any RequestHandler)?
    var keepAlive: Bool
    let isHead: Bool
    var requestEnded = false
    var discarded = 0
    private var headWritten = false
    /// Whether the final response head went out.
    var hasWrittenHead: Bool { headWritten }
    private var ended = false

    /// The request's version: an HTTP/1.0 client gets an HTTP/1.0 reply, which cannot be chunked
    /// (a streamed body then ends with the connection).
    let version: HTTPVersion

    init(connection: HTTP1ConnectionHandler, context: ChannelHandlerContext, keepAlive: Bool, isHead: Bool,
         version: HTTPVersion = .http1_1) {
        self.connection = connection
        self.context = context
        self.keepAlive = keepAlive
        self.isHead = isHead
        self.version = version
    }

    var eventLoop: any EventLoop { context.eventLoop }
    var isHTTP2: Bool { false }

    func writeHead(status: Int, headers: [(String, String)]) {
        guard !headWritten, !ended else { return }
        headWritten = true
        var h = HTTPHeaders(headers)
        let http10 = version.major == 1 && version.minor == 0
        if http10 && !h.contains(name: "content-length") { keepAlive = false }
        if !keepAlive {
            h.replaceOrAdd(name: "connection", value: "close")
        } else if http10 {
            h.replaceOrAdd(name: "connection", value: "keep-alive")  // HTTP/1.0 closes unless told
        }
        if connection?.secure == true { h.add(name: ConnectionContext.hsts.0, value: ConnectionContext.hsts.1) }
        let head = HTTPResponseHead(version: http10 ? .http1_0 : .http1_1, status: HTTPResponseStatus(statusCode: status), headers: h)
        context.write(NIOAny(HTTPServerResponsePart.head(head)), promise: nil)
    }

    func writeBody(_ bytes: ByteBuffer) {
        guard headWritten, !ended, !isHead else { return }
        context.writeAndFlush(NIOAny(HTTPServerResponsePart.body(.byteBuffer(bytes))), promise: nil)
    }

    func end(abortingRequest: Bool) {
        guard !ended else { return }
        if abortingRequest && !requestEnded { keepAlive = false }
        if !headWritten { writeHead(status: 200, headers: [("content-length", "0")]) }
        ended = true
        handler = nil
        context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)), promise: nil)
        connection?.exchangeEnded(self)
    }

    var pendingResponseBytes: Int { context.channel.isWritable ? 0 : Int.max / 2 }

    func releaseRequestBytes(_ count: Int) { connection?.released(count) }

    func flushConnection() { context.flush() }
}
