import MetricsCore
import NIOCore
import Synchronization

/// Maps requests to handlers. Hand-written: a dozen fixed routes need a `switch`, not a framework.
///
/// | method | path | handler |
/// |---|---|---|
/// | POST | /api/metrics/stream, /api/metrics | ``IngestHandler`` NDJSON (or line protocol with `format=influx`), streamed acks |
/// | POST | /write, /api/v2/write | ``IngestHandler`` Influx line protocol, Influx reply |
/// | GET, POST | /query | Influx v1 compatibility (`CREATE DATABASE` succeeds) |
/// | GET, HEAD | /ping | Influx compatibility, 204 |
/// | GET | /api/dashboard/stream | ``SSEHandler`` |
/// | GET | /api/history | store history |
/// | GET | /api/catalog | metrics known now, with series and server counts |
/// | GET | /api/stats, /health, /metrics | server state |
/// | GET | /ready | 200 while the instance takes requests (load balancer checks) |
/// | GET | / and static files | the dashboard |
final class Router: Sendable {
    let engine: MetricsEngine
    let configuration: HTTPServerConfiguration
    let counters: IngestCounters
    let statistics = ServerStatistics()
    let rates = RateMeter()
    let staticFiles: StaticFiles
    let prometheusText: @Sendable () -> String
    let startedAt = ProcessInfoLite.nowMilliseconds()
    /// The peers this instance follows (`--peers`), for `/api/stats`.
    let peerFeeds = Mutex<[PeerFeed]>([])

    init(engine: MetricsEngine, configuration: HTTPServerConfiguration, prometheusText: @escaping @Sendable () -> String) {
        self.engine = engine
        self.configuration = configuration
        self.counters = IngestCounters(maxSeries: engine.aggregator.configuration.maxSeries, gzipBudget: configuration.maxGzipMemory)
        self.prometheusText = prometheusText
        self.staticFiles = StaticFiles.load()
    }

    func makeHandler(for head: RequestHead, writer: any ResponseWriter, connection: ConnectionContext) -> any RequestHandler {
        connection.ingest.pendingRequests += 1
        connection.activity?.requests += 1
        let method = head.method
        var allowedServers: ServerIDPolicy? = nil
        if configuration.access.isEnabled, let role = Self.role(of: head.path) {
            switch configuration.access.authorize(head, role: role) {
            case .allowed(let credential):
                allowedServers = credential?.servers
            case .missing:
                statistics.authMissing.add(1, ordering: .relaxed)
                return FixedResponseHandler(Self.unauthorized(role, "authentication required"), writer: writer)
            case .invalid:
                statistics.authInvalid.add(1, ordering: .relaxed)
                return FixedResponseHandler(Self.unauthorized(role, "invalid credentials"), writer: writer)
            case .forbidden:
                statistics.authForbidden.add(1, ordering: .relaxed)
                return FixedResponseHandler(.error(403, "this credential may not \(role == .ingest ? "write samples" : "read dashboards or the API")"), writer: writer)
            }
        }
        var limits = ParseLimits(maxLineLength: configuration.maxLineLength, allowedServers: allowedServers,
                                 maxFutureMilliseconds: configuration.maxTimestampFutureMilliseconds,
                                 maxAgeMilliseconds: configuration.maxTimestampAgeMilliseconds)
        limits.maxLabels = configuration.maxLabels
        limits.maxLabelValueLength = configuration.maxLabelValueLength
        switch head.path {
        case "/api/metrics/stream", "/api/metrics":
            guard method == "POST" else { return methodNotAllowed(writer, "POST") }
            let influx = head.queryValue("format") == "influx" || head.header("content-type").map { RequestHead.asciiContains($0, "influx") } == true
            let parser: IngestHandler.Parser = influx
                ? .lineProtocol(precision: TimestampPrecision(query: head.queryValue("precision") ?? "ms") ?? .milliseconds,
                                defaultServerID: defaultServerID(head), limits: limits)
                : .ndjson(defaultServerID: defaultServerID(head), limits: limits)
            return ingest(head, writer, connection, style: .stream, parser: parser)
        case "/write", "/api/v2/write":
            guard method == "POST" else { return methodNotAllowed(writer, "POST") }
            let precisionText = head.queryValue("precision") ?? (head.path == "/write" ? "ns" : "ns")
            guard let precision = TimestampPrecision(query: precisionText) else {
                return FixedResponseHandler(.error(400, "unknown precision '\(precisionText)'"), writer: writer)
            }
            let parser = IngestHandler.Parser.lineProtocol(precision: precision, defaultServerID: defaultServerID(head), limits: limits)
            return ingest(head, writer, connection, style: .influx, parser: parser)
        case "/query":
            // Telegraf's influxdb output sends `CREATE DATABASE "telegraf"` at start; accept it.
            let body: [UInt8] = Array("{\"results\":[{\"statement_id\":0}]}\n".utf8)
            return FixedResponseHandler(.json(200, body), writer: writer)
        case "/ping":
            return FixedResponseHandler(HTTPResponse(status: 204, headers: [("x-influxdb-version", "1.8-compatible")]), writer: writer)
        case "/api/dashboard/stream":
            guard method == "GET" else { return methodNotAllowed(writer, "GET") }
            let statistics = self.statistics
            return SSEHandler(head: head, writer: writer, context: connection, broadcaster: engine.broadcaster,
                              stallTimeout: configuration.idleTimeoutSeconds > 0 ? .seconds(Int64(configuration.idleTimeoutSeconds)) : nil,
                              onStalled: { statistics.closedStalled.add(1, ordering: .relaxed) })
        case "/api/history":
            guard method == "GET" || method == "HEAD" else { return methodNotAllowed(writer, "GET") }
            return history(head, writer)
        case "/api/catalog":
            guard method == "GET" || method == "HEAD" else { return methodNotAllowed(writer, "GET") }
            return FixedResponseHandler(.json(200, catalogJSON()), writer: writer, headOnly: method == "HEAD")
        case "/api/stats":
            guard method == "GET" || method == "HEAD" else { return methodNotAllowed(writer, "GET") }
            return AsyncResponseHandler(writer: writer, headOnly: method == "HEAD") { [self] in .json(200, await statsJSON()) }
        case "/ready":
            // For load balancers: this instance takes requests. It stays ready while the store is
            // down or its buffer is full (it buffers, then pushes back on agents through flow
            // control; sending its agents elsewhere would only move their series), unlike
            // `/health`, which reports that as degraded. While draining, new connections are
            // closed at once, so checks fail and the balancer stops routing here.
            guard method == "GET" || method == "HEAD" else { return methodNotAllowed(writer, "GET") }
            return FixedResponseHandler(.json(200, Array("{\"status\":\"ready\"}\n".utf8)), writer: writer, headOnly: method == "HEAD")
        case "/health":
            guard method == "GET" || method == "HEAD" else { return methodNotAllowed(writer, "GET") }
            return AsyncResponseHandler(writer: writer, headOnly: method == "HEAD") { [self] in await health() }
        case "/metrics":
            guard method == "GET" || method == "HEAD" else { return methodNotAllowed(writer, "GET") }
            let text = prometheusText()
            return FixedResponseHandler(.text(200, text, contentType: "text/plain; version=0.0.4; charset=utf-8"), writer: writer,
                                        headOnly: method == "HEAD")
        default:
            if method == "GET" || method == "HEAD", let file = staticFiles.files[head.path] {
                // The page may not be framed by another site (clickjacking) and no type is sniffed.
                return FixedResponseHandler(HTTPResponse(status: 200, contentType: file.contentType, body: file.body,
                                                         headers: [("cache-control", "no-cache"), ("x-content-type-options", "nosniff"),
                                                                   ("x-frame-options", "DENY"),
                                                                   ("content-security-policy", "frame-ancestors 'none'")]),
                                            writer: writer, headOnly: method == "HEAD")
            }
            return FixedResponseHandler(.error(404, "no route for \(method) \(head.path)"), writer: writer)
        }
    }

    /// The role a path needs; `nil` for the open ones (checks and probes, no data).
    static func role(of path: String) -> AccessControl.Role? {
        switch path {
        case "/health", "/ready", "/ping": return nil
        case "/api/metrics/stream", "/api/metrics", "/write", "/api/v2/write", "/query": return .ingest
        default: return .view
        }
    }

    /// 401 with the challenge a client of that role understands: Basic for the dashboard (a
    /// browser then asks for a name and secret and sends them with the page's EventSource too),
    /// Bearer for agents.
    static func unauthorized(_ role: AccessControl.Role, _ message: String) -> HTTPResponse {
        var r = HTTPResponse.error(401, message)
        r.headers.append(("www-authenticate", role == .view ? "Basic realm=\"RealtimeDashboard\", charset=\"UTF-8\"" : "Bearer realm=\"RealtimeDashboard\""))
        return r
    }

    private func defaultServerID(_ head: RequestHead) -> String? {
        guard let id = head.header("x-server-id"), NameRules.isValidName(id) else { return nil }
        return id
    }

    private func methodNotAllowed(_ writer: any ResponseWriter, _ allowed: String) -> any RequestHandler {
        var r = HTTPResponse.error(405, "method not allowed; use \(allowed)")
        r.headers.append(("allow", allowed))
        return FixedResponseHandler(r, writer: writer)
    }

    private func ingest(_ head: RequestHead, _ writer: any ResponseWriter, _ connection: ConnectionContext,
                        style: IngestHandler.Style, parser: IngestHandler.Parser) -> any RequestHandler {
        var gzip: GzipBody? = nil
        if let encoding = head.header("content-encoding") {
            switch encoding.lowercased() {
            case "identity", "": break
            case "gzip", "x-gzip":
                gzip = GzipBody(maxCompressed: configuration.maxCompressedBody, maxDecompressed: configuration.maxDecompressedBody)
            case let other:
                return FixedResponseHandler(.error(415, "unsupported content-encoding '\(other)'; use gzip or identity"), writer: writer)
            }
        }
        if let id = head.header("x-server-id"), !NameRules.isValidName(id) {
            return FixedResponseHandler(.error(400, "invalid x-server-id header"), writer: writer)
        }
        return IngestHandler(head: head, writer: writer, context: connection, style: style, parser: parser,
                             counters: counters, gzip: gzip)
    }

    /// `{"metrics":[{"metric_name","series","servers"}],"stale_after_ms":…,"tick_ms":…}`, by name.
    private func catalogJSON() -> [UInt8] {
        let b = engine.broadcaster
        var w = JSONWriter(capacity: 256)
        w.raw("{\"metrics\":[")
        for (i, m) in b.catalog.enumerated() {
            if i > 0 { w.byte(UInt8(ascii: ",")) }
            w.raw("{\"metric_name\":"); w.string(m.metricName)
            w.raw(",\"series\":"); w.number(m.series)
            w.raw(",\"servers\":"); w.number(m.servers)
            w.byte(UInt8(ascii: "}"))
        }
        w.raw("],\"stale_after_ms\":\(b.configuration.staleMilliseconds),\"tick_ms\":\(b.configuration.tickMilliseconds)}\n")
        return w.bytes
    }

    private func history(_ head: RequestHead, _ writer: any ResponseWriter) -> any RequestHandler {
        let q = head.queryItems
        func value(_ n: String) -> String? { q.first { $0.0 == n }?.1 }
        guard let server = value("server_id"), NameRules.isValidName(server) else {
            return FixedResponseHandler(.error(400, "server_id is required and must be a valid server id"), writer: writer)
        }
        guard let metric = value("metric_name"), NameRules.isValidName(metric) else {
            return FixedResponseHandler(.error(400, "metric_name is required and must be a valid metric name"), writer: writer)
        }
        let now = ProcessInfoLite.nowMilliseconds()
        func time(_ n: String, _ def: Int64) -> Int64? {
            guard let v = value(n), !v.isEmpty else { return def }
            return Self.parseTime(v, now: now)
        }
        guard let from = time("from", now - 3_600_000), let to = time("to", now), from < to,
              MetricSample.validTimestamps.contains(from), MetricSample.validTimestamps.contains(to) else {
            return FixedResponseHandler(.error(400, "from/to must be epoch milliseconds (magnitude under 10^15) or relative like -1h, with from < to"), writer: writer)
        }
        let maxPoints = Int(value("max_points") ?? "") ?? 1_440
        guard (1...100_000).contains(maxPoints) else {
            return FixedResponseHandler(.error(400, "max_points must be in 1...100000"), writer: writer)
        }
        let labels = value("labels")
        let rawValue = value("raw") ?? "auto"
        guard let raw = HistoryQuery.RawPolicy(rawValue: rawValue == "true" ? "always" : rawValue == "false" ? "never" : rawValue) else {
            return FixedResponseHandler(.error(400, "raw must be auto, always (true) or never (false)"), writer: writer)
        }
        let query = HistoryQuery(serverID: server, metricName: metric, labels: labels, from: from, to: to,
                                 maxPoints: maxPoints, raw: raw)
        let engine = self.engine
        return AsyncResponseHandler(writer: writer) {
            do {
                let result = try await engine.history(query)
                var w = JSONWriter(capacity: 128 + (result.points.count + (result.raw?.count ?? 0)) * 120)
                w.raw("{\"server_id\":"); w.string(server)
                w.raw(",\"metric_name\":"); w.string(metric)
                if let labels { w.raw(",\"labels\":"); w.string(labels) }
                w.raw(",\"from\":\(from),\"to\":\(to),\"resolution_ms\":\(result.resolution)")
                if let rawPoints = result.raw {
                    w.raw(",\"kind\":\"raw\",\"points\":[")
                    for (i, p) in rawPoints.enumerated() {
                        if i > 0 { w.byte(UInt8(ascii: ",")) }
                        w.raw("{\"ts\":\(p.timestamp),\"value\":"); w.number(p.value)
                        if labels == nil && !p.labels.isEmpty { w.raw(",\"labels\":"); w.string(p.labels) }
                        w.byte(UInt8(ascii: "}"))
                    }
                    w.raw("]}\n")
                    return .json(200, w.bytes)
                }
                w.raw(",\"kind\":\"rollup\",\"points\":[")
                for (i, p) in result.points.enumerated() {
                    if i > 0 { w.byte(UInt8(ascii: ",")) }
                    w.raw("{\"ts\":\(p.timestamp),\"count\":\(p.count),\"avg\":"); w.number(p.avg)
                    w.raw(",\"min\":"); w.number(p.min)
                    w.raw(",\"max\":"); w.number(p.max)
                    w.raw(",\"p50\":"); w.number(p.p50)
                    w.raw(",\"p95\":"); w.number(p.p95)
                    w.raw(",\"p99\":"); w.number(p.p99)
                    w.byte(UInt8(ascii: "}"))
                }
                w.raw("]}\n")
                return .json(200, w.bytes)
            } catch {
                return .error(503, "store error: \(error)")
            }
        }
    }

    /// Epoch ms, or relative to now: `-15m`, `-1h`, `-2d`, `-30s`, `now`. `nil` when malformed
    /// or when a relative time overflows (`-9999999999999h`).
    static func parseTime(_ s: String, now: Int64) -> Int64? {
        if s == "now" { return now }
        if let n = Int64(s) { return n }
        guard s.hasPrefix("-"), let unit = s.last, let n = Int64(s.dropFirst().dropLast()), n >= 0 else { return nil }
        let scale: Int64
        switch unit {
        case "s": scale = 1000
        case "m": scale = 60_000
        case "h": scale = 3_600_000
        case "d": scale = 86_400_000
        default: return nil
        }
        let (span, over) = n.multipliedReportingOverflow(by: scale)
        guard !over else { return nil }
        let (t, under) = now.subtractingReportingOverflow(span)
        return under ? nil : t
    }

    func health() async -> HTTPResponse {
        let store = await engine.store.health()
        let w = engine.writer.statistics
        let fill = Double(w.bufferedSamples) / Double(max(1, w.bufferCapacity))
        let ok = store.healthy && fill < 0.95
        var j = JSONWriter(capacity: 256)
        j.raw("{\"status\":\(ok ? "\"ok\"" : "\"degraded\""),\"store\":{\"backend\":"); j.string(store.backend)
        j.raw(",\"healthy\":\(store.healthy),\"detail\":"); j.string(store.detail)
        j.raw("},\"buffer_fill\":"); j.number(fill)
        j.raw(",\"uptime_ms\":\(ProcessInfoLite.nowMilliseconds() - startedAt)}\n")
        return .json(ok ? 200 : 503, j.bytes)
    }

    func statsJSON() async -> [UInt8] {
        let w = engine.writer.statistics
        let store = await engine.store.health()
        let series = await engine.aggregator.seriesCount()
        let rejectedSeries = await engine.aggregator.rejectedNewSeries()
        let expiredSeries = await engine.aggregator.expiredSeries()
        let heldMinute = engine.aggregator.earliestHeldRollupMinute()
        let r1 = rates.rates(span: 1), r10 = rates.rates(span: 10)
        let (events, coalesced) = engine.broadcaster.counters
        let tick = engine.lastTick
        let remote = engine.broadcaster.remoteCounters
        var j = JSONWriter(capacity: 1024)
        j.raw("{\"uptime_ms\":\(ProcessInfoLite.nowMilliseconds() - startedAt)")
        j.raw(",\"ingest\":{\"samples_total\":\(counters.samplesParsed),\"bytes_total\":\(counters.bytesReceived)")
        j.raw(",\"rejected_lines_total\":\(counters.linesRejected),\"samples_per_s\":"); j.number(r1.samples.rounded())
        j.raw(",\"samples_per_s_10s\":"); j.number(r10.samples.rounded())
        j.raw(",\"bytes_per_s\":"); j.number(r1.bytes.rounded())
        j.raw(",\"requests_per_s\":"); j.number(r1.requests.rounded())
        j.raw(",\"rejections\":{")
        for (i, (k, v)) in counters.rejectionsByCode.sorted(by: { $0.key < $1.key }).enumerated() {
            if i > 0 { j.byte(UInt8(ascii: ",")) }
            j.string(k); j.raw(":\(v)")
        }
        j.raw("},\"open_streams\":\(counters.openStreams),\"gzip_bytes_held\":\(counters.gzipBytesHeld),\"body_rate_throttled_total\":\(counters.bodyThrottled.load(ordering: .relaxed))}")
        j.raw(",\"series\":{\"count\":\(series),\"rejected_new_series_samples\":\(rejectedSeries),\"max\":\(engine.aggregator.configuration.maxSeries)")
        j.raw(",\"expired_total\":\(expiredSeries),\"idle_timeout_ms\":\(engine.aggregator.configuration.idleSeriesTimeout)")
        j.raw(",\"rollups_held_from_minute\":\(heldMinute.map(String.init) ?? "null")}")
        j.raw(",\"sse\":{\"clients\":\(engine.broadcaster.subscriberCount),\"events_total\":\(events),\"coalesced_total\":\(coalesced),\"refused_total\":\(engine.broadcaster.refusedSubscriptions),\"seq\":\(engine.broadcaster.currentSequence),\"last_tick\":{\"collect_us\":\(tick.collectMicroseconds),\"publish_us\":\(tick.publishMicroseconds),\"events_ready_us\":\(tick.eventsReadyMicroseconds),\"last_event_taken_us\":\(tick.lastEventTakenMicroseconds.map(String.init) ?? "null"),\"changed_series\":\(tick.changedSeries),\"staged_series\":\(tick.stagedSeries)},\"peer_series\":\(remote.series),\"peer_rows_total\":\(remote.received)}")
        // Each followed peer: whether its stream is open, and what came from it since start.
        j.raw(",\"peers\":[")
        for (i, feed) in peerFeeds.withLock({ $0 }).enumerated() {
            let st = feed.status
            if i > 0 { j.byte(UInt8(ascii: ",")) }
            j.raw("{\"url\":"); j.string(feed.peer)
            j.raw(",\"connected\":\(st.connected),\"events_total\":\(st.events),\"rows_total\":\(st.rows)}")
        }
        j.raw("]")
        j.raw(",\"connections\":{\"http1\":\(statistics.http1Connections),\"http2\":\(statistics.http2Connections),\"requests_total\":\(statistics.requestCount),\"protocol_errors_total\":\(statistics.protocolErrorCount),\"refused_per_address_total\":\(statistics.refusedConnectionCount),\"open\":\(statistics.openConnections),\"limit\":\(configuration.maxConnections),\"refused_at_limit_total\":\(statistics.refusedAtLimitCount)")
        let idle = statistics.idleClosures
        j.raw(",\"closed_idle\":{\"no_request\":\(idle["no_request"] ?? 0),\"idle\":\(idle["idle"] ?? 0),\"stalled_reader\":\(idle["stalled_reader"] ?? 0)}}")
        let auth = statistics.authRejections
        j.raw(",\"auth\":{\"enabled\":\(configuration.access.isEnabled),\"rejected\":{\"missing\":\(auth["missing"] ?? 0),\"invalid\":\(auth["invalid"] ?? 0),\"forbidden\":\(auth["forbidden"] ?? 0)}}")
        j.raw(",\"writer\":{\"buffered_samples\":\(w.bufferedSamples),\"buffer_capacity\":\(w.bufferCapacity),\"buffer_fill\":")
        j.number(Double(w.bufferedSamples) / Double(max(1, w.bufferCapacity)))
        j.raw(",\"parked_samples\":\(w.parkedSamples),\"backpressure_events_total\":\(w.backpressureEvents)")
        j.raw(",\"samples_written_total\":\(w.samplesWritten),\"samples_refused_total\":\(w.samplesRefused),\"rollups_written_total\":\(w.rollupsWritten),\"batches_written_total\":\(w.batchesWritten)")
        j.raw(",\"write_failures_total\":\(w.writeFailures),\"last_write_s\":"); j.number(w.lastWriteSeconds)
        j.raw(",\"flush_lag_s\":"); j.number(w.lastFlushLagSeconds)
        j.raw(",\"max_flush_lag_s\":"); j.number(w.maxFlushLagSeconds)
        j.raw(",\"last_error\":"); j.string(w.lastError)
        j.raw("},\"store\":{\"backend\":"); j.string(store.backend)
        j.raw(",\"healthy\":\(store.healthy),\"detail\":"); j.string(store.detail)
        if let n = store.storedSamples { j.raw(",\"stored_samples\":\(n)") }
        if let n = store.storedRollups { j.raw(",\"stored_rollups\":\(n)") }
        for (k, v) in store.counters.sorted(by: { $0.key < $1.key }) {
            j.byte(UInt8(ascii: ",")); j.string(k); j.raw(":\(v)")
        }
        j.raw("},\"memory\":{\"rss_bytes\":\(ProcessInfoLite.residentBytes())")
        if let heap = configuration.memoryStatistics?() {
            j.raw(",\"allocator\":"); j.string(heap.allocator)
            for (k, v) in heap.figures { j.byte(UInt8(ascii: ",")); j.string(k); j.raw(":\(v)") }
        }
        j.raw("}}\n")
        return j.bytes
    }
}
