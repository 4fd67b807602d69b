import Logging
import NIOCore

/// The channel handler that drives an ``HTTP2Connection``: bytes in, nghttp2 output out.
final class HTTP2ServerHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let router: Router
    private let registry: ConnectionRegistry
    private let logger: Logger
    private var connection: HTTP2Connection?
    private var registration: ConnectionRegistry.Token?

    private let secure: Bool

    init(router: Router, registry: ConnectionRegistry, logger: Logger, secure: Bool) {
        self.router = router
        self.registry = registry
        self.logger = logger
        self.secure = secure
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let conn = HTTP2Connection(context: context, router: router, logger: logger, secure: secure)
        connection = conn
        router.statistics.h2Connections.wrappingAdd(1, ordering: .relaxed)
        let bound = NIOLoopBound(conn, eventLoop: context.eventLoop)
        let channel = context.channel
        registration = registry.register(eventLoop: context.eventLoop, shutdown: { bound.value.shutdown() },
                                         forceClose: { channel.close(promise: nil) })
        conn.flush()  // our SETTINGS
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        finish()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        connection?.read(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        connection?.readComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        connection?.writabilityChanged()
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("HTTP/2 connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    private func finish() {
        guard let conn = connection else { return }
        connection = nil
        conn.close()
        router.statistics.h2Connections.wrappingAdd(-1, ordering: .relaxed)
        if let registration { registry.unregister(registration) }
        registration = nil
    }
}
