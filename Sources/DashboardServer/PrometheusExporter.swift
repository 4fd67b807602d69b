import H2Transport
import Metrics
import MetricsCore
import Prometheus
import Synchronization

/// Renders `/metrics`: refreshes swift-metrics gauges and counters from the server's own state at
/// scrape time, then lets swift-prometheus write the exposition text.
final class PrometheusExporter: Sendable {
    private let registry: PrometheusCollectorRegistry
    private let engine: MetricsEngine
    private let state = Mutex<(last: [String: Int], server: HTTPServer?)>(([:], nil))
    /// Set once during wiring, before the server starts.
    var server: HTTPServer? {
        get { state.withLock { $0.server } }
        set { state.withLock { $0.server = newValue } }
    }

    init(registry: PrometheusCollectorRegistry, engine: MetricsEngine) {
        self.registry = registry
        self.engine = engine
    }

    func render() -> String {
        state.withLock { st in
            let w = engine.writer.statistics
            gauge("rtd_writer_buffered_samples", w.bufferedSamples)
            gauge("rtd_writer_buffer_capacity_samples", w.bufferCapacity)
            gauge("rtd_writer_parked_samples", w.parkedSamples)
            gauge("rtd_writer_flush_lag_seconds", w.lastFlushLagSeconds)
            gauge("rtd_sse_clients", engine.broadcaster.subscriberCount)
            gauge("rtd_series", engine.broadcaster.seriesCount)
            gauge("rtd_resident_memory_bytes", ProcessInfoLite.residentBytes())
            counter(&st.last, "rtd_samples_written_total", w.samplesWritten)
            counter(&st.last, "rtd_samples_refused_total", w.samplesRefused)
            counter(&st.last, "rtd_store_write_failures_total", w.writeFailures)
            counter(&st.last, "rtd_backpressure_events_total", w.backpressureEvents)
            counter(&st.last, "rtd_sse_refused_total", engine.broadcaster.refusedSubscriptions)
            counter(&st.last, "rtd_series_removed_total", engine.broadcaster.removedSeries)
            let (events, coalesced) = engine.broadcaster.counters
            counter(&st.last, "rtd_sse_events_total", events)
            counter(&st.last, "rtd_sse_coalesced_total", coalesced)
            if let server = st.server {
                let t = server.ingestTotals
                counter(&st.last, "rtd_ingest_samples_total", t.samples)
                counter(&st.last, "rtd_ingest_bytes_total", t.bytes)
                // Every reason, at 0 until it happens: an absent series breaks `increase()` and alerts.
                for code in ParseError.Code.allCases {
                    counter(&st.last, "rtd_ingest_rejected_lines_total", t.rejectionsByCode[code.rawValue] ?? 0, [("reason", code.rawValue)])
                }
                for (code, n) in t.rejectionsByCode where ParseError.Code(rawValue: code) == nil {
                    counter(&st.last, "rtd_ingest_rejected_lines_total", n, [("reason", code)])
                }
                gauge("rtd_http1_connections", server.statistics.http1Connections)
                gauge("rtd_http2_connections", server.statistics.http2Connections)
                counter(&st.last, "rtd_http_requests_total", server.statistics.requestCount)
                for (reason, n) in server.statistics.authRejections { counter(&st.last, "rtd_auth_rejected_requests_total", n, [("reason", reason)]) }
                counter(&st.last, "rtd_connections_refused_per_address_total", server.statistics.refusedConnectionCount)
                counter(&st.last, "rtd_connections_refused_at_limit_total", server.statistics.refusedAtLimitCount)
                gauge("rtd_connections_open", server.statistics.openConnections)
                gauge("rtd_connections_limit", server.connectionLimit)
                for (reason, n) in server.statistics.idleClosures { counter(&st.last, "rtd_connections_closed_idle_total", n, [("reason", reason)]) }
                counter(&st.last, "rtd_ingest_body_rate_throttled_total", t.bodyRateThrottled)
            }
            return registry.emitToString()
        }
    }

    private func gauge(_ name: String, _ value: some BinaryInteger) { Gauge(label: name).record(value) }
    private func gauge(_ name: String, _ value: Double) { Gauge(label: name).record(value) }

    /// Counters only go up: add what changed since the last scrape. A counter is created at its
    /// first scrape even at 0, so it is exported from the start rather than from its first event.
    private func counter(_ last: inout [String: Int], _ name: String, _ total: Int, _ dims: [(String, String)] = []) {
        let key = name + dims.map { "|\($0.0)=\($0.1)" }.joined()
        let previous = last[key]
        let delta = total - (previous ?? 0)
        last[key] = total
        if delta > 0 {
            Counter(label: name, dimensions: dims).increment(by: delta)
        } else if previous == nil {
            _ = Counter(label: name, dimensions: dims)
        }
    }
}
