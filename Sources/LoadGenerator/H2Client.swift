import CNGHTTP2
#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// What an HTTP/2 client stream reports to its owner. Called on the connection's event loop.
protocol H2StreamDelegate: AnyObject {
    /// The response's `:status`.
    func responseStatus(_ status: Int)
    /// A chunk of the response body.
    func responseData(_ bytes: UnsafeRawBufferPointer)
    /// The stream is gone: the response ended (`error == 0`), it was reset, or the connection was lost.
    func streamClosed(error: UInt32)
}

/// An HTTP/2 client connection on nghttp2 (client mode), driven by a NIO channel handler: the
/// same engine as the server, so the load generator costs little of the cores it shares with it.
///
/// The C boundary is this file: a session per connection, `mem_recv` for input, `mem_send` drained
/// into the channel while it is writable, and one data provider per request body that reads from
/// the stream's pending bytes or defers until ``write(stream:_:)`` brings more. Callbacks recover
/// the connection from `user_data` (passed unretained; the session is deleted before the object).
/// Everything runs on the channel's event loop.
final class H2ClientConnection {
    struct Stream {
        var delegate: any H2StreamDelegate
        var out: ByteBuffer
        var ended = false
        var deferred = false
    }

    private var session: OpaquePointer?
    private let context: ChannelHandlerContext
    private var streams: [Int32: Stream] = [:]
    private var outbound: ByteBuffer
    private var inRead = false
    private var inFlush = false
    private var flushAgain = false
    private(set) var closed = false
    /// Streams the server may still open per SETTINGS (updated when its SETTINGS arrive).
    var maxConcurrentStreams: Int { session.map { Int(nghttp2_session_get_remote_settings($0, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS)) } ?? 0 }
    /// Open streams.
    var streamCount: Int { streams.count }

    init(context: ChannelHandlerContext, window: Int32 = 16 << 20) {
        self.context = context
        self.outbound = context.channel.allocator.buffer(capacity: 16 << 10)
        var callbacks: OpaquePointer?
        precondition(nghttp2_session_callbacks_new(&callbacks) == 0, "nghttp2_session_callbacks_new: out of memory")
        defer { nghttp2_session_callbacks_del(callbacks) }
        nghttp2_session_callbacks_set_on_header_callback(callbacks, Self.onHeader)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, Self.onDataChunk)
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, Self.onStreamClose)
        if Self.trace {
            nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, Self.onFrameSendTrace)
            nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, Self.onFrameRecvTrace)
        }
        var s: OpaquePointer?
        let rv = nghttp2_session_client_new(&s, callbacks, Unmanaged.passUnretained(self).toOpaque())
        precondition(rv == 0, "nghttp2_session_client_new failed: \(rv)")
        session = s
        var settings = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_ENABLE_PUSH.rawValue), value: 0),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue), value: UInt32(window)),
        ]
        nghttp2_submit_settings(s, UInt8(NGHTTP2_FLAG_NONE.rawValue), &settings, settings.count)
        nghttp2_session_set_local_window_size(s, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, window)
    }

    deinit {
        if let session { nghttp2_session_del(session) }
    }

    // MARK: - Requests

    /// Starts a request; the body (if `body`) is sent with ``write(stream:_:)`` and ended with ``end(stream:)``.
    /// Returns the stream id, or `nil` when the session refuses (closed, or out of stream ids).
    func request(method: String, path: String, authority: String, scheme: String, headers: [(String, String)],
                 body: Bool, delegate: any H2StreamDelegate) -> Int32? {
        guard let session, !closed else { return nil }
        let all = [(":method", method), (":path", path), (":scheme", scheme), (":authority", authority)] + headers
        // One contiguous buffer for every name and value; nghttp2 copies them during submit.
        var bytes: [UInt8] = []
        var spans: [(Int, Int, Int, Int)] = []
        for (n, v) in all {
            let ns = bytes.count; bytes.append(contentsOf: n.utf8)
            let vs = bytes.count; bytes.append(contentsOf: v.utf8)
            spans.append((ns, n.utf8.count, vs, v.utf8.count))
        }
        let id: Int32 = bytes.withUnsafeMutableBufferPointer { buf in
            withUnsafeTemporaryAllocation(of: nghttp2_nv.self, capacity: spans.count) { nva in
                let base = buf.baseAddress!
                for (i, s) in spans.enumerated() {
                    nva[i] = nghttp2_nv(name: base + s.0, value: base + s.2, namelen: s.1, valuelen: s.3,
                                        flags: UInt8(NGHTTP2_NV_FLAG_NONE.rawValue))
                }
                if body {
                    var provider = nghttp2_data_provider(source: nghttp2_data_source(ptr: nil), read_callback: Self.readBody)
                    return nghttp2_submit_request(session, nil, nva.baseAddress, nva.count, &provider, nil)
                }
                return nghttp2_submit_request(session, nil, nva.baseAddress, nva.count, nil, nil)
            }
        }
        guard id > 0 else { return nil }
        streams[id] = Stream(delegate: delegate, out: context.channel.allocator.buffer(capacity: 0), ended: !body)
        flush()
        return id
    }

    /// Queues request-body bytes on a stream (sent as flow control allows).
    func write(stream id: Int32, _ bytes: ByteBuffer) {
        guard let session, var s = streams[id], !s.ended else { return }
        streams[id] = nil  // avoid a copy-on-write of `out`
        s.out.writeImmutableBuffer(bytes)
        let resume = s.deferred
        s.deferred = false
        streams[id] = s
        if resume { nghttp2_session_resume_data(session, id) }
        flush()
    }

    /// Ends a request body (after the bytes already queued).
    func end(stream id: Int32) {
        guard let session, var s = streams[id], !s.ended else { return }
        s.ended = true
        let resume = s.deferred
        s.deferred = false
        streams[id] = s
        if resume { nghttp2_session_resume_data(session, id) }
        flush()
    }

    /// Bytes queued on a stream and not yet taken by nghttp2 (flow control or a slow socket).
    func pendingBytes(stream id: Int32) -> Int { streams[id]?.out.readableBytes ?? 0 }

    /// Resets a stream (the delegate still gets ``H2StreamDelegate/streamClosed(error:)``).
    func reset(stream id: Int32) {
        guard let session, streams[id] != nil else { return }
        nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), id, UInt32(NGHTTP2_CANCEL.rawValue))
        flush()
    }

    // MARK: - Channel events

    func read(_ buffer: ByteBuffer) {
        guard let session, !closed else { return }
        inRead = true
        let rv = buffer.withUnsafeReadableBytes { bytes in
            nghttp2_session_mem_recv(session, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count)
        }
        inRead = false
        if closed {
            // A callback closed the connection while nghttp2 was on the stack (e.g. a viewer
            // closing its channel when its stream ended): the session is freed now it returned.
            freeSessionIfIdle()
            return
        }
        if rv < 0 {
            closeCause = closeCause ?? "nghttp2 receive error: " + String(cString: nghttp2_strerror(Int32(truncatingIfNeeded: rv)))
            connectionLost()
            context.close(promise: nil)
            return
        }
        flush()
    }

    /// Drains nghttp2's output into the channel while it is writable.
    ///
    /// Not re-entrant: `context.write` can fire `channelWritabilityChanged` (or close the channel)
    /// synchronously, and a nested flush used to write the buffer just handed to the channel a
    /// second time (duplicated DATA bytes: corrupt lines, and peers such as HAProxy crediting
    /// flow-control windows for bytes counted twice). A nested call only asks for another round.
    func flush() {
        guard !closed, !inRead else { return }
        if inFlush { flushAgain = true; return }
        inFlush = true
        defer {
            inFlush = false
            freeSessionIfIdle()
        }
        var wrote = false
        repeat {
            flushAgain = false
            while !closed, let session, context.channel.isWritable {
                var ptr: UnsafePointer<UInt8>? = nil
                let n = nghttp2_session_mem_send(session, &ptr)
                if n < 0 {
                    closeCause = closeCause ?? "nghttp2 send error: " + String(cString: nghttp2_strerror(Int32(truncatingIfNeeded: n)))
                    connectionLost()
                    context.close(promise: nil)
                    return
                }
                if n == 0 { break }
                outbound.writeBytes(UnsafeRawBufferPointer(start: ptr, count: n))
                if outbound.readableBytes >= 64 << 10 { emit(); wrote = true }
            }
            if outbound.readableBytes > 0 && !closed { emit(); wrote = true }
        } while flushAgain && !closed
        if wrote { context.flush() }
        // The session is over (a GOAWAY sent or received and nothing left to do): close, so the
        // agents notice and reconnect instead of waiting on a dead session.
        if let session, !closed, nghttp2_session_want_read(session) == 0 && nghttp2_session_want_write(session) == 0 {
            closeCause = closeCause ?? "session over (GOAWAY)"
            context.close(promise: nil)
        }
    }

    /// Hands the pending output to the channel; `outbound` is replaced first, so nothing that runs
    /// inside `context.write` can see (and send) these bytes again.
    private func emit() {
        let chunk = outbound
        outbound = context.channel.allocator.buffer(capacity: 16 << 10)
        context.write(NIOAny(chunk), promise: nil)
    }

    /// The connection is gone: every open stream is told so, once.
    /// Why the connection ended, when this side knows (a protocol error, a GOAWAY, a channel
    /// error); `nil` when the server just closed it. Reported with the reconnects.
    var closeCause: String?

    func connectionLost() {
        guard !closed else { return }
        closed = true
        let open = streams
        streams.removeAll()
        for (_, s) in open { s.delegate.streamClosed(error: UInt32(NGHTTP2_INTERNAL_ERROR.rawValue)) }
        freeSessionIfIdle()
    }

    /// Deletes the session of a closed connection, unless nghttp2 is on the stack: a callback
    /// (a delegate closing its channel, which on a cleartext channel fires `channelInactive` at
    /// once) can end the connection inside `mem_recv` or `mem_send`, and deleting the session
    /// there freed memory nghttp2 went on using. `read` and `flush` call this again when
    /// nghttp2 has returned.
    private func freeSessionIfIdle() {
        guard closed, !inRead, !inFlush, let session else { return }
        nghttp2_session_del(session)
        self.session = nil
    }

    // MARK: - Callbacks (C)

    fileprivate func readBody(stream id: Int32, into buf: UnsafeMutableRawBufferPointer, flags: UnsafeMutablePointer<UInt32>) -> Int {
        guard var s = streams[id] else { return Int(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue) }
        let n = min(buf.count, s.out.readableBytes)
        if n > 0 {
            s.out.withUnsafeReadableBytes { src in buf.copyMemory(from: UnsafeRawBufferPointer(rebasing: src.prefix(n))) }
            s.out.moveReaderIndex(forwardBy: n)
            if s.out.readableBytes == 0 { s.out.clear() }
        }
        if s.out.readableBytes == 0 && s.ended {
            flags.pointee |= UInt32(NGHTTP2_DATA_FLAG_EOF.rawValue)
        } else if n == 0 {
            s.deferred = true
            streams[id] = s
            return Int(NGHTTP2_ERR_DEFERRED.rawValue)
        }
        streams[id] = s
        return n
    }

    fileprivate func header(stream id: Int32, name: UnsafeBufferPointer<UInt8>, value: UnsafeBufferPointer<UInt8>) {
        guard name.count == 7, name.elementsEqual(":status".utf8), let s = streams[id] else { return }
        var status = 0
        for b in value where b >= 48 && b <= 57 { status = status * 10 + Int(b - 48) }
        s.delegate.responseStatus(status)
    }

    fileprivate func data(stream id: Int32, _ bytes: UnsafeRawBufferPointer) {
        streams[id]?.delegate.responseData(bytes)
    }

    fileprivate func streamClosed(_ id: Int32, error: UInt32) {
        guard let s = streams.removeValue(forKey: id) else { return }
        s.delegate.streamClosed(error: error)
    }

    /// `RTD_LOADGEN_TRACE=1`: every frame sent and received, on stderr (for debugging a peer).
    static let trace = getenv("RTD_LOADGEN_TRACE") != nil

    static func describe(_ f: UnsafePointer<nghttp2_frame>) -> String {
        let hd = f.pointee.hd
        var extra = ""
        switch hd.type {
        case UInt8(NGHTTP2_WINDOW_UPDATE.rawValue): extra = " increment=\(f.pointee.window_update.window_size_increment)"
        case UInt8(NGHTTP2_RST_STREAM.rawValue): extra = " error=\(f.pointee.rst_stream.error_code)"
        case UInt8(NGHTTP2_GOAWAY.rawValue): extra = " error=\(f.pointee.goaway.error_code) last=\(f.pointee.goaway.last_stream_id)"
        case UInt8(NGHTTP2_SETTINGS.rawValue):
            let st = f.pointee.settings
            for i in 0..<Int(st.niv) { extra += " \(st.iv[i].settings_id)=\(st.iv[i].value)" }
        default: break
        }
        return "type=\(hd.type) stream=\(hd.stream_id) length=\(hd.length) flags=\(hd.flags)\(extra)"
    }

    /// Writes `s` and a newline to stderr (trace lines, warnings).
    static func stderrLine(_ s: String) {
        let line = s + "\n"
        _ = line.withCString { Glibc.write(2, $0, strlen($0)) }
    }

    static let onFrameSendTrace: nghttp2_on_frame_send_callback = { _, frame, _ in
        if let frame { stderrLine("send \(describe(frame))") }
        return 0
    }

    static let onFrameRecvTrace: nghttp2_on_frame_recv_callback = { _, frame, _ in
        if let frame { stderrLine("recv \(describe(frame))") }
        return 0
    }

    @inline(__always)
    static func conn(_ userData: UnsafeMutableRawPointer?) -> H2ClientConnection {
        Unmanaged<H2ClientConnection>.fromOpaque(userData!).takeUnretainedValue()
    }

    static let readBody: nghttp2_data_source_read_callback = { _, streamID, buf, length, flags, _, userData in
        guard let buf, let flags else { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
        return conn(userData).readBody(stream: streamID, into: UnsafeMutableRawBufferPointer(start: buf, count: length), flags: flags)
    }

    static let onHeader: nghttp2_on_header_callback = { _, frame, name, nameLength, value, valueLength, _, userData in
        guard let frame, let name, let value, frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue) else { return 0 }
        conn(userData).header(stream: frame.pointee.hd.stream_id, name: UnsafeBufferPointer(start: name, count: nameLength),
                              value: UnsafeBufferPointer(start: value, count: valueLength))
        return 0
    }

    static let onDataChunk: nghttp2_on_data_chunk_recv_callback = { _, _, streamID, data, length, userData in
        guard let data else { return 0 }
        conn(userData).data(stream: streamID, UnsafeRawBufferPointer(start: data, count: length))
        return 0
    }

    static let onStreamClose: nghttp2_on_stream_close_callback = { _, streamID, errorCode, userData in
        conn(userData).streamClosed(streamID, error: errorCode)
        return 0
    }
}

/// Drives an ``H2ClientConnection`` from a channel pipeline.
final class H2ClientHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private(set) var connection: H2ClientConnection?
    private let onActive: (H2ClientConnection) -> Void
    private let onInactive: (_ cause: String) -> Void
    /// A channel error seen before the connection ended.
    private var channelError: String?

    init(onActive: @escaping (H2ClientConnection) -> Void, onInactive: @escaping (_ cause: String) -> Void) {
        self.onActive = onActive
        self.onInactive = onInactive
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { activate(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        activate(context)
        context.fireChannelActive()
    }

    private func activate(_ context: ChannelHandlerContext) {
        guard connection == nil else { return }
        let c = H2ClientConnection(context: context)
        connection = c
        c.flush()  // preface + SETTINGS
        onActive(c)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        connection?.read(unwrapInboundIn(data))
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        connection?.flush()
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection?.connectionLost()
        onInactive(connection?.closeCause ?? channelError ?? "closed by the server")
        // The connection holds the channel context, which holds this handler: drop the cycle so a
        // closed connection is freed (reconnect storms leaked ~20 KB per connection).
        connection = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if channelError == nil { channelError = "channel error: \(error)" }
        context.close(promise: nil)
    }
}
