import MetricsCore
import NIOCore

/// A complete response known up front.
struct HTTPResponse: Sendable {
    var status: Int
    var headers: [(String, String)]
    var body: ByteBuffer

    init(status: Int, contentType: String? = nil, body: ByteBuffer = ByteBuffer(), headers: [(String, String)] = []) {
        self.status = status
        var h = headers
        if let contentType { h.append(("content-type", contentType)) }
        self.headers = h
        self.body = body
    }

    static func json(_ status: Int, _ bytes: [UInt8]) -> HTTPResponse {
        var b = ByteBufferAllocator().buffer(capacity: bytes.count)
        b.writeBytes(bytes)
        return HTTPResponse(status: status, contentType: "application/json", body: b, headers: [("cache-control", "no-store")])
    }

    static func text(_ status: Int, _ s: String, contentType: String = "text/plain; charset=utf-8") -> HTTPResponse {
        HTTPResponse(status: status, contentType: contentType, body: ByteBuffer(string: s))
    }

    /// A JSON error body `{"error":"…"}`.
    static func error(_ status: Int, _ message: String) -> HTTPResponse {
        var w = JSONWriter()
        w.raw("{\"error\":")
        w.string(message)
        w.raw("}\n")
        return json(status, w.bytes)
    }

    func write(to writer: any ResponseWriter, headOnly: Bool = false) {
        var h = headers
        if status != 204 && status != 304 { h.append(("content-length", String(body.readableBytes))) }
        writer.writeHead(status: status, headers: h)
        if !headOnly && body.readableBytes > 0 { writer.writeBody(body) }
        writer.end()
    }
}

/// Answers at once and ignores (but releases) any request body.
final class FixedResponseHandler: RequestHandler {
    private let writer: any ResponseWriter

    init(_ response: HTTPResponse, writer: any ResponseWriter, headOnly: Bool = false) {
        self.writer = writer
        response.write(to: writer, headOnly: headOnly)
    }

    func requestBody(_ bytes: UnsafeRawBufferPointer) { writer.releaseRequestBytes(bytes.count) }
    func requestEnd() {}
    func cancelled() {}
}

/// Computes the response off the event loop (store queries, stats that await actors), then
/// writes it on the loop. Used for the few non-hot routes; ingestion never goes through here.
final class AsyncResponseHandler: RequestHandler {
    private let writer: any ResponseWriter
    private var isCancelled = false

    init(writer: any ResponseWriter, headOnly: Bool = false, _ work: @escaping @Sendable () async -> HTTPResponse) {
        self.writer = writer
        let loop = writer.eventLoop
        let bound = NIOLoopBound(self, eventLoop: loop)
        Task {
            let response = await work()
            loop.execute {
                let me = bound.value
                guard !me.isCancelled else { return }
                response.write(to: me.writer, headOnly: headOnly)
                (me.writer as? any FlushingWriter)?.flushConnection()
            }
        }
    }

    func requestBody(_ bytes: UnsafeRawBufferPointer) { writer.releaseRequestBytes(bytes.count) }
    func requestEnd() {}
    func cancelled() { isCancelled = true }
}

/// Writers whose connection must be told to flush after a write made outside a read cycle.
protocol FlushingWriter {
    func flushConnection()
}
