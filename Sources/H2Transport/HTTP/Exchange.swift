import NIOCore

/// The parts of a request head the handlers use, protocol-independent.
///
/// Only a small set of headers is kept (see ``keptHeaders``): the ingestion hot path should not
/// allocate strings for headers nobody reads.
struct RequestHead {
    var method: String
    /// The path without the query string.
    var path: String
    /// The raw query string (after `?`), empty when none.
    var query: Substring
    /// Kept headers, lower-cased names.
    var headers: [(String, String)]

    /// Header names the handlers read; every other header is dropped at parse time.
    static let keptHeaders: Set<String> = [
        "content-type", "content-encoding", "content-length", "x-server-id", "last-event-id",
        "authorization", "accept", "accept-encoding",
    ]

    init(method: String, target: String, headers: [(String, String)]) {
        self.method = method
        // Split on the UTF-8 bytes: this runs for every request, and Character iteration (or the
        // UTF8View's generic `firstIndex`) is slow.
        let utf8 = target.utf8
        let offset: Int? = utf8.withContiguousStorageIfAvailable { $0.firstIndex(of: UInt8(ascii: "?")) }
            ?? utf8.firstIndex(of: UInt8(ascii: "?")).map { utf8.distance(from: utf8.startIndex, to: $0) }
        if let offset {
            let q = utf8.index(utf8.startIndex, offsetBy: offset)
            self.path = String(target[..<q])
            self.query = target[target.utf8.index(after: q)...]
        } else {
            self.path = target
            self.query = ""
        }
        self.headers = headers
    }

    /// The first value of a header (name in lower case).
    func header(_ name: String) -> String? {
        headers.first { $0.0 == name }?.1
    }

    /// Whether `haystack` contains `needle`, ASCII case-insensitively (media types and tokens).
    /// Byte-wise on purpose: `StringProtocol.contains` from Foundation, visible here through other
    /// files' imports, bridges to `NSString` (an allocation and a slow search per request).
    static func asciiContains(_ haystack: String, _ needle: StaticString) -> Bool {
        let n = UnsafeRawBufferPointer(start: needle.utf8Start, count: needle.utf8CodeUnitCount)
        guard !n.isEmpty else { return true }
        var haystack = haystack
        return haystack.withUTF8 { h in
            guard h.count >= n.count else { return false }
            outer: for start in 0...(h.count - n.count) {
                for k in 0..<n.count where asciiLowercased(h[start + k]) != asciiLowercased(n[k]) { continue outer }
                return true
            }
            return false
        }
    }

    /// Decoded query parameters in order (`+` is a space, `%XX` decoded; invalid escapes kept as is).
    var queryItems: [(String, String)] {
        query.split(separator: "&").map { part in
            if let eq = part.firstIndex(of: "=") {
                return (Self.percentDecode(part[..<eq]), Self.percentDecode(part[part.index(after: eq)...]))
            }
            return (Self.percentDecode(part), "")
        }
    }

    /// The first value of a query parameter.
    func queryValue(_ name: String) -> String? {
        queryItems.first { $0.0 == name }?.1
    }

    static func percentDecode(_ s: Substring) -> String {
        guard s.contains(where: { $0 == "%" || $0 == "+" }) else { return String(s) }
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count)
        var it = Array(s.utf8)[...]
        while let b = it.popFirst() {
            if b == UInt8(ascii: "+") {
                out.append(0x20)
            } else if b == UInt8(ascii: "%"), it.count >= 2, let h = hex(it[it.startIndex]), let l = hex(it[it.startIndex + 1]) {
                out.append(h << 4 | l)
                it = it.dropFirst(2)
            } else {
                out.append(b)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func hex(_ b: UInt8) -> UInt8? {
        switch b {
        case 0x30...0x39: return b - 0x30
        case 0x41...0x46: return b - 0x41 + 10
        case 0x61...0x66: return b - 0x61 + 10
        default: return nil
        }
    }
}

/// Request-body bytes read and dropped after the response ended (a refusal, an early answer)
/// before the peer is stopped: HTTP/2 resets the stream (`RST_STREAM(NO_ERROR)`), HTTP/1.1
/// closes the connection.
let maxDiscardedRequestBody = 1 << 20

/// The transport side of one exchange, implemented by the HTTP/2 stream and the HTTP/1.1
/// connection. Every method must be called on ``eventLoop``.
protocol ResponseWriter: AnyObject {
    /// The loop that owns the connection.
    var eventLoop: any EventLoop { get }
    /// Whether HTTP/2 is used (for logs and tests).
    var isHTTP2: Bool { get }
    /// Starts the response. Call once.
    func writeHead(status: Int, headers: [(String, String)])
    /// Queues body bytes.
    func writeBody(_ bytes: ByteBuffer)
    /// Ends the response. A request body still arriving is read and discarded (bounded), unless
    /// `abortingRequest` is set: then the peer is told to stop sending (HTTP/2: RST_STREAM
    /// NO_ERROR after the response; HTTP/1.1: the connection closes). Ingestion aborts when it
    /// stops early (shutdown, fatal error) so the agent resends elsewhere.
    func end(abortingRequest: Bool)
    /// Response bytes queued but not yet handed to the socket.
    var pendingResponseBytes: Int { get }
    /// Tells the transport that `count` bytes of request body were processed, so the peer may
    /// send that many more (HTTP/2 WINDOW_UPDATE via `nghttp2_session_consume`; HTTP/1.1 resumes reading).
    func releaseRequestBytes(_ count: Int)
    /// An empty buffer for response body bytes; HTTP/2 hands out one a previous response on the
    /// connection finished with (no allocation per short response).
    func bodyBuffer(minimumCapacity: Int) -> ByteBuffer
}

/// The application side of one exchange. Called on the connection's event loop.
protocol RequestHandler: AnyObject {
    /// A chunk of request body. Bytes are valid only during the call. Release them with
    /// ``ResponseWriter/releaseRequestBytes(_:)`` when processed.
    func requestBody(_ bytes: UnsafeRawBufferPointer)
    /// The request body is complete.
    func requestEnd()
    /// The peer reset the stream or the connection closed: stop, release nothing more.
    func cancelled()
    /// The transport can take more response bytes (pending bytes fell below the low-water mark).
    func responseWritable()
    /// The server is shutting down: finish promptly (final acks, end streams).
    func drain()
}

extension ResponseWriter {
    /// Ends the response; the rest of a request body, if any, is discarded.
    func end() { end(abortingRequest: false) }

    func bodyBuffer(minimumCapacity: Int) -> ByteBuffer {
        ByteBufferAllocator().buffer(capacity: minimumCapacity)
    }
}

extension RequestHandler {
    func responseWritable() {}
    func drain() {}
}

/// Creates handlers for new requests; the router implements it.
protocol RequestHandlerFactory: AnyObject {
    /// Returns the handler for a request. It may write the whole response right away.
    func makeHandler(for head: RequestHead, writer: any ResponseWriter, connection: ConnectionContext) -> any RequestHandler
}

/// Per-connection services the handlers share (ingest batching, flush scheduling).
///
/// Event-loop confined; the fields read per request skip dynamic exclusivity checks (see
/// ``HTTP2Connection``).
final class ConnectionContext {
    let eventLoop: any EventLoop
    let ingest: IngestBatcher
    /// Handlers that want ``RequestHandler/drain()`` at shutdown.
    var drainables: [ObjectIdentifier: any RequestHandler] = [:]
    /// Set by the connection: flushes pending output (HTTP/2: mem_send).
    @exclusivity(unchecked) var flush: () -> Void = {}
    /// The connection came in over TLS: responses carry `strict-transport-security`.
    @exclusivity(unchecked) var secure = false
    /// The connection's ``IdleGuard`` bookkeeping (nil when idle timeouts are off).
    @exclusivity(unchecked) var activity: ConnectionActivity?

    /// HSTS for responses on TLS connections: browsers then refuse cleartext for a year.
    static let hsts = ("strict-transport-security", "max-age=31536000")

    init(eventLoop: any EventLoop, ingest: IngestBatcher) {
        self.eventLoop = eventLoop
        self.ingest = ingest
    }
}

extension Router {
    /// The state an HTTP/1.1 and an HTTP/2 connection both keep: its ingest batcher (with the
    /// per-connection body rate, ``HTTPServerConfiguration/maxBodyBytesPerSecond``), whether it
    /// came over TLS, and its ``IdleGuard`` bookkeeping.
    func makeConnectionContext(for context: ChannelHandlerContext, secure: Bool) -> ConnectionContext {
        let batcher = IngestBatcher(writer: engine.writer, eventLoop: context.eventLoop, counters: counters, statistics: statistics)
        let rate = configuration.maxBodyBytesPerSecond
        if rate > 0 { batcher.bodyLimiter = ByteRateLimiter(bytesPerSecond: rate) }
        let cc = ConnectionContext(eventLoop: context.eventLoop, ingest: batcher)
        batcher.context = cc
        cc.secure = secure
        cc.activity = try? context.pipeline.syncOperations.handler(type: IdleGuard.self).activity
        return cc
    }
}

/// `b` lowered if it is an ASCII capital letter (header names and tokens compare without case).
@inline(__always)
func asciiLowercased(_ b: UInt8) -> UInt8 { b >= 0x41 && b <= 0x5A ? b | 0x20 : b }
