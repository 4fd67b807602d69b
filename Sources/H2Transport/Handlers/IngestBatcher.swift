import MetricsCore
import NIOCore

/// Collects the samples parsed from every ingest stream of one connection during one read batch
/// and hands them to the ``BatchWriter`` as a single submission.
///
/// Thousands of tiny requests per second on one connection thus cost one writer submission and
/// one hop back to the event loop per read batch, not per request. Event-loop confined; the
/// fields touched per request skip dynamic exclusivity checks (see ``HTTP2Connection``).
final class IngestBatcher {
    /// The connection's request-body rate limit, if any.
    var bodyLimiter: ByteRateLimiter?
    struct Part {
        let handler: IngestHandler
        let samples: Int
        let bytes: Int
        let lastLine: Int
    }

    /// Samples are parsed straight into this output by the handlers.
    // Unchecked: handlers pass it `inout` to the parser for every chunk; it is event-loop confined
    // and never accessed reentrantly, so the dynamic exclusivity check is pure cost here.
    @exclusivity(unchecked) var output = ParseOutput()
    @exclusivity(unchecked) private var parts: [Part] = []
    private let writer: BatchWriter
    let eventLoop: any EventLoop
    /// The connection's context (for `flush`), cleared when the connection closes. Not `weak`, for
    /// the same reason as ``HTTP2Stream/connection``: handlers retain the context per request.
    @exclusivity(unchecked) var context: ConnectionContext?
    /// Submit early when a read batch grows this large (keeps submissions bounded).
    static let maxSamplesPerSubmission = 16_384

    /// One spare NDJSON parser per connection: short requests on a connection reuse it (warm
    /// name caches, no per-request parser allocation). At most one is kept, so the pool costs a
    /// connection at most one parser's caches (~12 KiB).
    @exclusivity(unchecked) private var spareParser: PooledNDJSONParser?

    func takeParser(defaultServerID: String?, limits: ParseLimits) -> PooledNDJSONParser {
        guard let p = spareParser.take() else {
            return PooledNDJSONParser(NDJSONParser(defaultServerID: defaultServerID, limits: limits))
        }
        p.parser.reset(defaultServerID: defaultServerID, limits: limits)
        return p
    }

    /// Keeps `parser` as the spare, unless there is one (a request hands its parser back as soon
    /// as its body is parsed, so on a connection of sequential or pipelined short requests one
    /// parser serves them all).
    func recycle(_ parser: PooledNDJSONParser) {
        if spareParser == nil { spareParser = parser }
    }

    private let counters: IngestCounters
    private let statistics: ServerStatistics

    // Per-connection tallies, published to the shared atomics once per read batch or completion:
    // several relaxed atomic adds per tiny request from both event loops made their cache line
    // bounce between the cores.
    @exclusivity(unchecked) var pendingBytes = 0
    @exclusivity(unchecked) var pendingSamples = 0
    @exclusivity(unchecked) var pendingOpenStreams = 0
    @exclusivity(unchecked) var pendingRequests = 0

    init(writer: BatchWriter, eventLoop: any EventLoop, counters: IngestCounters, statistics: ServerStatistics) {
        self.writer = writer
        self.eventLoop = eventLoop
        self.counters = counters
        self.statistics = statistics
    }

    /// Adds the tallies to the server-wide counters.
    func publishCounters() {
        if pendingBytes != 0 { counters.addBytes(pendingBytes); pendingBytes = 0 }
        if pendingSamples != 0 { counters.addSamples(pendingSamples); pendingSamples = 0 }
        if pendingOpenStreams != 0 { counters.addOpenStreams(pendingOpenStreams); pendingOpenStreams = 0 }
        if pendingRequests != 0 { statistics.requests.wrappingAdd(pendingRequests, ordering: .relaxed); pendingRequests = 0 }
    }

    /// Records what one handler just parsed into ``output``.
    func record(handler: IngestHandler, samples: Int, bytes: Int, lastLine: Int) {
        parts.append(Part(handler: handler, samples: samples, bytes: bytes, lastLine: lastLine))
        if output.samples.count >= Self.maxSamplesPerSubmission { submit() }
    }

    /// Submits everything recorded since the last call (called at the end of each read batch).
    func submit() {
        publishCounters()
        guard !parts.isEmpty else { return }
        var samples: [MetricSample] = []
        swap(&samples, &output.samples)
        output.samples.reserveCapacity(min(samples.count, Self.maxSamplesPerSubmission))
        // The line numbers stay here (the writer never needs them): they name the lines of
        // samples refused at the series cap, which is decided when the batch is folded.
        var lines = SampleLines()
        swap(&lines, &output.sampleLines)
        let parts = self.parts
        self.parts = []
        let loop = eventLoop
        let bound = NIOLoopBound((parts, self, samples, lines), eventLoop: loop)
        let acceptedNow = writer.submit(
            samples,
            onAccepted: {
                loop.execute {
                    for p in bound.value.0 { p.handler.accepted(p) }
                    bound.value.1.context?.flush()
                }
            },
            onDurable: { outcome in
                loop.execute {
                    let (parts, batcher, samples, lines) = bound.value
                    if case .durableExcept(let refused) = outcome {
                        Self.complete(parts, samples: samples, lines: lines, refused: refused)
                    } else {
                        for p in parts { p.handler.durable(p, outcome: outcome) }
                    }
                    batcher.publishCounters()
                    batcher.context?.flush()
                }
            })
        if acceptedNow {
            for p in parts { p.handler.accepted(p) }
        }
    }
}

extension IngestBatcher {
    /// Completes the parts of a submission of which the writer refused some samples at the series
    /// cap: each handler learns the lines (and series) of its own refused samples.
    static func complete(_ parts: [Part], samples: [MetricSample], lines: SampleLines, refused: [Int]) {
        var start = 0
        for (p, positions) in zip(parts, BatchWriter.split(refused, into: parts.map(\.samples))) {
            let own = positions.map { k in
                let i = start + k
                return RefusedSample(line: i < lines.count ? lines.line(of: i) : p.lastLine, sample: samples[i])
            }
            p.handler.durable(p, outcome: .durable, refused: own)
            start += p.samples
        }
    }
}

/// An NDJSON parser on the heap, so that taking it from the connection's pool and handing it
/// back moves a pointer, not the parser's several hundred bytes (two `memmove`s per request).
/// Event-loop confined, like its handler: no dynamic exclusivity checks.
final class PooledNDJSONParser {
    @exclusivity(unchecked) var parser: NDJSONParser

    init(_ parser: NDJSONParser) {
        self.parser = parser
    }
}

/// A sample the writer refused at the series cap, with the request line it came from.
struct RefusedSample {
    let line: Int
    let sample: MetricSample
}

/// A token bucket for one connection's request-body bytes (``HTTPServerConfiguration/maxBodyBytesPerSecond``),
/// confined to the connection's event loop. Bytes over the rate are not refused: their
/// flow-control credit (HTTP/2 window, HTTP/1.1 reads) is handed back later, so the client slows
/// down to the rate instead of the server buffering more.
final class ByteRateLimiter {
    private let rate: Double
    private let burst: Double
    private var tokens: Double
    private var last: UInt64

    /// `bytesPerSecond` sustained, with one second's worth as burst.
    init(bytesPerSecond: Int) {
        rate = Double(bytesPerSecond)
        burst = Double(bytesPerSecond)
        tokens = burst
        last = ProcessInfoLite.monotonicNanoseconds()
    }

    /// Takes `bytes`; returns how long their release must wait (nil: release now).
    func delay(for bytes: Int) -> TimeAmount? {
        let now = ProcessInfoLite.monotonicNanoseconds()
        tokens = min(burst, tokens + Double(now &- last) / 1e9 * rate)
        last = now
        tokens -= Double(bytes)
        guard tokens < 0 else { return nil }
        return .nanoseconds(Int64(-tokens / rate * 1e9))
    }
}
