import CNGHTTP2
import Logging
import MetricsCore
import NIOCore

/// One HTTP/2 connection: owns the `nghttp2_session` and its streams, feeds it the bytes read
/// from the channel and writes what it produces. Event-loop confined.
///
/// - Reads go to `nghttp2_session_mem_recv`; output is drained with `mem_send` once per read
///   batch (and after asynchronous events such as acks or SSE ticks), never per frame.
/// - Automatic WINDOW_UPDATE is off: request body bytes are credited back with
///   `nghttp2_session_consume` only when the handler has processed them (for ingestion: when the
///   batch writer has taken the samples), so a slow store slows the sender.
/// - Streamed response bodies use a deferred data provider resumed with `resume_data`.
/// - Output is only pulled from nghttp2 while the channel is writable.
///
/// The fields touched by every nghttp2 callback are `@exclusivity(unchecked)`: the connection is
/// confined to its event loop and never passes them `inout` across a call that could reach them
/// again, so the runtime's dynamic exclusivity checks (`swift_beginAccess`, several per callback)
/// only cost time: 2-4 % of a tiny-POST profile together with ``HTTP2Stream``'s.
final class HTTP2Connection {
    @exclusivity(unchecked) private var session: OpaquePointer?
    @exclusivity(unchecked) private var streams = StreamTable<HTTP2Stream>()
    let eventLoop: any EventLoop
    private let router: Router
    private let channelContext: ChannelHandlerContext
    /// `channelContext.channel`, kept: the context's getter goes through the pipeline (a retain
    /// and release per call, and `flush` asks for it per loop iteration).
    private let channel: any Channel
    let connectionContext: ConnectionContext
    private let logger: Logger
    @exclusivity(unchecked) private var outbound: ByteBuffer
    @exclusivity(unchecked) private var inRead = false
    @exclusivity(unchecked) private var flushScheduled = false
    @exclusivity(unchecked) private var closed = false
    /// `flush()` is running; a nested call (from a writability change the channel fires inside
    /// `channelContext.flush()`) only asks it to go round again.
    @exclusivity(unchecked) private var inFlush = false
    @exclusivity(unchecked) private var flushAgain = false
    /// The channel is to close once the bytes written so far are on the socket.
    @exclusivity(unchecked) private var closing = false
    private var shuttingDown = false
    /// Streams whose handlers may want to write more once their pending bytes drop.
    @exclusivity(unchecked) private var writableWaiters: Set<Int32> = []
    static let responseLowWater = 64 << 10

    init(context: ChannelHandlerContext, router: Router, logger: Logger, secure: Bool) {
        self.channelContext = context
        self.channel = context.channel
        self.eventLoop = context.eventLoop
        self.router = router
        self.logger = logger
        // Empty until something is sent: a buffer kept per connection (16 KiB, as this was) is a
        // third of an idle agent connection's memory at 10,000 connections.
        self.outbound = channel.allocator.buffer(capacity: 0)
        self.connectionContext = router.makeConnectionContext(for: context, secure: secure)

        let callbacks = NGHTTP2Callbacks.make()
        defer { nghttp2_session_callbacks_del(callbacks) }
        var option: OpaquePointer?
        nghttp2_option_new(&option)
        defer { nghttp2_option_del(option) }
        nghttp2_option_set_no_auto_window_update(option, 1)
        // Debian's 1.52 carries the rapid-reset guard (CVE-2023-44487): at most 1000 RST_STREAMs
        // per burst, refilled at 33 per second.
        nghttp2_option_set_stream_reset_rate_limit(option, 1000, 33)
        nghttp2_option_set_max_settings(option, 32)
        // No RFC 7540 priority tree (also announced below, RFC 9218): nothing here is scheduled
        // by priority (ingest replies are small, SSE streams independent), and the tree cost
        // nghttp2 work per stream plus closed streams kept per connection to maintain it.
        nghttp2_option_set_no_closed_streams(option, 1)
        var s: OpaquePointer?
        let rv = nghttp2_session_server_new2(&s, callbacks, Unmanaged.passUnretained(self).toOpaque(), option)
        precondition(rv == 0, "nghttp2_session_server_new2 failed: \(NGHTTP2Error(rv))")
        session = s
        let cfg = router.configuration
        var settings = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue), value: UInt32(cfg.maxConcurrentStreams)),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: UInt32(cfg.streamWindow)),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue), value: UInt32(Self.maxHeaderListSize)),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES.rawValue), value: 1),
        ]
        nghttp2_submit_settings(s, UInt8(NGHTTP2_FLAG_NONE.rawValue), &settings, settings.count)
        nghttp2_session_set_local_window_size(s, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, Int32(cfg.connectionWindow))
        // A strong capture, cleared in `close()` (which the channel handler always calls): a weak
        // one would put this connection's reference count in a side table (see HTTP2Stream).
        connectionContext.flush = { self.flush() }
    }

    deinit {
        if let session { nghttp2_session_del(session) }
        // Streams hold this connection `unowned(unsafe)`: detach any still listed (`close()`
        // normally did) so no handler can reach freed memory through its stream. (`lastStream`
        // is always one of them: closed streams leave both and were detached then.)
        for s in streams.values { s.connection = nil }
    }

    // MARK: - Channel events

    func read(_ buffer: ByteBuffer) {
        guard let session, !closed else { return }
        inRead = true
        let rv = buffer.withUnsafeReadableBytes { bytes in
            nghttp2_session_mem_recv(session, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count)
        }
        inRead = false
        if rv < 0 {
            let error = NGHTTP2Error(rv)
            router.statistics.protocolErrors.wrappingAdd(1, ordering: .relaxed)
            logger.debug("HTTP/2 session error, closing", metadata: ["error": "\(error)"])
            flush()  // GOAWAY, if nghttp2 queued one
            closeAfterWrites()
        }
    }

    func readComplete() {
        connectionContext.ingest.submit()
        flush()
    }

    func writabilityChanged() {
        if channel.isWritable { flush() }
    }

    /// The channel closed: cancel every handler and free the session (no callback can follow).
    func close() {
        guard !closed else { return }
        closed = true
        connectionContext.ingest.submit()
        let all = streams.values
        streams.removeAll()
        lastStream = nil
        spareBodies = []
        for s in all {
            s.closed = true
            s.handler?.cancelled()
            s.handler = nil
            s.connection = nil
        }
        connectionContext.ingest.publishCounters()
        connectionContext.drainables.removeAll()
        connectionContext.flush = {}
        connectionContext.ingest.context = nil
        if let session { nghttp2_session_del(session) }
        session = nil
    }

    /// Graceful shutdown: refuse new streams (GOAWAY), ask handlers to finish, close when idle.
    func shutdown() {
        guard let session, !closed, !shuttingDown else { return }
        shuttingDown = true
        nghttp2_submit_goaway(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), nghttp2_session_get_last_proc_stream_id(session),
                              UInt32(NGHTTP2_NO_ERROR.rawValue), nil, 0)
        for s in Array(streams.values) { s.handler?.drain() }
        connectionContext.ingest.submit()
        flush()
    }

    private func closeChannel() {
        channelContext.close(promise: nil)
    }

    /// Ends the connection without losing what was written: a plain `close` failed the writes still
    /// queued in the channel (the tail of the replies and the GOAWAY, when the peer read slowly),
    /// and closing while the peer's last frames (WINDOW_UPDATEs for those replies) sit unread makes
    /// the kernel reset the connection, which throws away replies the peer had not read yet. So:
    /// close the output once the queued bytes are written (FIN, or TLS close_notify), keep reading
    /// until the peer closes, and give it ``lingerSeconds`` to do so.
    private func closeAfterWrites() {
        guard !closing, !closed else { return }
        closing = true
        let channel = self.channel
        let halfClosed = channel.eventLoop.makePromise(of: Void.self)
        channel.close(mode: .output, promise: halfClosed)
        halfClosed.futureResult.whenFailure { _ in channel.close(promise: nil) }
        channel.eventLoop.scheduleTask(in: .seconds(Self.lingerSeconds)) { channel.close(promise: nil) }
    }

    /// How long a connection this side ended waits for the peer to close its side.
    static let lingerSeconds: Int64 = 5

    // MARK: - Output

    /// Drains nghttp2's output into the channel (only while it is writable).
    ///
    /// `channelContext.flush()` can re-enter (a writability change runs `flush()` again) and can
    /// close the channel synchronously (a write error), which frees the session: a nested call only
    /// marks another round, and the session is looked up again after every call out.
    func flush() {
        guard !closed, session != nil else { return }
        if inRead { return }  // readComplete flushes
        if inFlush {
            flushAgain = true
            return
        }
        inFlush = true
        defer { inFlush = false }
        repeat {
            flushAgain = false
            guard flushOnce() else { return }
        } while flushAgain
    }

    /// One round of ``flush()``; `false` when the connection closed or is closing.
    private func flushOnce() -> Bool {
        guard let session, !closed else { return false }
        var wrote = false
        while channel.isWritable {
            var ptr: UnsafePointer<UInt8>? = nil
            let n = nghttp2_session_mem_send(session, &ptr)
            if n < 0 {
                logger.debug("nghttp2_session_mem_send failed", metadata: ["error": "\(NGHTTP2Error(n))"])
                closeChannel()
                return false
            }
            if n == 0 { break }
            if outbound.capacity == 0 { outbound.reserveCapacity(Swift.max(n, 4096)) }
            outbound.writeBytes(UnsafeRawBufferPointer(start: ptr, count: n))
            if outbound.readableBytes >= 256 << 10 {
                channelContext.write(NIOAny(outbound), promise: nil)
                outbound = channel.allocator.buffer(capacity: 0)
                wrote = true
            }
        }
        if outbound.readableBytes > 0 {
            channelContext.write(NIOAny(outbound), promise: nil)
            outbound = channel.allocator.buffer(capacity: 0)
            wrote = true
        }
        if wrote { channelContext.flush() }
        guard !closed, self.session != nil else { return false }
        notifyWritable()
        guard !closed, let session = self.session else { return false }
        if nghttp2_session_want_read(session) == 0 && nghttp2_session_want_write(session) == 0 {
            closeAfterWrites()
            return false
        }
        return true
    }

    private func notifyWritable() {
        guard !writableWaiters.isEmpty else { return }
        let ids = writableWaiters
        writableWaiters.removeAll()
        var again = false
        for id in ids {
            guard let s = streams[id], !s.closed, !s.responseEnded else { continue }
            if s.out.readableBytes < Self.responseLowWater {
                let before = s.out.readableBytes
                s.handler?.responseWritable()
                if s.out.readableBytes > before { again = true }
            } else {
                writableWaiters.insert(id)
            }
        }
        if again && !flushScheduled {
            flushScheduled = true
            eventLoop.assumeIsolated().execute { [self] in
                flushScheduled = false
                flush()
            }
        }
    }

    // MARK: - Called by streams

    func submitResponse(_ stream: HTTP2Stream, status: Int, headers: [(String, String)]) {
        guard let session, !stream.closed else { return }
        // nghttp2 copies names and values during the call, so the name/value bytes are laid out
        // in one stack buffer (this runs once per request: no heap allocation). Header names are
        // lower case already (HTTP/2 requires it; every caller passes literals), so no per-request
        // case folding. TLS connections add HSTS here rather than through a concatenated array.
        let hsts: (String, String)? = connectionContext.secure ? ConnectionContext.hsts : nil
        var byteCount = HeaderName.status.count + 3
        for (n, v) in headers { byteCount += n.utf8.count + v.utf8.count }
        if let hsts { byteCount += hsts.0.utf8.count + hsts.1.utf8.count }
        let fieldCount = headers.count + 1 + (hsts == nil ? 0 : 1)
        let noBody = status == 204 || status == 304 || stream.method == "HEAD"
        if noBody { stream.responseEnded = true }
        let rv: Int32 = withUnsafeTemporaryAllocation(of: UInt8.self, capacity: byteCount) { bytes in
            withUnsafeTemporaryAllocation(of: nghttp2_nv.self, capacity: fieldCount) { nva in
                // A local struct, not closures over local variables: those were boxed and their
                // every write checked for exclusivity at run time (~1 % of a tiny-POST profile).
                var fields = HeaderFieldWriter(bytes: bytes.baseAddress!, nva: nva.baseAddress!)
                // Three ASCII digits, written in place (no String per response).
                let code = min(max(status, 100), 999)
                let digits: (UInt8, UInt8, UInt8) = (UInt8(48 + code / 100), UInt8(48 + code / 10 % 10), UInt8(48 + code % 10))
                withUnsafeBytes(of: digits) { d in
                    HeaderName.status.withUnsafeBytes { fields.add($0, d) }
                }
                for (n, v) in headers { fields.add(n, v) }
                if let hsts { fields.add(hsts.0, hsts.1) }
                if noBody {
                    return nghttp2_submit_response(session, stream.id, nva.baseAddress, fieldCount, nil)
                }
                var provider = nghttp2_data_provider(source: nghttp2_data_source(ptr: nil), read_callback: NGHTTP2Callbacks.readBody)
                return nghttp2_submit_response(session, stream.id, nva.baseAddress, fieldCount, &provider)
            }
        }
        if rv != 0 { logger.debug("nghttp2_submit_response failed", metadata: ["error": "\(NGHTTP2Error(rv))"]) }
        scheduleFlush()
    }

    func resumeIfDeferred(_ stream: HTTP2Stream) {
        guard let session, stream.headSubmitted, stream.dataDeferred else {
            scheduleFlush()
            return
        }
        stream.dataDeferred = false
        nghttp2_session_resume_data(session, stream.id)
        scheduleFlush()
    }

    func consume(stream: HTTP2Stream, count: Int) {
        guard let session else { return }
        if stream.closed {
            nghttp2_session_consume_connection(session, count)
        } else {
            nghttp2_session_consume(session, stream.id, count)
        }
        scheduleFlush()
    }

    /// Flush at the end of the current event-loop task (coalesces many writes into one mem_send).
    private func scheduleFlush() {
        guard !inRead, !flushScheduled, !closed else { return }
        flushScheduled = true
        eventLoop.assumeIsolated().execute { [self] in
            flushScheduled = false
            flush()
        }
    }

    // MARK: - Called from nghttp2 callbacks

    func beginStream(_ id: Int32) {
        let s = HTTP2Stream(id: id, connection: self)
        swap(&s.headers, &spareHeaders)
        streams.insert(s, for: id)
        lastStream = Unmanaged.passUnretained(s)
        lastStreamID = id
    }

    /// The stream of the previous lookup: nghttp2 calls back for one stream several times in a
    /// row (begin, each header, end of headers, data, end of request, reading the reply). Not
    /// retained: `streams` holds it, and it is cleared whenever a stream leaves `streams`
    /// (``streamClosed(_:errorCode:)``, ``close()``), so it never outlives its stream.
    @exclusivity(unchecked) private var lastStream: Unmanaged<HTTP2Stream>?
    @exclusivity(unchecked) private var lastStreamID: Int32 = 0

    /// The stream with `id`, retained (for work that may reach its handler).
    @inline(__always)
    private func stream(_ id: Int32) -> HTTP2Stream? {
        withStream(id) { $0 }
    }

    /// Runs `body` on the stream with `id` without retaining it: only for work that cannot close
    /// the stream or the connection (no handler calls, no nghttp2 calls that end streams). Each
    /// header and each read of the reply body took a retain and a release otherwise (~10 per
    /// tiny request).
    @inline(__always)
    private func withStream<R>(_ id: Int32, _ body: (HTTP2Stream) -> R) -> R? {
        if let u = lastStream, lastStreamID == id { return u._withUnsafeGuaranteedRef(body) }
        guard let s = streams[id] else { return nil }
        lastStream = Unmanaged.passUnretained(s)
        lastStreamID = id
        return body(s)
    }

    /// The largest request header list accepted (advertised in SETTINGS; nghttp2 leaves the check
    /// to the application). HPACK makes a large list cheap to send: one indexed 4 KB field repeated
    /// by a one-byte reference. Beyond it the request gets 431 and its headers are not kept.
    static let maxHeaderListSize = 64 << 10

    func header(stream id: Int32, name: UnsafeBufferPointer<UInt8>, value: UnsafeBufferPointer<UInt8>) {
        withStream(id) { header(into: $0, name: name, value: value) }
    }

    private func header(into s: HTTP2Stream, name: UnsafeBufferPointer<UInt8>, value: UnsafeBufferPointer<UInt8>) {
        s.headerListSize += name.count + value.count + 32
        if s.headerListSize > Self.maxHeaderListSize {
            s.headers = []
            return
        }
        if name.first == UInt8(ascii: ":") {
            if HeaderName.equals(name, HeaderName.method) {
                s.method = String(decoding: value, as: UTF8.self)
            } else if HeaderName.equals(name, HeaderName.path) {
                s.path = HeaderName.knownPath(value) ?? String(decoding: value, as: UTF8.self)
            }
            return
        }
        if let kept = HeaderName.kept(name) {
            s.headers.append((kept, String(decoding: value, as: UTF8.self)))
        } else if HeaderName.equals(name, HeaderName.expect) && HeaderName.equalsIgnoringCase(value, HeaderName.continueValue) {
            s.expectsContinue = true
        }
    }

    func headersComplete(_ id: Int32) {
        guard let s = stream(id), s.handler == nil else { return }
        if shuttingDown {
            if let session { nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), id, UInt32(NGHTTP2_REFUSED_STREAM.rawValue)) }
            return
        }
        if s.headerListSize > Self.maxHeaderListSize {
            s.handler = FixedResponseHandler(.error(431, "request header list over \(Self.maxHeaderListSize) bytes"), writer: s)
            return
        }
        let head = RequestHead(method: s.method, target: s.path, headers: s.headers)
        s.headers = []
        s.handler = router.makeHandler(for: head, writer: s, connection: connectionContext)
        // A client waiting for `100 Continue` before its body (RFC 9113 §8.1: an interim HEADERS
        // frame), unless the handler gave its final answer already.
        if s.expectsContinue, !s.headSubmitted, !s.closed, s.handler != nil, let session {
            let rv = HeaderName.status.withUnsafeBufferPointer { name in
                HeaderName.continueStatus.withUnsafeBufferPointer { value in
                    var nv = nghttp2_nv(name: UnsafeMutablePointer(mutating: name.baseAddress!), value: UnsafeMutablePointer(mutating: value.baseAddress!),
                                        namelen: name.count, valuelen: value.count, flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
                    return nghttp2_submit_headers(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), id, nil, &nv, 1, nil)
                }
            }
            if rv < 0 { logger.debug("nghttp2_submit_headers (100) failed", metadata: ["error": "\(NGHTTP2Error(Int32(rv)))"]) }
            scheduleFlush()
        }
        // The kept-headers array goes to the next stream, emptied in place when no handler kept
        // the head (a heap array per request otherwise).
        var kept = (consume head).headers
        kept.removeAll(keepingCapacity: true)
        spareHeaders = kept
    }

    /// Finished short responses' body buffers (each uniquely held), for later ones: a summary
    /// line per tiny POST otherwise costs a buffer allocation (two `malloc`s) per request. A read
    /// batch completes many requests before their replies go out, hence a pool, bounded at
    /// ``maxSpareBodies`` buffers of at most ``spareBodyCapacity`` bytes (a connection that only
    /// ever carries one long stream keeps at most one).
    @exclusivity(unchecked) private var spareBodies: [ByteBuffer] = []
    static let spareBodyCapacity = 1024
    static let maxSpareBodies = 64

    /// A spare body buffer, emptied, if one can hold `minimumCapacity` bytes.
    func takeSpareBody(minimumCapacity: Int) -> ByteBuffer? {
        guard minimumCapacity <= Self.spareBodyCapacity, var b = spareBodies.popLast() else { return nil }
        b.clear(minimumCapacity: minimumCapacity)
        return b
    }

    /// A kept-headers array with capacity, for the next stream (see ``headersComplete(_:)``).
    @exclusivity(unchecked) private var spareHeaders: [(String, String)] = []

    func requestEnded(_ id: Int32) {
        guard let s = stream(id), !s.requestEnded else { return }
        s.requestEnded = true
        s.handler?.requestEnd()
    }

    func data(stream id: Int32, _ bytes: UnsafeRawBufferPointer) {
        guard let s = stream(id), let handler = s.handler else {
            if let session { nghttp2_session_consume_connection(session, bytes.count) }
            return
        }
        s.unreleased += bytes.count
        if s.responseEnded && !s.abortRequestOnEnd {
            // Answered already (a refusal, an error): the rest of the body is read and dropped,
            // within a bound; past it the peer is told to stop (RST_STREAM NO_ERROR once the
            // response is out, RFC 9113 §8.1).
            s.discarded += bytes.count
            if s.discarded > maxDiscardedRequestBody {
                s.abortRequestOnEnd = true
                if s.responseSent, let session {
                    nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), id, UInt32(NGHTTP2_NO_ERROR.rawValue))
                }
            }
        }
        handler.requestBody(bytes)
    }

    func streamClosed(_ id: Int32, errorCode: UInt32) {
        guard let s = streams.removeValue(forKey: id) else { return }
        if lastStreamID == id { lastStream = nil }
        s.closed = true
        if !writableWaiters.isEmpty { writableWaiters.remove(id) }
        if let session, s.unreleased > 0 { nghttp2_session_consume_connection(session, s.unreleased) }
        if !(s.responseEnded && s.out.readableBytes == 0) || errorCode != 0 {
            s.handler?.cancelled()
        }
        s.handler = nil
        s.connection = nil
    }

    func responseSent(_ id: Int32) {
        // The handler stopped early while the peer is still sending: tell it to stop (RFC 9113 §8.1).
        // Otherwise the rest of the body is received and discarded.
        guard let session, let s = stream(id) else { return }
        s.responseSent = true
        guard !s.requestEnded, s.abortRequestOnEnd else { return }
        nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), id, UInt32(NGHTTP2_NO_ERROR.rawValue))
    }

    /// Resets a stream this side gave up on (``HTTP2Stream/cancel()``).
    func cancelStream(_ id: Int32) {
        guard let session else { return }
        nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), id, UInt32(NGHTTP2_CANCEL.rawValue))
        scheduleFlush()
    }

    func readBody(stream id: Int32, into buf: UnsafeMutableRawBufferPointer, flags: UnsafeMutablePointer<UInt32>) -> Int {
        withStream(id) { readBody(from: $0, into: buf, flags: flags) } ?? Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)
    }

    private func readBody(from s: HTTP2Stream, into buf: UnsafeMutableRawBufferPointer, flags: UnsafeMutablePointer<UInt32>) -> Int {
        let id = s.id
        let n = min(buf.count, s.out.readableBytes)
        s.bytesTaken &+= n
        if n > 0 {
            s.out.withUnsafeReadableBytes { src in
                buf.baseAddress!.copyMemory(from: src.baseAddress!, byteCount: n)
            }
            s.out.moveReaderIndex(forwardBy: n)
            if s.out.readableBytes == 0 {
                s.out.clear()
                if s.responseEnded && spareBodies.count < Self.maxSpareBodies && s.out.capacity <= Self.spareBodyCapacity {
                    // The response's last bytes are out: its buffer serves a later short response.
                    spareBodies.append(s.out)
                    s.out = ByteBuffer()
                }
            }
        }
        if s.out.readableBytes == 0 {
            if s.responseEnded {
                flags.pointee |= UInt32(NGHTTP2_DATA_FLAG_EOF.rawValue)
            } else if n == 0 {
                s.dataDeferred = true
                if s.wantsWritable { writableWaiters.insert(id) }
                return Int(NGHTTP2_ERR_DEFERRED.rawValue)
            }
        }
        if s.wantsWritable && !s.responseEnded && s.out.readableBytes < Self.responseLowWater { writableWaiters.insert(id) }
        return n
    }
}

/// Header-name matching on raw bytes, so unneeded headers never become Strings.
enum HeaderName {
    static let method: [UInt8] = Array(":method".utf8)
    static let status: [UInt8] = Array(":status".utf8)
    static let path: [UInt8] = Array(":path".utf8)
    static let expect: [UInt8] = Array("expect".utf8)
    static let continueValue: [UInt8] = Array("100-continue".utf8)
    static let continueStatus: [UInt8] = Array("100".utf8)

    /// Whether `a` equals `b` (lower-case ASCII) ignoring ASCII case.
    static func equalsIgnoringCase(_ a: UnsafeBufferPointer<UInt8>, _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        for i in 0..<a.count where asciiLowercased(a[i]) != b[i] { return false }
        return true
    }
    static let kept: [([UInt8], String)] = RequestHead.keptHeaders.map { (Array($0.utf8), $0) }

    @inline(__always)
    static func equals(_ a: UnsafeBufferPointer<UInt8>, _ b: [UInt8]) -> Bool {
        a.count == b.count && b.withUnsafeBufferPointer { memcmp(a.baseAddress!, $0.baseAddress!, a.count) == 0 }
    }

    /// The kept header's name if `name` (already lower case, as HTTP/2 requires) is one of them.
    static func kept(_ name: UnsafeBufferPointer<UInt8>) -> String? {
        // Most headers are not kept; the length check rejects them before any byte comparison.
        guard name.count < 64, keptLengthMask & (1 << UInt64(name.count)) != 0 else { return nil }
        for (bytes, s) in kept where equals(name, bytes) { return s }
        return nil
    }
    static let keptLengthMask: UInt64 = kept.reduce(0) { $0 | (1 << UInt64($1.0.count)) }

    /// The ingestion paths agents hit per request, as literals: `"/api/metrics/stream"` is over
    /// the 15 bytes a String holds inline, so decoding it would allocate once per tiny POST.
    static let knownPaths: [([UInt8], String)] = ["/api/metrics/stream", "/api/metrics", "/write", "/api/v2/write"].map { (Array($0.utf8), $0) }

    /// The literal for `value` when it is one of ``knownPaths`` (exactly, no query string).
    static func knownPath(_ value: UnsafeBufferPointer<UInt8>) -> String? {
        for (bytes, s) in knownPaths where equals(value, bytes) { return s }
        return nil
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// Lays out response header fields for `nghttp2_submit_response`: names and values copied into one
/// stack buffer, an `nghttp2_nv` per field pointing into it (nghttp2 copies both during the call).
private struct HeaderFieldWriter {
    let bytes: UnsafeMutablePointer<UInt8>
    let nva: UnsafeMutablePointer<nghttp2_nv>
    var offset = 0
    var field = 0

    init(bytes: UnsafeMutablePointer<UInt8>, nva: UnsafeMutablePointer<nghttp2_nv>) {
        self.bytes = bytes
        self.nva = nva
    }

    mutating func add(_ name: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) {
        let n = bytes + offset
        if name.count > 0 { UnsafeMutableRawPointer(n).copyMemory(from: name.baseAddress!, byteCount: name.count) }
        if value.count > 0 { UnsafeMutableRawPointer(n + name.count).copyMemory(from: value.baseAddress!, byteCount: value.count) }
        nva[field] = nghttp2_nv(name: n, value: n + name.count, namelen: name.count, valuelen: value.count,
                                flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
        offset += name.count + value.count
        field += 1
    }

    mutating func add(_ name: String, _ value: String) {
        var name = name, value = value
        name.withUTF8 { n in value.withUTF8 { v in add(UnsafeRawBufferPointer(n), UnsafeRawBufferPointer(v)) } }
    }
}
