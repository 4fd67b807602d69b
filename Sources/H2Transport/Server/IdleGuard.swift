import NIOCore

/// What a connection is doing, for ``IdleGuard``: set by the protocol handlers on the channel's
/// event loop (confined to it).
final class ConnectionActivity {
    /// Open SSE streams: their clients legitimately send nothing for a long time.
    var sseStreams = 0
    /// Requests started on this connection.
    var requests = 0
    /// HTTP/1.1 between two requests (set by its handler; HTTP/2 never is).
    var betweenRequests = false
    /// When the first byte after the previous request arrived, while ``betweenRequests``.
    var headStartedAt: NIODeadline?
}

/// Closes connections that hold resources without using them, first in every child pipeline
/// (before TLS, so it sees raw bytes):
///
/// - no request started within ``firstRequestTimeout`` of accepting (a connection that never
///   sends, or drips a request head byte by byte), and on HTTP/1.1 no complete request head within
///   as long of the first byte after the previous request (one byte a minute used to hold a
///   connection forever once its first request was done);
/// - nothing read for ``idleTimeout`` while no SSE stream is open (idle keep-alive connections,
///   agents whose streams went silent: live agents send data or `:` heartbeat lines);
/// - with an SSE stream open, the socket not writable for ``idleTimeout`` in a row (a client that
///   stopped reading; its subscription's queue is bounded and coalesced meanwhile).
///
/// Closing ends the connection's streams; an ingest stream's acknowledged samples are unaffected
/// and its agent resends the rest after reconnecting.
final class IdleGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    typealias InboundOut = NIOAny

    let activity = ConnectionActivity()
    private let idleTimeout: TimeAmount
    private let firstRequestTimeout: TimeAmount
    private let onClose: (Reason) -> Void
    private var lastRead = NIODeadline.now()
    private let opened = NIODeadline.now()
    private var unwritableSince: NIODeadline? = nil
    private var task: RepeatedTask?

    /// Why a connection was closed.
    enum Reason { case noRequest, idle, stalledReader }

    init(idleTimeout: TimeAmount, firstRequestTimeout: TimeAmount, onClose: @escaping (Reason) -> Void) {
        self.idleTimeout = idleTimeout
        self.firstRequestTimeout = min(firstRequestTimeout, idleTimeout)
        self.onClose = onClose
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let period = min(TimeAmount.seconds(5), .nanoseconds(max(firstRequestTimeout.nanoseconds / 4, 1_000_000)))
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        task = context.eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) { _ in
            let (me, ctx) = bound.value
            me.check(ctx)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        task?.cancel()
        task = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastRead = .now()
        if activity.betweenRequests && activity.headStartedAt == nil { activity.headStartedAt = lastRead }
        context.fireChannelRead(data)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        unwritableSince = context.channel.isWritable ? nil : (unwritableSince ?? .now())
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        task?.cancel()
        task = nil
        context.fireChannelInactive()
    }

    private func check(_ context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        let now = NIODeadline.now()
        var reason: Reason? = nil
        if activity.requests == 0 && now - opened >= firstRequestTimeout {
            reason = .noRequest
        } else if activity.betweenRequests, let started = activity.headStartedAt, now - started >= firstRequestTimeout {
            reason = .noRequest
        } else if activity.sseStreams == 0 && now - lastRead >= idleTimeout {
            reason = .idle
        } else if activity.sseStreams > 0, let since = unwritableSince, now - since >= idleTimeout {
            reason = .stalledReader
        }
        guard let reason else { return }
        task?.cancel()
        task = nil
        onClose(reason)
        context.close(promise: nil)
    }
}
