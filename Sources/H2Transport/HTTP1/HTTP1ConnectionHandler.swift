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
    /// After an `Upgrade` or `CONNECT` request NIOHTTP1's decoder parses nothing more, and bytes
    /// read would pile up in its buffer without a bound: the connection reads no more and closes
    /// after the response.
    private var haltReads = false
    /// How long the rest of a request body is read and dropped after its response.
    static let discardTimeout: TimeAmount = .seconds(10)

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
        cc.activity?.betweenRequests = true
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
            // An upgrade is not offered (h2c takes the prior-knowledge preface): the request is
            // answered as if the header were absent, and the connection ends after it.
            let upgrade = head.method == .CONNECT || head.headers.contains(name: "upgrade")
            let ex = HTTP1Exchange(connection: self, context: context, keepAlive: head.isKeepAlive && !shuttingDown && !upgrade,
                                   isHead: head.method == .HEAD, version: head.version)
            ex.isUpgrade = upgrade
            connectionContext?.activity?.betweenRequests = false
            connectionContext?.activity?.headStartedAt = nil
            exchange = ex
            let handler = router.makeHandler(for: request, writer: ex, connection: connectionContext!)
            // A handler that answered at once (a refusal, a fixed reply) is done: the rest of the
            // body goes to the bounded discard below, and the exchange ends with the request.
            if !ex.ended { ex.handler = handler }
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
                // The response already ended: discard the rest of the body, within a bound of
                // bytes and of time (a body trickled after a refusal held the connection forever).
                ex.discarded += buffer.readableBytes
                let since = ex.discardingSince ?? .now()
                ex.discardingSince = since
                if ex.discarded > maxDiscardedRequestBody || .now() - since > Self.discardTimeout { context.close(promise: nil) }
                return
            }
            unreleased += buffer.readableBytes
            buffer.withUnsafeReadableBytes { handler.requestBody($0) }
        case .end:
            guard let ex = exchange else { return }
            ex.requestEnded = true
            if ex.isUpgrade { haltReads = true }
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
        if context.channel.isWritable {
            exchange?.handler?.responseWritable()
            resumeReading()
        }
        context.fireChannelWritabilityChanged()
    }

    /// Reading pauses while request-body bytes wait to be processed, while responses wait for the
    /// socket (a client pipelining requests and not reading the answers grew memory 35–40× the
    /// bytes it sent), and for good after an upgrade request.
    func read(context: ChannelHandlerContext) {
        if haltReads { return }
        if unreleased >= Self.pauseThreshold || !context.channel.isWritable {
            readPending = true
            return
        }
        context.read()
    }

    private func resumeReading() {
        guard readPending, !haltReads, unreleased < Self.pauseThreshold / 2, let context, context.channel.isWritable else { return }
        readPending = false
        context.read()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("HTTP/1.1 connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    fileprivate func released(_ n: Int) {
        unreleased -= n
        resumeReading()
    }

    /// Called when the response ended, and again when a request that outlived its response ends.
    fileprivate func exchangeEnded(_ ex: HTTP1Exchange) {
        guard exchange === ex else { return }
        if !ex.requestEnded && ex.keepAlive && !shuttingDown {
            return  // keep the exchange to discard the rest of the body, then reuse the connection
        }
        exchange = nil
        unreleased = 0
        connectionContext?.activity?.betweenRequests = true
        resumeReading()
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
    var discardingSince: NIODeadline?
    /// An `Upgrade` or `CONNECT` request: the connection ends after it.
    var isUpgrade = false
    private var headWritten = false
    /// Whether the final response head went out.
    var hasWrittenHead: Bool { headWritten }
    private(set) var ended = false

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
