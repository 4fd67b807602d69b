import MetricsCore
import NIOCore

/// One ingestion request: NDJSON or Influx line protocol, streamed through the parser into the
/// connection's ``IngestBatcher``.
///
/// Two reply styles:
/// - ``Style/stream`` (`POST /api/metrics/stream`): a 200 head at once, then NDJSON reply lines
///   while the request is still open: `{"ack":L,"samples":S}` when every line up to `L` is durable
///   or rejected, `{"error":{"line":N,"code":"…","reason":"…"}}` per rejected line (the first
///   ``maxRejectionDetails``), and at the end one `{"summary":{…}}` line.
/// - ``Style/influx`` (`POST /write`): the Influx v1 contract, one reply when everything is
///   durable: 204, or 400 `{"error":"partial write: …"}` naming the rejected lines (the good ones
///   are kept, as InfluxDB does).
///
/// Flow control: bytes are released to the peer only when the batch writer has taken the samples
/// parsed from them, so a slow store slows the agent instead of growing memory.
final class IngestHandler: RequestHandler {
    enum Style { case stream, influx }
    /// Which parser, and how it is set up (the parsers themselves are large structs: built or
    /// taken here, not passed along by value).
    enum Parser {
        /// NDJSON; the parser comes from the connection's pool.
        case ndjson(defaultServerID: String?, limits: ParseLimits)
        case lineProtocol(precision: TimestampPrecision, defaultServerID: String?, limits: ParseLimits)
    }
    // Kept as two optionals so the parser is mutated in place (no copy of its carry buffer).
    private var ndjson: PooledNDJSONParser?
    private var lineProtocol: LineProtocolParser?
    /// For NDJSON: what the parser is set up with. The parser itself is taken from the
    /// connection's pool at the first body bytes and handed back once the body is parsed, so
    /// requests whose heads all arrive before their bodies (h2load and nghttp2 clients send every
    /// queued HEADERS frame before any DATA) share one warm parser instead of building one each.
    private var ndjsonSetup: (defaultServerID: String?, limits: ParseLimits)?

    static let maxRejectionDetails = 100

    private let writer: any ResponseWriter
    private let batcher: IngestBatcher
    private let style: Style
    private let counters: IngestCounters
    private let gzip: GzipBody?

    private var samplesParsed = 0
    private var rejected = 0
    private var heartbeats = 0
    private var skippedFields = 0
    private var rejectionDetails: [LineRejection] = []
    private var rejectionLinesSent = 0
    private var partsInFlight = 0
    private var ackedLines = 0
    private var ackedSamples = 0
    /// The last `{"ack":…}` line written (lines, samples).
    private var lastAckSent = (lines: 0, samples: 0)
    private var requestEnded = false
    private var finished = false
    private var draining = false
    private var failed: String? = nil

    init(head: RequestHead, writer: any ResponseWriter, context: ConnectionContext, style: Style,
         parser: Parser, counters: IngestCounters, gzip: GzipBody?) {
        self.writer = writer
        self.batcher = context.ingest
        self.style = style
        switch parser {
        case .ndjson(let id, let limits): ndjsonSetup = (id, limits)
        case .lineProtocol(let precision, let id, let limits):
            lineProtocol = LineProtocolParser(precision: precision, defaultServerID: id, limits: limits)
        }
        self.counters = counters
        self.gzip = gzip
        batcher.pendingOpenStreams += 1
    }

    private var headWritten = false

    /// The 200 head goes out with the first reply line rather than at once: a short request then
    /// gets head, body and end in one go (no deferred body to resume), and a long stream gets its
    /// head with its first ack, a few milliseconds in.
    private func ensureHead() {
        guard !headWritten else { return }
        headWritten = true
        writer.writeHead(status: 200, headers: Self.streamHeaders)
    }

    /// The stream reply's head fields, built once (an array literal here is a heap array per request).
    private static let streamHeaders: [(String, String)] = [("content-type", "application/x-ndjson"), ("cache-control", "no-store")]

    // MARK: RequestHandler

    func requestBody(_ bytes: UnsafeRawBufferPointer) {
        guard !finished else {
            writer.releaseRequestBytes(bytes.count)
            return
        }
        batcher.pendingBytes += bytes.count
        if let gzip {
            // Compressed bodies are buffered and parsed at the end, bounded per request
            // (`maxCompressed`) and across the server (`gzipBudget`, inflated bodies included until
            // their samples are durable). Their credit goes back as they arrive, at the body rate:
            // holding it until the end would stall any body larger than the stream window.
            if !holdGzip(bytes.count) {
                failOverGzipBudget()
            } else if !gzip.append(bytes) {
                fail(status: 413, message: "compressed body larger than \(gzip.maxCompressed) bytes")
            }
            releaseCredit(bytes.count)
            return
        }
        parse(bytes, releasing: bytes.count)
    }

    func requestEnd() {
        guard !finished else { return }
        requestEnded = true
        if let gzip {
            switch gzip.decompress() {
            case .success(let plain):
                // What is held changes from the compressed bytes (freed now) to the inflated ones.
                // (Inflating itself peaks outside the budget: at most one body per event loop at a
                // time, up to about twice the inflated bound.)
                gzip.discardCompressed()
                releaseGzip()
                guard holdGzip(plain.readableBytes) else {
                    failOverGzipBudget()
                    return
                }
                // In slices, so the batcher submits at most ~maxSamplesPerSubmission samples at a
                // time (one parse of a 64 MiB body was one submission of millions of samples: one
                // store batch far past its size).
                plain.withUnsafeReadableBytes { all in
                    var at = 0
                    while at < all.count {
                        let n = min(Self.inflatedSlice, all.count - at)
                        parse(UnsafeRawBufferPointer(rebasing: all[at..<(at + n)]), releasing: 0)
                        at += n
                    }
                }
            case .failure(let status, let message):
                fail(status: status, message: message)
                return
            }
        }
        let before = batcher.output.samples.count
        let now = ProcessInfoLite.nowMilliseconds()
        if let ndjson { ndjson.parser.finish(now: now, into: &batcher.output) }
        if lineProtocol != nil { lineProtocol!.finish(now: now, into: &batcher.output) }
        collect(samplesBefore: before, bytes: 0, force: true)
        // Parsing is over: the parser goes back to the connection now, not when the samples are
        // durable, so the next request of the same read batch gets it warm (name caches filled).
        // With 100 requests in flight per connection, recycling at completion left all but one
        // of them building a new parser and a String per name.
        recycleParser()
        maybeFinish()
    }

    func cancelled() {
        if !finished { batcher.pendingOpenStreams -= 1 }
        finished = true
        releaseGzip()
        recycleParser()
    }

    /// Hands the NDJSON parser back to the connection once this request needs it no more.
    private func recycleParser() {
        if let p = ndjson.take() {
            finalLineCount = p.parser.lineCount
            batcher.recycle(p)
        }
    }

    /// The line count after the parser went back to the pool.
    private var finalLineCount = 0

    func drain() {
        guard !finished else { return }
        draining = true
        // Everything received so far is already recorded; finish once it is durable.
        maybeFinish()
    }

    // MARK: Parsing

    private var lineCount: Int {
        ndjson?.parser.lineCount ?? lineProtocol?.lineCount ?? finalLineCount
    }

    private func parse(_ bytes: UnsafeRawBufferPointer, releasing: Int) {
        if ndjson == nil, let setup = ndjsonSetup {
            ndjson = batcher.takeParser(defaultServerID: setup.defaultServerID, limits: setup.limits)
            ndjsonSetup = nil
        }
        let before = batcher.output.samples.count
        let now = ProcessInfoLite.nowMilliseconds()
        if let ndjson { ndjson.parser.parse(bytes, now: now, into: &batcher.output) }
        if lineProtocol != nil { lineProtocol!.parse(bytes, now: now, into: &batcher.output) }
        collect(samplesBefore: before, bytes: releasing, force: false)
    }

    /// Moves this handler's rejections out of the shared output and records its part of the batch.
    private func collect(samplesBefore: Int, bytes: Int, force: Bool) {
        let out = batcher.output
        let added = out.samples.count - samplesBefore
        samplesParsed += added
        heartbeats += out.heartbeats
        skippedFields += out.skippedFields
        batcher.output.heartbeats = 0
        batcher.output.skippedFields = 0
        if !out.rejections.isEmpty {
            report(out.rejections)
            batcher.output.rejections.removeAll(keepingCapacity: true)
        }
        batcher.pendingSamples += added
        if added > 0 || bytes > 0 {
            partsInFlight += 1
            batcher.record(handler: self, samples: added, bytes: bytes, lastLine: lineCount)
        } else if force {
            // End of body with nothing new to write (the usual case: the body ended with '\n').
            // The last lines need no durability of their own; they are acknowledged together with
            // the parts still in flight, or at once when there are none. Saves a writer part and an
            // extra ack line per short request.
            finalLine = lineCount
            if partsInFlight == 0 { ackedLines = max(ackedLines, finalLine) }
        }
    }

    /// Line count at the end of the body, acknowledged once every part in flight is durable.
    private var finalLine = 0

    // MARK: Writer callbacks (event loop)

    func accepted(_ part: IngestBatcher.Part) {
        guard part.bytes > 0 else { return }
        releaseCredit(part.bytes)
    }

    /// Hands `bytes` of flow-control credit back to the client; over the connection's body rate,
    /// later, so the client slows to the rate (nothing is refused or dropped).
    private func releaseCredit(_ bytes: Int) {
        if let limiter = batcher.bodyLimiter, let wait = limiter.delay(for: bytes) {
            counters.bodyThrottled.add(1, ordering: .relaxed)
            let writer = self.writer
            writer.eventLoop.assumeIsolated().scheduleTask(in: wait) { writer.releaseRequestBytes(bytes) }
            return
        }
        writer.releaseRequestBytes(bytes)
    }

    /// Slice of an inflated body parsed at a time.
    static let inflatedSlice = 64 << 10
    /// Bytes of this request's gzip body counted in the server's gzip budget.
    private var gzipHeld = 0

    private func holdGzip(_ n: Int) -> Bool {
        guard counters.reserveGzip(n, own: gzipHeld) else { return false }
        gzipHeld += n
        return true
    }

    private func failOverGzipBudget() {
        fail(status: 503, message: "gzip request bodies held in memory are at the server's bound (\(counters.gzipBudget) bytes); retry later")
    }

    private func releaseGzip() {
        guard gzipHeld > 0 else { return }
        counters.releaseGzip(gzipHeld)
        gzipHeld = 0
    }

    /// `refused`: samples of this part the writer refused at the series cap (in line order);
    /// they are reported as rejected lines, the rest of the part is durable.
    func durable(_ part: IngestBatcher.Part, outcome: BatchWriter.Outcome, refused: [RefusedSample] = []) {
        partsInFlight -= 1
        guard !finished else { return }
        if outcome == .closed {
            failed = "server shutting down; samples after line \(ackedLines) were not accepted"
        } else {
            if !refused.isEmpty { reportRefused(refused) }
            ackedLines = max(ackedLines, part.lastLine)
            if partsInFlight == 0 { ackedLines = max(ackedLines, finalLine) }
            ackedSamples += part.samples - refused.count
            // Only when it acknowledges something new: a part can carry bytes without a complete
            // line (a chunk cut mid-line), and repeating the previous ack is noise.
            if style == .stream && !(requestEnded && partsInFlight == 0)
                && (ackedLines > lastAckSent.lines || ackedSamples > lastAckSent.samples) {
                lastAckSent = (ackedLines, ackedSamples)
                writeLine("{\"ack\":\(ackedLines),\"samples\":\(ackedSamples)}\n")
            }
        }
        maybeFinish()
    }

    /// Counts rejected lines, keeps the first ``maxRejectionDetails`` for the reply, and streams
    /// them as error lines (stream style).
    private func report(_ rejections: [LineRejection]) {
        rejected += rejections.count
        counters.addRejections(rejections)
        for r in rejections {
            if rejectionDetails.count < Self.maxRejectionDetails { rejectionDetails.append(r) }
            if style == .stream && rejectionLinesSent < Self.maxRejectionDetails {
                rejectionLinesSent += 1
                writeLine(Self.rejectionLine(r))
            }
        }
    }

    /// Reports samples refused at the series cap as rejected lines (one per line, however many
    /// of its fields were refused), like parse rejections.
    private func reportRefused(_ refused: [RefusedSample]) {
        // The summary's `samples` are those accepted: a refused sample is a rejection, as a
        // sample of a line that failed to parse is (never counted there).
        samplesParsed -= refused.count
        var rejections: [LineRejection] = []
        var i = 0
        while i < refused.count {
            let first = refused[i]
            var n = 1
            while i + n < refused.count && refused[i + n].line == first.line { n += 1 }
            rejections.append(LineRejection(line: first.line, error: .tooManySeries(first.sample, moreFields: n - 1, maxSeries: counters.maxSeries)))
            i += n
        }
        report(rejections)
    }

    private func maybeFinish() {
        guard !finished, partsInFlight == 0, requestEnded || draining || failed != nil else { return }
        finished = true
        releaseGzip()  // its samples are durable (or the request failed)
        batcher.pendingOpenStreams -= 1
        defer { recycleParser() }
        switch style {
        case .stream:
            ensureHead()
            // Laid out on the stack and written to the buffer once: this runs once per request
            // (tiny POSTs), and each ByteBuffer write pays a uniqueness and exclusivity check.
            var b = writer.bodyBuffer(minimumCapacity: 192)
            withUnsafeTemporaryAllocation(byteCount: 256, alignment: 1) { raw in
                var t = StackText(raw)
                t.append("{\"summary\":{\"lines\":")
                t.append(lineCount)
                t.append(",\"samples\":")
                t.append(samplesParsed)
                t.append(",\"acked_lines\":")
                t.append(ackedLines)
                t.append(",\"acked_samples\":")
                t.append(ackedSamples)
                t.append(",\"rejected\":")
                t.append(rejected)
                t.append(",\"heartbeats\":")
                t.append(heartbeats)
                if skippedFields > 0 {
                    t.append(",\"skipped_fields\":")
                    t.append(skippedFields)
                }
                b.writeBytes(t.written)
            }
            var error: String? = failed
            if error == nil && draining && !requestEnded {
                error = "server shutting down: reconnect and resend lines after acked_lines"
            }
            if let error {
                var w = JSONWriter(capacity: 64 + error.utf8.count)
                w.string(error)
                b.writeStaticString(",\"error\":")
                b.writeBytes(w.bytes)
            }
            b.writeStaticString("}}\n")
            writer.writeBody(b)
            writer.end(abortingRequest: !requestEnded)
        case .influx:
            if draining && !requestEnded && failed == nil {
                // The body was cut short: the client must not take the batch as written.
                failed = "server shutting down before the request body was complete; retry the whole batch"
            }
            if let failed {
                respondInflux(status: 503, error: failed)
            } else if rejected == 0 {
                writer.writeHead(status: 204, headers: [])
                writer.end()
            } else {
                var msg = "partial write: \(rejected) of \(lineCount) lines rejected"
                for r in rejectionDetails.prefix(10) { msg += "; line \(r.line): \(r.error.code.rawValue): \(r.error.message)" }
                respondInflux(status: 400, error: msg)
            }
        }
    }

    private func fail(status: Int, message: String) {
        guard !finished else { return }
        if style == .influx && partsInFlight == 0 {
            finished = true
            releaseGzip()
            batcher.pendingOpenStreams -= 1
            respondInflux(status: status, error: message)
        } else {
            failed = message
            maybeFinish()
        }
    }

    private func respondInflux(status: Int, error: String) {
        var w = JSONWriter(capacity: 128 + error.utf8.count)
        w.raw("{\"error\":")
        w.string(error)
        w.raw("}\n")
        var buf = ByteBufferAllocator().buffer(capacity: w.bytes.count)
        buf.writeBytes(w.bytes)
        writer.writeHead(status: status, headers: [("content-type", "application/json"), ("content-length", String(buf.readableBytes)),
                                                   ("x-influxdb-error", Self.headerValue(error))])
        writer.writeBody(buf)
        writer.end(abortingRequest: !requestEnded)
    }

    /// An error message as a header value: printable ASCII only (a control character, which may
    /// come from the rejected line itself, made HTTP/2 peers reset the stream and HTTP/1.1 ones
    /// drop the reply, so Telegraf retried the batch forever), each other character as `?`, at
    /// most `limit` bytes, no spaces at either end (RFC 9113 §8.2.1). The JSON body has the full text.
    static func headerValue(_ message: String, limit: Int = 200) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(min(limit, message.utf8.count))
        for b in message.utf8 {
            if out.count >= limit { break }
            if b >= 0x20 && b < 0x7F {
                out.append(b)
            } else if b < 0x80 || b >= 0xC0 {
                out.append(UInt8(ascii: "?"))  // a control character, or the first byte of a multi-byte one
            }
        }
        while out.last == UInt8(ascii: " ") { out.removeLast() }
        let start = out.firstIndex { $0 != UInt8(ascii: " ") } ?? out.endIndex
        return String(decoding: out[start...], as: UTF8.self)
    }

    private func writeLine(_ s: String) {
        ensureHead()
        writer.writeBody(ByteBuffer(string: s))
    }

    private func writeLine(_ bytes: [UInt8]) {
        ensureHead()
        var buf = ByteBufferAllocator().buffer(capacity: bytes.count)
        buf.writeBytes(bytes)
        writer.writeBody(buf)
    }

    static func rejectionLine(_ r: LineRejection) -> [UInt8] {
        var w = JSONWriter(capacity: 96 + r.error.message.utf8.count)
        w.raw("{\"error\":{\"line\":\(r.line),\"code\":\"\(r.error.code.rawValue)\",\"reason\":")
        w.string(r.error.message)
        w.raw("}}\n")
        return w.bytes
    }
}

/// ASCII text appended into a caller's fixed buffer (the summary line: 7 fields of at most 20
/// digits and 107 bytes of names fit its 256 bytes).
struct StackText {
    private let base: UnsafeMutableRawBufferPointer
    private var count = 0

    init(_ base: UnsafeMutableRawBufferPointer) {
        self.base = base
    }

    var written: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: base[..<count]) }

    mutating func append(_ s: StaticString) {
        append(UnsafeRawBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }

    mutating func append(_ value: Int) {
        JSONWriter.withDecimalDigits(Int64(value)) { append($0) }
    }

    private mutating func append(_ bytes: UnsafeRawBufferPointer) {
        precondition(count + bytes.count <= base.count, "StackText overflow")
        UnsafeMutableRawBufferPointer(rebasing: base[count..<(count + bytes.count)]).copyMemory(from: bytes)
        count += bytes.count
    }
}
