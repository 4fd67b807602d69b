import MetricsCore
import Synchronization

/// Server-wide ingestion counters, updated from every event loop.
final class IngestCounters: Sendable {
    private let bytes = Atomic<Int>(0)
    private let samples = Atomic<Int>(0)
    private let rejectedTotal = Atomic<Int>(0)
    private let byCode = Mutex<[String: Int]>([:])
    private let open = Atomic<Int>(0)
    /// Body parts whose flow-control credit was delayed by the per-connection body rate.
    let bodyThrottled = Atomic<Int>(0)
    /// The live series cap, named in ``ParseError/Code/tooManySeries`` rejections.
    let maxSeries: Int
    /// Bytes of gzip request bodies held in memory across the server: compressed while they
    /// arrive, then inflated until their samples are durable.
    private let gzipHeld = Atomic<Int>(0)
    /// The bound on ``gzipBytesHeld`` (``HTTPServerConfiguration/maxGzipMemory``).
    let gzipBudget: Int

    init(maxSeries: Int, gzipBudget: Int = 256 << 20) {
        self.maxSeries = maxSeries
        self.gzipBudget = gzipBudget
    }

    /// Takes `n` more bytes of the gzip budget for a request that holds `own` bytes of it already;
    /// false when that would pass the budget, unless nothing but the request's own bytes is held
    /// (one body within the per-request bounds always fits, whatever the budget).
    func reserveGzip(_ n: Int, own: Int) -> Bool {
        var current = gzipHeld.load(ordering: .relaxed)
        while true {
            if current - own > 0 && current + n > gzipBudget { return false }
            let (done, seen) = gzipHeld.compareExchange(expected: current, desired: current + n, ordering: .relaxed)
            if done { return true }
            current = seen
        }
    }

    func releaseGzip(_ n: Int) { gzipHeld.wrappingAdd(-n, ordering: .relaxed) }
    /// Bytes of gzip bodies in memory now.
    var gzipBytesHeld: Int { gzipHeld.load(ordering: .relaxed) }

    func addOpenStreams(_ delta: Int) { open.wrappingAdd(delta, ordering: .relaxed) }
    /// Ingest requests in progress.
    var openStreams: Int { open.load(ordering: .relaxed) }

    func addBytes(_ n: Int) { bytes.wrappingAdd(n, ordering: .relaxed) }
    func addSamples(_ n: Int) { if n > 0 { samples.wrappingAdd(n, ordering: .relaxed) } }

    func addRejections(_ r: [LineRejection]) {
        rejectedTotal.wrappingAdd(r.count, ordering: .relaxed)
        byCode.withLock { d in for x in r { d[x.error.code.rawValue, default: 0] += 1 } }
    }

    var bytesReceived: Int { bytes.load(ordering: .relaxed) }
    var samplesParsed: Int { samples.load(ordering: .relaxed) }
    var linesRejected: Int { rejectedTotal.load(ordering: .relaxed) }
    var rejectionsByCode: [String: Int] { byCode.withLock { $0 } }
}
