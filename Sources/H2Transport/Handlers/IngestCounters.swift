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

    init(maxSeries: Int) {
        self.maxSeries = maxSeries
    }

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
