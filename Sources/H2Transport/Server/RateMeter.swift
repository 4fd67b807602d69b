import MetricsCore
import Synchronization

/// Per-second ingest rates, sampled once a second by the server (last 1 s and last 10 s).
final class RateMeter: Sendable {
    struct Point { var t: UInt64; var samples: Int; var bytes: Int; var rejected: Int; var requests: Int }
    private let points = Mutex<[Point]>([])

    func sample(samples: Int, bytes: Int, rejected: Int, requests: Int) {
        let p = Point(t: ProcessInfoLite.monotonicNanoseconds(), samples: samples, bytes: bytes, rejected: rejected, requests: requests)
        points.withLock { ps in
            ps.append(p)
            if ps.count > 11 { ps.removeFirst(ps.count - 11) }
        }
    }

    /// Rates over the last `span` samples (1 or 10): samples/s, bytes/s, rejected lines/s, requests/s.
    func rates(span: Int) -> (samples: Double, bytes: Double, rejected: Double, requests: Double) {
        points.withLock { ps in
            guard ps.count >= 2 else { return (0, 0, 0, 0) }
            let a = ps[max(0, ps.count - 1 - span)], b = ps[ps.count - 1]
            let dt = Double(b.t - a.t) / 1e9
            guard dt > 0 else { return (0, 0, 0, 0) }
            return (Double(b.samples - a.samples) / dt, Double(b.bytes - a.bytes) / dt,
                    Double(b.rejected - a.rejected) / dt, Double(b.requests - a.requests) / dt)
        }
    }
}
