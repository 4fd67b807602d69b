import MetricsCore
import NIOCore

/// `GET /api/dashboard/stream`: Server-Sent Events from the ``Broadcaster``.
///
/// Events are pulled from the subscription only while the connection keeps up (fewer than
/// ``highWater`` response bytes pending); otherwise they wait in the subscription's bounded queue,
/// where a client that falls too far behind is coalesced into a fresh snapshot.
/// A `: heartbeat` comment goes out after ``heartbeatInterval`` of silence (checked every
/// ``heartbeatCheck``).
final class SSEHandler: RequestHandler {
    static let highWater = 256 << 10
    static let heartbeatInterval = TimeAmount.seconds(15)
    static let heartbeatCheck = TimeAmount.seconds(5)

    private let writer: any ResponseWriter
    private let context: ConnectionContext
    private var subscription: Subscription?
    private var heartbeat: RepeatedTask?
    private var wroteSinceHeartbeat = false
    /// Heartbeat checks in a row that found no output.
    private var silentChecks = 0
    private var ended = false
    private let onStalled: @Sendable () -> Void
    /// Counted in the connection's ``ConnectionActivity/sseStreams``.
    private var counted = false

    /// How long response bytes may wait untaken before the stream is ended: a client holding an
    /// HTTP/2 stream's flow-control window shut keeps its socket writable, so the connection's
    /// ``IdleGuard`` never sees it stall. `nil`: never (`--idle-timeout 0`).
    private let stallTimeout: TimeAmount?
    private var takenAtLastCheck = 0
    private var lastProgress = NIODeadline.now()

    init(head: RequestHead, writer: any ResponseWriter, context: ConnectionContext, broadcaster: Broadcaster,
         stallTimeout: TimeAmount? = .seconds(120), onStalled: @escaping @Sendable () -> Void = {}) {
        self.writer = writer
        self.context = context
        self.stallTimeout = stallTimeout
        self.onStalled = onStalled
        let filter: SubscriptionFilter
        do {
            filter = try SubscriptionFilter(query: head.queryItems, tickMilliseconds: broadcaster.configuration.tickMilliseconds)
        } catch {
            ended = true
            HTTPResponse.error(400, String(describing: error)).write(to: writer)
            return
        }
        let lastEventID = head.header("last-event-id") ?? head.queryValue("lastEventId")
        let loop = writer.eventLoop
        let bound = NIOLoopBound(WeakBox(self), eventLoop: loop)
        do {
            subscription = try broadcaster.subscribe(filter: filter, lastEventID: lastEventID) {
                loop.execute {
                    guard let me = bound.value.value else { return }
                    me.pump()
                    me.context.flush()
                }
            }
        } catch {
            ended = true
            var r = HTTPResponse.error(503, "too many dashboard subscribers (--max-sse-clients); retry later")
            r.headers.append(("retry-after", "5"))
            r.write(to: writer)
            return
        }
        writer.writeHead(status: 200, headers: [
            ("content-type", "text/event-stream; charset=utf-8"), ("cache-control", "no-cache, no-store"),
            ("x-accel-buffering", "no"),
        ])
        context.drainables[ObjectIdentifier(self)] = self
        context.activity?.sseStreams += 1
        counted = true
        pump()
        // Checked every third of the interval, so silence lasts at most 4/3 of it (a check per
        // interval let it last almost twice as long: output just after one check hid the next).
        heartbeat = loop.scheduleRepeatedTask(initialDelay: Self.heartbeatCheck, delay: Self.heartbeatCheck) { _ in
            guard let me = bound.value.value, !me.ended else { return }
            // HTTP/2 only: an HTTP/1.1 reader that stops reading leaves its socket unwritable,
            // which the connection's guard sees (and a slow one that still reads is kept).
            if let h2 = me.writer as? HTTP2Stream, let limit = me.stallTimeout {
                let now = NIODeadline.now()
                if h2.out.readableBytes == 0 || h2.bytesTaken != me.takenAtLastCheck { me.lastProgress = now }
                me.takenAtLastCheck = h2.bytesTaken
                if now - me.lastProgress >= limit {
                    me.onStalled()
                    me.stop()
                    h2.cancel()
                    return
                }
            }
            if me.wroteSinceHeartbeat {
                me.wroteSinceHeartbeat = false
                me.silentChecks = 0
                return
            }
            me.silentChecks += 1
            if me.silentChecks >= Self.heartbeatInterval.nanoseconds / Self.heartbeatCheck.nanoseconds {
                me.silentChecks = 0
                me.writer.writeBody(ByteBuffer(string: ": heartbeat\n\n"))
                me.context.flush()
            }
        }
    }

    private func pump() {
        guard !ended, let subscription else { return }
        while writer.pendingResponseBytes < Self.highWater, let event = subscription.next() {
            var buf = ByteBufferAllocator().buffer(capacity: event.count)
            buf.writeBytes(event)
            writer.writeBody(buf)
            wroteSinceHeartbeat = true
        }
    }

    func requestBody(_ bytes: UnsafeRawBufferPointer) { writer.releaseRequestBytes(bytes.count) }
    func requestEnd() {}
    func responseWritable() { pump() }

    func cancelled() { stop() }

    func drain() {
        guard !ended else { return }
        stop()
        writer.end()
    }

    private func stop() {
        ended = true
        if counted {
            counted = false
            context.activity?.sseStreams -= 1
        }
        subscription?.cancel()
        subscription = nil
        heartbeat?.cancel()
        heartbeat = nil
        context.drainables[ObjectIdentifier(self)] = nil
    }
}

/// A weak reference, so timers and broadcaster callbacks never keep a finished handler alive.
final class WeakBox<T: AnyObject> {
    weak var value: T?
    init(_ value: T) { self.value = value }
}
