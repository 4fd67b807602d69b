import CNGHTTP2
import DequeModule
#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOPosix
import NIOSSL

/// Settings every agent and viewer reads.
struct LoadPlan: Sendable {
    enum Format: String, Sendable { case ndjson, influx }
    var host: String
    var port: Int
    var tls: Bool
    var insecure: Bool
    var authority: String
    var agents: Int
    var connections: Int
    var samplesPerSecond: Double
    var metrics: [String]
    var labelValues: Int
    var format: Format
    var tickMilliseconds: Int
    var rampUpSeconds: Double
    var settleSeconds: Double
    var serverPrefix: String
    var maxPendingLines: Int
    var viewers: Int
    var viewerQuery: String
    /// Bytes a stream may have queued locally before its agent stops generating (backpressure).
    var maxQueuedBytes = 4 << 20
    /// `authorization` header for agents (an ingest secret) and viewers (a view secret), if any.
    var agentAuthorization: String? = nil
    var viewerAuthorization: String? = nil
}

@inline(__always) func monotonicMicros() -> UInt64 { UInt64(NIODeadline.now().uptimeNanoseconds / 1000) }
@inline(__always) func wallMillis() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

/// Everything of one event loop: its connections, agents, viewers and statistics.
final class LoopState {
    let loop: any EventLoop
    let plan: LoadPlan
    let sslContext: NIOSSLContext?
    var stats = LoadStats()
    var connections: [LoadConnection] = []
    var viewers: [Viewer] = []
    var generating = true
    var finishing = false
    /// Whether latencies are recorded (after the ramp-up; the report covers the steady state).
    var measuring: Bool
    /// Agents write in `phases` groups spread over the write period, as independent agents would,
    /// instead of all at once (a burst of 10,000 writes would queue behind itself on both sides).
    static let phases = 10
    private var phase = 0
    private var timer: RepeatedTask?

    init(loop: any EventLoop, plan: LoadPlan, sslContext: NIOSSLContext?) {
        self.loop = loop
        self.plan = plan
        self.sslContext = sslContext
        self.measuring = plan.rampUpSeconds + plan.settleSeconds == 0
    }

    func start() {
        for c in connections { c.connect() }
        for v in viewers { v.connect() }
        let bound = NIOLoopBound(self, eventLoop: loop)
        let step = TimeAmount.microseconds(Int64(max(1, plan.tickMilliseconds * 1000 / Self.phases)))
        timer = loop.scheduleRepeatedTask(initialDelay: step, delay: step) { _ in bound.value.tick() }
    }

    private var lastStepMicros: UInt64 = 0

    private func tick() {
        phase = (phase + 1) % Self.phases
        // How late this step fires after the previous one (the generator's own slip on busy cores:
        // agents then write late, and stamp their samples when they write).
        let now = monotonicMicros()
        if lastStepMicros != 0 && measuring && !connections.isEmpty {  // loops with agents only
            let step = UInt64(max(1, plan.tickMilliseconds * 1000 / Self.phases))
            let late = now - lastStepMicros > step ? now - lastStepMicros - step : 0
            _ = stats.timerSlip.record(late)
        }
        lastStepMicros = now
        guard generating else { return }
        for c in connections { c.generate(phase: phase, phases: Self.phases) }
    }

    /// Current counters (plus gauges computed now).
    func snapshot() -> LoadStats {
        var s = stats
        s.openConnections = connections.filter { $0.connection != nil }.count
        s.openStreams = connections.reduce(0) { $0 + $1.agents.filter { $0.stream != nil && $0.responded }.count }
        s.pendingLines = connections.reduce(0) { $0 + $1.agents.reduce(0) { $0 + $1.pendingLines } }
        s.viewersConnected = viewers.filter { $0.stream != nil }.count
        return s
    }

    /// Ends every request body (the server then sends its summary) and closes viewers.
    func finish() {
        finishing = true
        timer?.cancel()
        for c in connections { c.finish() }
        for v in viewers { v.close() }
    }

    func close() {
        for c in connections { c.close() }
        for v in viewers { v.close() }
    }

    /// Opens one HTTP/2 connection to the server (TLS when the plan says so) on this loop.
    /// The callbacks run on this loop.
    func connectH2(onActive: @escaping (H2ClientConnection) -> Void, onInactive: @escaping (_ cause: String) -> Void,
                   onConnect: @escaping @Sendable (any Channel) -> Void, onFailure: @escaping @Sendable () -> Void) {
        let plan = self.plan
        let ssl = sslContext
        let handlers = NIOLoopBound((onActive, onInactive), eventLoop: loop)
        ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let ssl {
                        try sync.addHandler(try NIOSSLClientHandler(context: ssl, serverHostname: plan.host.first?.isNumber == true ? nil : plan.host))
                    }
                    let (active, inactive) = handlers.value
                    try sync.addHandler(H2ClientHandler(onActive: active, onInactive: inactive))
                }
            }
            .connect(host: plan.host, port: plan.port)
            .whenComplete { result in
                switch result {
                case .success(let ch): onConnect(ch)
                case .failure: onFailure()
                }
            }
    }
}

/// One HTTP/2 connection carrying the streams of some agents; reconnects with backoff.
final class LoadConnection {
    unowned let state: LoopState
    var agents: [Agent] = []
    var connection: H2ClientConnection?
    private var channel: (any Channel)?
    private var backoffMs: Int64 = 100
    private var closing = false

    init(state: LoopState) { self.state = state }

    func connect() {
        guard !closing else { return }
        let bound = NIOLoopBound(self, eventLoop: state.loop)
        state.connectH2(onActive: { bound.value.active($0) }, onInactive: { bound.value.inactive(cause: $0) },
                        onConnect: { bound.value.channel = $0 }, onFailure: { bound.value.scheduleReconnect() })
    }

    private func active(_ c: H2ClientConnection) {
        connection = c
        backoffMs = 100
        for a in agents where a.started { a.open() }
    }

    private func inactive(cause: String) {
        connection = nil
        channel = nil
        if !closing && !state.finishing {
            state.stats.reconnects += 1
            state.stats.errorCauses["connection lost: " + cause, default: 0] += 1
            scheduleReconnect()
        }
    }

    private func scheduleReconnect() {
        guard !closing else { return }
        let delay = backoffMs
        backoffMs = min(5_000, backoffMs * 2)
        let bound = NIOLoopBound(self, eventLoop: state.loop)
        state.loop.scheduleTask(in: .milliseconds(delay)) { bound.value.connect() }
    }

    func generate(phase: Int, phases: Int) {
        if phase == 0, !warnedStreamLimit, let c = connection, !c.closed, c.maxConcurrentStreams > 0,
           agents.count > c.maxConcurrentStreams {
            // nghttp2 queues streams past the server's SETTINGS_MAX_CONCURRENT_STREAMS until others
            // end, and agent streams never end: those agents would wait the whole run.
            warnedStreamLimit = true
            state.stats.streamError("server allows \(c.maxConcurrentStreams) streams per connection; \(agents.count - c.maxConcurrentStreams) agents of a connection wait (use more --connections)")
            H2ClientConnection.stderrLine("metrics-loadgen: warning: \(agents.count) agents on one connection but the server allows \(c.maxConcurrentStreams) concurrent streams; raise --connections")
        }
        for a in agents where a.index % phases == phase { a.generate() }
    }

    private var warnedStreamLimit = false

    func finish() {
        for a in agents { a.finish() }
    }

    func close() {
        closing = true
        channel?.close(promise: nil)
    }
}

/// One simulated server: a long-lived `POST /api/metrics/stream` sending its samples, tracking
/// what was acknowledged, and resending what was not when its stream or connection is lost.
final class Agent: H2StreamDelegate {
    struct Chunk {
        var firstLine: Int
        var lines: Int
        var samples: Int
        var sentAt: UInt64
        var bytes: ByteBuffer
    }

    unowned let owner: LoadConnection
    let serverID: String
    let index: Int
    var started = false
    var stream: Int32?
    private var nextLine = 1
    private var pending = Deque<Chunk>()
    private(set) var pendingLines = 0
    private var lastAck = 0
    /// The stream's cumulative durable samples in the server's last ack (`"samples"`).
    private var lastDurableSamples = 0
    /// `error` lines received on this stream (the server details the first 100 per request).
    private var errorLines = 0
    /// Rejected lines (number, code) not yet covered by an ack: counted once an ack covers them,
    /// dropped on a reconnect (the lines are resent and judged again, so a line rejected before
    /// and after a reconnect counts once).
    private var unackedErrors: [(line: Int, code: String?)] = []
    private var credit = 0.0
    private var counter = 0
    private var partial: [UInt8] = []
    private var values: [Double]
    private var finished = false
    private var reopenDelayMs: Int64 = 100

    init(owner: LoadConnection, index: Int, serverID: String, metricCount: Int) {
        self.owner = owner
        self.index = index
        self.serverID = serverID
        // Deterministic, spread starting values (Knuth's multiplicative hash of agent and metric).
        values = (0..<metricCount).map { m in Double((UInt64(index * 31 + m) &* 2_654_435_761) % 6000) / 100 + 5 }
    }

    private var plan: LoadPlan { owner.state.plan }

    /// Starts (after its ramp-up delay): opens its stream if the connection is up.
    func begin() {
        started = true
        if owner.connection != nil { open() }
    }

    func open() {
        guard stream == nil, !finished, let c = owner.connection else { return }
        let path = plan.format == .influx ? "/api/metrics/stream?format=influx&precision=ms" : "/api/metrics/stream"
        let type = plan.format == .influx ? "text/plain; charset=utf-8" : "application/x-ndjson"
        guard let id = c.request(method: "POST", path: path, authority: plan.authority, scheme: plan.tls ? "https" : "http",
                                 headers: [("content-type", type), ("x-server-id", serverID)] + (plan.agentAuthorization.map { [("authorization", $0)] } ?? []),
                                 body: true, delegate: self) else {
            owner.state.stats.streamError("stream refused by the local session")
            return
        }
        stream = id
        responded = false
        partial.removeAll(keepingCapacity: true)
        // Resend what was never acknowledged, renumbered for the new request.
        lastAck = 0
        lastDurableSamples = 0
        errorLines = 0
        unackedErrors.removeAll()
        nextLine = 1
        var resent = 0
        for i in pending.indices {
            pending[i].firstLine = nextLine
            nextLine += pending[i].lines
            resent += pending[i].lines
            c.write(stream: id, pending[i].bytes)
        }
        if resent > 0 { owner.state.stats.linesResent += resent }
    }

    private var lastGenerated: UInt64 = 0
    private var lastWallMillis: Int64 = 0

    /// Writes the lines due since this agent's previous write (timestamps taken now, per agent).
    func generate() {
        guard started, !finished else { return }
        let nowMicros = monotonicMicros()
        let wallMillis = wallMillis()
        if lastGenerated == 0 { lastGenerated = nowMicros; lastWallMillis = wallMillis; return }
        let seconds = Double(nowMicros - lastGenerated) / 1_000_000
        lastGenerated = nowMicros
        let perLine = plan.format == .influx ? Double(plan.metrics.count) : 1
        credit += plan.samplesPerSecond * seconds / perLine
        var lines = Int(credit)
        guard lines > 0 else { return }
        credit -= Double(lines)
        guard let id = stream, let c = owner.connection else { return }  // reconnecting: samples are not generated meanwhile
        if pendingLines >= plan.maxPendingLines || c.pendingBytes(stream: id) >= plan.maxQueuedBytes {
            owner.state.stats.throttledTicks += 1  // the server pushes back (flow control) or acks lag
            return
        }
        lines = min(lines, plan.maxPendingLines - pendingLines)
        var buf = ByteBufferAllocator().buffer(capacity: lines * (plan.format == .influx ? 40 + 24 * plan.metrics.count : 110))
        var samples = 0
        // Stamped now, as an agent that samples when it writes: the last line `wallMillis`, each
        // earlier one 1 ms before the next, so one series' samples get distinct milliseconds
        // (the store keeps an identical (series, ts, value) once). More lines than milliseconds
        // since the previous write are spread over that time instead (up to 1,000 per second per
        // series stay distinct). Until 2026-12-06 every write spread its lines over the time since
        // the previous one, which dated a late write's samples back to when they were due: under
        // load the generator's own scheduling delay (its timers fire late when the cores are busy)
        // then appeared in the freshness figures as if it were the server's.
        let base = min(lastWallMillis, wallMillis), span = max(1, wallMillis - base)
        lastWallMillis = wallMillis
        let back = min(span, Int64(lines))  // how far before now the first line is stamped
        for k in 0..<lines {
            counter += 1
            let ts = wallMillis - back + Int64(k + 1) * back / Int64(lines)
            if plan.format == .influx {
                writeInfluxLine(&buf, ts)
                samples += plan.metrics.count
            } else {
                writeNDJSONLine(&buf, ts)
                samples += 1
            }
        }
        let chunk = Chunk(firstLine: nextLine, lines: lines, samples: samples, sentAt: nowMicros, bytes: buf)
        nextLine += lines
        pendingLines += lines
        pending.append(chunk)
        owner.state.stats.linesSent += lines
        owner.state.stats.samplesSent += samples
        owner.state.stats.bytesSent += buf.readableBytes
        c.write(stream: id, buf)
    }

    private func nextValue(_ m: Int) -> Double {
        // A bounded random walk per metric: values change every sample, stay in 0...100.
        var v = values[m] + Double((counter &* 7919 &+ m &* 104_729) % 501 - 250) / 100
        v = min(99.9, max(0.1, v))
        values[m] = v
        return (v * 100).rounded() / 100
    }

    private func labelValue() -> Int { plan.labelValues > 1 ? counter % plan.labelValues : -1 }

    private func writeNDJSONLine(_ buf: inout ByteBuffer, _ ts: Int64) {
        let m = counter % plan.metrics.count
        buf.writeString("{\"server_id\":\"")
        buf.writeString(serverID)
        buf.writeString("\",\"metric_name\":\"")
        buf.writeString(plan.metrics[m])
        buf.writeString("\",\"value\":")
        buf.writeString(String(nextValue(m)))
        buf.writeString(",\"ts\":")
        buf.writeString(String(ts))
        let lv = labelValue()
        if lv >= 0 { buf.writeString(",\"labels\":{\"core\":\"c\(lv)\"}") }
        buf.writeString("}\n")
    }

    private func writeInfluxLine(_ buf: inout ByteBuffer, _ ts: Int64) {
        buf.writeString("system,host=")
        buf.writeString(serverID)
        let lv = labelValue()
        if lv >= 0 { buf.writeString(",core=c\(lv)") }
        buf.writeString(" ")
        for m in plan.metrics.indices {
            if m > 0 { buf.writeString(",") }
            buf.writeString(plan.metrics[m])
            buf.writeString("=")
            buf.writeString(String(nextValue(m)))
        }
        buf.writeString(" ")
        buf.writeString(String(ts))
        buf.writeString("\n")
    }

    /// Ends the request body; the server answers with its summary and closes the stream.
    func finish() {
        finished = true
        if let id = stream { owner.connection?.end(stream: id) }
    }

    // MARK: - Responses

    func responseStatus(_ status: Int) {
        responded = true
        if status != 200 { owner.state.stats.streamError("status \(status)") }
    }

    /// Whether the server answered the current stream (a stream past the server's concurrency
    /// limit is queued by nghttp2 and never started; it does not count as open).
    private(set) var responded = false

    func responseData(_ bytes: UnsafeRawBufferPointer) {
        var start = 0
        for i in 0..<bytes.count where bytes[i] == 0x0A {
            if partial.isEmpty {
                handleLine(UnsafeRawBufferPointer(rebasing: bytes[start..<i]))
            } else {
                partial.append(contentsOf: bytes[start..<i])
                partial.withUnsafeBytes { handleLine($0) }
                partial.removeAll(keepingCapacity: true)
            }
            start = i + 1
        }
        if start < bytes.count { partial.append(contentsOf: bytes[start...]) }
    }

    /// `{"ack":L,"samples":S}`, `{"error":{"line":L,"code":"…",…}}` or `{"summary":…}`.
    ///
    /// An ack covers lines that are durable *or* rejected: the samples acknowledged are the
    /// server's count of durable ones (`samples`, cumulative per request), and the samples of the
    /// covered lines beyond it were rejected (a bad line, a refused new series). Rejected lines
    /// are counted from the `error` lines and, past the 100 the server details per request, from
    /// the summary's `rejected`.
    private func handleLine(_ line: UnsafeRawBufferPointer) {
        if let l = Self.integer(after: Self.ackKey, in: line) {
            acknowledge(through: l, durableSamples: Self.integer(after: Self.samplesKey, in: line))
        } else if Self.find(Self.errorKey, in: line) != nil {
            errorLines += 1
            let code = Self.string(after: Self.codeKey, in: line)
            if let n = Self.integer(after: Self.lineKey, in: line), n > lastAck {
                unackedErrors.append((n, code))
            } else {
                countRejected(code)
            }
        } else if Self.find(Self.summaryKey, in: line) != nil {
            // The request ended: its last lines are acknowledged by the summary, not an ack line.
            if let l = Self.integer(after: Self.ackedLinesKey, in: line) {
                acknowledge(through: l, durableSamples: Self.integer(after: Self.ackedSamplesKey, in: line))
            }
            if let r = Self.integer(after: Self.rejectedKey, in: line), r > errorLines {
                owner.state.stats.linesRejected += r - errorLines
                errorLines = r
            }
        }
    }

    private func countRejected(_ code: String?) {
        owner.state.stats.linesRejected += 1
        if let code { owner.state.stats.rejectedByCode[code, default: 0] += 1 }
    }

    private func acknowledge(through l: Int, durableSamples: Int?) {
        guard l > lastAck else { return }
        lastAck = l
        if !unackedErrors.isEmpty {
            // Errors arrive in line order, before the ack that covers their lines.
            var covered = 0
            while covered < unackedErrors.count && unackedErrors[covered].line <= l {
                countRejected(unackedErrors[covered].code)
                covered += 1
            }
            unackedErrors.removeFirst(covered)
        }
        let coveredBefore = owner.state.stats.samplesCovered
        defer {
            // Durable samples as the server counts them; the rest of the covered ones were rejected.
            let covered = owner.state.stats.samplesCovered - coveredBefore
            let durable = durableSamples.map { max(0, $0 - lastDurableSamples) } ?? covered
            if let d = durableSamples { lastDurableSamples = max(lastDurableSamples, d) }
            owner.state.stats.samplesAcked += min(durable, covered)
            owner.state.stats.samplesRejected += max(0, covered - durable)
        }
        let now = monotonicMicros()
        while let first = pending.first, first.firstLine + first.lines - 1 <= l {
            pending.removeFirst()
            pendingLines -= first.lines
            owner.state.stats.linesAcked += first.lines
            owner.state.stats.samplesCovered += first.samples
            if owner.state.measuring { _ = owner.state.stats.ackLatency.record(now > first.sentAt ? now - first.sentAt : 0, count: UInt64(first.lines)) }
        }
        // A chunk acknowledged in part: drop its acknowledged lines so a resend skips them.
        if var first = pending.first, first.firstLine <= l {
            let done = l - first.firstLine + 1
            var skipped = 0, cut = 0
            first.bytes.withUnsafeReadableBytes { b in
                for i in 0..<b.count where b[i] == 0x0A {
                    skipped += 1
                    if skipped == done { cut = i + 1; break }
                }
            }
            let perLine = first.samples / max(1, first.lines)
            first.bytes.moveReaderIndex(forwardBy: cut)
            first.firstLine += done
            first.lines -= done
            first.samples -= done * perLine
            pending[pending.startIndex] = first
            pendingLines -= done
            owner.state.stats.linesAcked += done
            owner.state.stats.samplesCovered += done * perLine
            if owner.state.measuring { _ = owner.state.stats.ackLatency.record(now > first.sentAt ? now - first.sentAt : 0, count: UInt64(done)) }
        }
    }

    func streamClosed(error: UInt32) {
        stream = nil
        if finished || owner.state.finishing { return }
        if error != 0 { owner.state.stats.streamError("stream closed: " + String(cString: nghttp2_http2_strerror(error))) }
        // The server ended or reset the stream (restart, shutdown): open a new one and resend.
        let delay = reopenDelayMs
        reopenDelayMs = min(5_000, reopenDelayMs * 2)
        let bound = NIOLoopBound(self, eventLoop: owner.state.loop)
        owner.state.loop.scheduleTask(in: .milliseconds(delay)) {
            let me = bound.value
            me.reopenDelayMs = max(100, me.reopenDelayMs / 2)
            me.open()
        }
    }

    // MARK: - Tiny scanners for the server's own reply lines

    static let ackKey: [UInt8] = Array("\"ack\":".utf8)
    static let errorKey: [UInt8] = Array("\"error\":{".utf8)
    static let codeKey: [UInt8] = Array("\"code\":\"".utf8)
    static let lineKey: [UInt8] = Array("\"line\":".utf8)
    static let samplesKey: [UInt8] = Array("\"samples\":".utf8)
    static let summaryKey: [UInt8] = Array("{\"summary\":".utf8)
    static let ackedLinesKey: [UInt8] = Array("\"acked_lines\":".utf8)
    static let ackedSamplesKey: [UInt8] = Array("\"acked_samples\":".utf8)
    static let rejectedKey: [UInt8] = Array("\"rejected\":".utf8)

    /// The offset just past the first `key` in `line`. Candidates are found with `memchr` on the
    /// key's byte at `anchor`: pass the position of a byte that is rare in the text searched (in
    /// JSON the first byte is often `"`, which would stop the search every few bytes).
    static func find(_ key: [UInt8], in line: UnsafeRawBufferPointer, anchor: Int = 0) -> Int? {
        guard line.count >= key.count, let base = line.baseAddress else { return nil }
        return key.withUnsafeBytes { k -> Int? in
            let byte = Int32(key[anchor])
            var offset = anchor
            let last = line.count - key.count + anchor  // the last place the anchor byte can be
            while offset <= last {
                guard let hit = memchr(base + offset, byte, last - offset + 1) else { return nil }
                let at = base.distance(to: UnsafeRawPointer(hit)) - anchor
                if memcmp(base + at, k.baseAddress!, key.count) == 0 { return at + key.count }
                offset = at + anchor + 1
            }
            return nil
        }
    }

    static func integer(after key: [UInt8], in line: UnsafeRawBufferPointer) -> Int? {
        guard var i = find(key, in: line) else { return nil }
        var n = 0, digits = 0
        while i < line.count, line[i] >= 48, line[i] <= 57 { n = n * 10 + Int(line[i] - 48); i += 1; digits += 1 }
        return digits > 0 ? n : nil
    }

    static func string(after key: [UInt8], in line: UnsafeRawBufferPointer) -> String? {
        guard let s = find(key, in: line) else { return nil }
        var e = s
        while e < line.count, line[e] != UInt8(ascii: "\"") { e += 1 }
        return String(decoding: UnsafeRawBufferPointer(rebasing: line[s..<e]), as: UTF8.self)
    }
}

/// A dashboard client: one SSE subscription over HTTP/2, measuring bytes per update, the lag from
/// the server's tick to receipt, and the freshness of every row it receives (sample timestamp →
/// seen).
final class Viewer: H2StreamDelegate {
    unowned let state: LoopState
    let index: Int
    var stream: Int32?
    private var connection: H2ClientConnection?
    private var channel: (any Channel)?
    private var buffer: [UInt8] = []
    /// Bytes of `buffer` already searched for an event's end (less one: an end may straddle chunks).
    private var scanned = 0
    private var closing = false

    init(state: LoopState, index: Int) {
        self.state = state
        self.index = index
    }

    func connect() {
        guard !closing else { return }
        let bound = NIOLoopBound(self, eventLoop: state.loop)
        state.connectH2(onActive: { bound.value.active($0) }, onInactive: { _ in bound.value.inactive() },
                        onConnect: { bound.value.channel = $0 }, onFailure: { bound.value.retry() })
    }

    private func active(_ c: H2ClientConnection) {
        connection = c
        let plan = state.plan
        stream = c.request(method: "GET", path: "/api/dashboard/stream?" + plan.viewerQuery, authority: plan.authority,
                           scheme: plan.tls ? "https" : "http", headers: [("accept", "text/event-stream")] + (plan.viewerAuthorization.map { [("authorization", $0)] } ?? []),
                           body: false, delegate: self)
        if stream == nil {
            // The session refused the request (it is closing): reconnect rather than sit on a
            // connection without a stream.
            state.stats.streamError("viewer stream refused by the local session")
            closeChannelSoon()
        }
    }

    /// Closes the channel (to reconnect through `inactive()`) once the current nghttp2 call has
    /// returned: this is called from nghttp2's callbacks.
    private func closeChannelSoon() {
        let bound = NIOLoopBound(self, eventLoop: state.loop)
        state.loop.execute { bound.value.channel?.close(promise: nil) }
    }

    private func inactive() {
        connection = nil
        stream = nil
        buffer = []  // an unfinished event of the old stream must not prefix the new one
        scanned = 0
        retry()
    }

    private func retry() {
        guard !closing, !state.finishing else { return }
        let bound = NIOLoopBound(self, eventLoop: state.loop)
        state.loop.scheduleTask(in: .milliseconds(500)) { bound.value.connect() }
    }

    func close() {
        closing = true
        channel?.close(promise: nil)
    }

    func responseStatus(_ status: Int) {}

    func responseData(_ bytes: UnsafeRawBufferPointer) {
        // The receipt time of the bytes that complete an event, taken before any scanning: with
        // hundreds of viewers on one event loop, time spent on earlier events is not the server's.
        let now = wallMillis()
        // Events end with a blank line. Complete events in `bytes` are handled in place; only an
        // unfinished tail is kept, and a kept tail is never scanned twice (`scanned`).
        guard !buffer.isEmpty else {
            let used = handleEvents(in: bytes, from: 0, now: now)
            if used < bytes.count { buffer.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[used...])) }
            scanned = max(0, buffer.count - 1)
            return
        }
        buffer.append(contentsOf: bytes)
        let used = buffer.withUnsafeBytes { handleEvents(in: $0, from: scanned, now: now) }
        if used > 0 { buffer.removeFirst(used) }
        scanned = max(0, buffer.count - 1)
    }

    /// Handles the complete events in `bytes` (searching for their ends from `from`); returns
    /// how many bytes they took.
    private func handleEvents(in bytes: UnsafeRawBufferPointer, from: Int, now: Int64) -> Int {
        guard let base = bytes.baseAddress else { return 0 }
        var start = 0
        var i = from
        // An event's few lines end with `\n`; the event with an empty line.
        while i + 1 < bytes.count, let hit = memchr(base + i, 0x0A, bytes.count - i - 1) {
            let at = base.distance(to: UnsafeRawPointer(hit))
            guard bytes[at + 1] == 0x0A else { i = at + 1; continue }
            let end = at + 2
            handleEvent(UnsafeRawBufferPointer(rebasing: bytes[start..<end]), now: now)
            start = end
            i = end
        }
        return start
    }

    static let updateKey: [UInt8] = Array("event: update".utf8)
    static let initKey: [UInt8] = Array("event: init".utf8)
    static let timestampKey: [UInt8] = Array("\"timestamp\":".utf8)
    static let lastUpdateKey: [UInt8] = Array("\"lastUpdate\":".utf8)
    static let seqKey: [UInt8] = Array("\"seq\":".utf8)

    private func handleEvent(_ e: UnsafeRawBufferPointer, now: Int64) {
        state.stats.sseEvents += 1
        state.stats.sseBytes += e.count
        // The event's type is in its first lines (`id:`, `event:`), before the data.
        let head = UnsafeRawBufferPointer(rebasing: e[..<min(e.count, 96)])
        if Agent.find(Self.initKey, in: head) != nil { state.stats.sseInits += 1; return }
        guard Agent.find(Self.updateKey, in: head) != nil else { return }  // heartbeat comment
        guard state.measuring else { return }  // bytes and latencies of the steady state only (after ramp-up)
        state.stats.sseUpdates += 1
        state.stats.sseUpdateBytes += e.count
        state.stats.sseMaxUpdateBytes = max(state.stats.sseMaxUpdateBytes, e.count)
        let tick = Agent.integer(after: Self.timestampKey, in: e)
        if let tick { _ = state.stats.updateLag.record(UInt64(max(0, now - Int64(tick))) * 1000) }
        // The update's own `seq` comes first; each row's `seq` (the tick of its last change)
        // follows its `lastUpdate`.
        let updateSeq = Agent.integer(after: Self.seqKey, in: e)
        // Freshness counts the rows that changed in this update's tick: the first delivery of
        // their newest sample. Rows sent again unchanged (a query's top rows are sent whole every
        // tick) or entering the selection without a new sample are not a new sample seen late;
        // their age is the series' reporting interval, not the pipeline's latency. They are
        // counted apart (`rowsResent`).
        var rest = e
        while let at = Agent.find(Self.lastUpdateKey, in: rest, anchor: 5) {  // `U`
            var n: Int64 = 0, j = at
            while j < rest.count, rest[j] >= 48, rest[j] <= 57 { n = n * 10 + Int64(rest[j] - 48); j += 1 }
            rest = UnsafeRawBufferPointer(rebasing: rest[j...])
            guard j > at else { continue }
            let rowSeq = Agent.integer(after: Self.seqKey, in: rest)
            if updateSeq == nil || rowSeq == updateSeq {
                _ = state.stats.freshness.record(UInt64(max(0, now - n)) * 1000)
                if let tick { _ = state.stats.ageAtTick.record(UInt64(max(0, Int64(tick) - n)) * 1000) }
            } else {
                state.stats.rowsResent += 1
            }
        }
    }

    func streamClosed(error: UInt32) {
        stream = nil
        if !closing && !state.finishing { closeChannelSoon() }  // reconnect through inactive()
    }
}
