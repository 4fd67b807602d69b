import CNGHTTP2
import NIOCore

/// One HTTP/2 stream: request head accumulation, its handler, and its pending response body.
/// Event-loop confined; owned by its ``HTTP2Connection``. The per-request fields skip dynamic
/// exclusivity checks for the reason given there.
final class HTTP2Stream: ResponseWriter, FlushingWriter {
    let id: Int32
    /// Handlers may outlive the connection (e.g. a store write completing after the client went
    /// away, or during shutdown), and then every call here must be a no-op: the connection clears
    /// this when the stream closes, when the connection closes, and in its `deinit`, so it never
    /// points at a freed connection. `unowned(unsafe)` rather than `weak` or strong: a weak
    /// reference gives the connection a side table, which turns every retain and release of it
    /// (several per request) into the runtime's slow path (8-9 % of a tiny-POST profile), and a
    /// strong one costs a retain and release per call through it and a cycle to break.
    @exclusivity(unchecked) unowned(unsafe) var connection: HTTP2Connection?
    let eventLoop: any EventLoop

    @exclusivity(unchecked) var method = ""
    @exclusivity(unchecked) var path = ""
    @exclusivity(unchecked) var headers: [(String, String)] = []
    @exclusivity(unchecked) var handler: (any RequestHandler)?
    /// The request asked for `100 Continue` (`expect: 100-continue`).
    @exclusivity(unchecked) var expectsContinue = false
    /// The request's header list size so far (RFC 9113 §6.5.2: name + value + 32 per field),
    /// checked against the SETTINGS_MAX_HEADER_LIST_SIZE this server advertises.
    @exclusivity(unchecked) var headerListSize = 0
    /// Request body bytes received after the response ended (read and dropped, within a bound).
    @exclusivity(unchecked) var discarded = 0
    /// The response's last frame (END_STREAM) went out.
    @exclusivity(unchecked) var responseSent = false
    /// Response body bytes nghttp2 has taken so far (progress, for a stalled-reader check).
    @exclusivity(unchecked) var bytesTaken = 0

    /// Response body bytes not yet taken by nghttp2.
    @exclusivity(unchecked) var out = ByteBuffer()
    @exclusivity(unchecked) var headSubmitted = false
    @exclusivity(unchecked) var responseEnded = false
    /// The data provider returned NGHTTP2_ERR_DEFERRED and waits for `resume_data`.
    @exclusivity(unchecked) var dataDeferred = false
    @exclusivity(unchecked) var requestEnded = false
    @exclusivity(unchecked) var closed = false
    /// Request body bytes received and not yet released (consumed) by the handler.
    @exclusivity(unchecked) var unreleased = 0
    /// Whether the handler wants ``RequestHandler/responseWritable()`` calls.
    @exclusivity(unchecked) var wantsWritable = false

    init(id: Int32, connection: HTTP2Connection) {
        self.id = id
        self.connection = connection
        self.eventLoop = connection.eventLoop
    }

    var isHTTP2: Bool { true }

    func writeHead(status: Int, headers: [(String, String)]) {
        guard !headSubmitted, !closed else { return }
        headSubmitted = true
        guard let connection else { return }
        connection.submitResponse(self, status: status, headers: headers)
    }

    /// Resets the stream (`RST_STREAM` CANCEL) and drops its pending body: for a response that
    /// can never finish, e.g. a client keeping the stream's flow-control window shut.
    func cancel() {
        guard !closed, let connection else { return }
        responseEnded = true
        out = ByteBuffer()
        connection.cancelStream(id)
    }

    func writeBody(_ bytes: ByteBuffer) {
        guard !closed, !responseEnded else { return }
        wantsWritable = true
        if out.readableBytes == 0 {
            out = bytes  // the common case (one reply line at a time): no copy
        } else {
            out.writeImmutableBuffer(bytes)
        }
        connection?.resumeIfDeferred(self)
    }

    /// Whether the peer is reset (NO_ERROR) once the response is sent while the request is open.
    @exclusivity(unchecked) var abortRequestOnEnd = false

    func end(abortingRequest: Bool) {
        guard !closed, !responseEnded else { return }
        responseEnded = true
        abortRequestOnEnd = abortingRequest
        if !headSubmitted { writeHead(status: 200, headers: []) }
        connection?.resumeIfDeferred(self)
    }

    var pendingResponseBytes: Int { out.readableBytes }

    func releaseRequestBytes(_ count: Int) {
        guard count > 0 else { return }
        unreleased -= count
        connection?.consume(stream: self, count: count)
    }

    func flushConnection() { connection?.flush() }

    func bodyBuffer(minimumCapacity: Int) -> ByteBuffer {
        connection?.takeSpareBody(minimumCapacity: minimumCapacity) ?? ByteBufferAllocator().buffer(capacity: minimumCapacity)
    }
}
