import ArgumentParser
import Foundation
import Histogram
import NIOCore
import NIOPosix
import NIOSSL

/// `metrics-loadgen`: simulates a fleet of agents streaming samples over HTTP/2 (h2c or TLS) and,
/// optionally, dashboard viewers on the SSE stream; prints a live progress line and a final report
/// (also as JSON). See Docs/benchmarks.md.
@main
struct LoadGenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "metrics-loadgen",
        abstract: "Simulates N servers streaming metrics over HTTP/2 and M dashboard viewers; reports throughput, ack latency and freshness.",
        discussion: "Against a server with credentials, set RTD_INGEST_TOKEN (agents) and RTD_VIEW_TOKEN (viewers) in the environment; they are sent as bearer tokens.")

    @Option(help: "Server URL: http://HOST:PORT (h2c prior knowledge) or https://HOST:PORT (TLS, ALPN h2).")
    var url: String = "http://127.0.0.1:4002"

    @Option(help: "Simulated servers (agents), one long-lived stream each.")
    var agents: Int = 100

    @Option(help: "HTTP/2 connections the agents share (0 = one connection per agent, as the original agents did).")
    var connections: Int = 0

    @Option(help: "Samples per second per agent (every metric value counts).")
    var rate: Double = 10

    @Option(help: "Metrics per agent (cpu_usage, memory_usage, disk_usage, load_avg, net_rx_bytes, then m5, m6, ...), or a comma-separated list of names.")
    var metrics: String = "5"

    @Option(help: "Label cardinality: each agent's series carry a label core=c0...c(N-1) (1 = no labels).")
    var labelValues: Int = 1

    @Option(help: "ndjson (POST /api/metrics/stream) or influx (line protocol on the same streaming endpoint).")
    var format: String = "ndjson"

    @Option(help: "Seconds of load after ramp-up.")
    var duration: Double = 10

    @Option(help: "Seconds over which agents start (evenly spread).")
    var rampUp: Double = 0

    @Option(help: "Seconds after the ramp-up before measuring starts (lets the last agents' series and the dashboards' member lists settle).")
    var settle: Double = 0

    @Option(help: "Milliseconds between an agent's writes (samples are generated in chunks at this period).")
    var tickMs: Int = 100

    @Option(help: "SSE viewers (dashboard clients).")
    var viewers: Int = 0

    @Option(help: "The viewers' SSE query (default: the dashboard's fleet view of the first metric).")
    var viewerQuery: String?

    @Option(help: "Event-loop threads of the generator's agents.")
    var threads: Int = 1

    @Option(help: "Event-loop threads of the viewers, apart from the agents' (0: viewers share the agents' loops, where reading updates queues behind the agents' acks and writes, and that wait counts as update lag).")
    var viewerThreads: Int = 1

    @Option(help: "Server ids are PREFIX00001...")
    var serverPrefix: String = "agent-"

    @Option(help: "Most unacknowledged lines an agent keeps (for resending) before it stops generating.")
    var maxPendingLines: Int = 200_000

    @Option(help: "Seconds to wait for the last acknowledgements after the load stops.")
    var drain: Double = 15

    @Option(help: "Write the final report as JSON to this file (- for stdout).")
    var json: String?

    @Flag(help: "TLS without certificate verification (the server's development certificate).")
    var insecure = false

    @Flag(help: "No progress line.")
    var quiet = false

    /// Secrets come from the environment, not the command line (process lists show arguments).
    private var ingestToken: String? { ProcessInfo.processInfo.environment["RTD_INGEST_TOKEN"].flatMap { $0.isEmpty ? nil : $0 } }
    private var viewToken: String? { ProcessInfo.processInfo.environment["RTD_VIEW_TOKEN"].flatMap { $0.isEmpty ? nil : $0 } }

    func validate() throws {
        guard agents >= 1, connections >= 0, rate > 0, duration > 0, rampUp >= 0, settle >= 0, tickMs >= 1, viewers >= 0, threads >= 1, viewerThreads >= 0 else {
            throw ValidationError("agents ≥ 1, connections ≥ 0, rate > 0, duration > 0, ramp-up ≥ 0, tick-ms ≥ 1, viewers ≥ 0, threads ≥ 1, viewer-threads ≥ 0")
        }
        guard LoadPlan.Format(rawValue: format) != nil else { throw ValidationError("--format must be ndjson or influx") }
        guard URLComponents(string: url)?.host != nil else { throw ValidationError("--url must be http://HOST:PORT or https://HOST:PORT") }
    }

    func run() throws {
        let comps = URLComponents(string: url)!
        let tls = comps.scheme == "https"
        let host = comps.host!
        let port = comps.port ?? (tls ? 443 : 80)
        let defaults = ["cpu_usage", "memory_usage", "disk_usage", "load_avg", "net_rx_bytes"]
        let names: [String]
        if let n = Int(metrics) {
            names = (0..<max(1, n)).map { $0 < defaults.count ? defaults[$0] : "m\($0)" }
        } else {
            names = metrics.split(separator: ",").map(String.init)
        }
        let plan = LoadPlan(
            host: host, port: port, tls: tls, insecure: insecure, authority: "\(host):\(port)", agents: agents,
            connections: connections, samplesPerSecond: rate, metrics: names, labelValues: max(1, labelValues),
            format: LoadPlan.Format(rawValue: format)!, tickMilliseconds: tickMs, rampUpSeconds: rampUp, settleSeconds: settle,
            serverPrefix: serverPrefix, maxPendingLines: maxPendingLines, viewers: viewers,
            viewerQuery: viewerQuery ?? "metrics=\(names[0])&heatmap=1&top=20&fleet=0",
            agentAuthorization: ingestToken.map { "Bearer \($0)" }, viewerAuthorization: viewToken.map { "Bearer \($0)" })
        let ssl: NIOSSLContext?
        if tls {
            var cfg = TLSConfiguration.makeClientConfiguration()
            cfg.applicationProtocols = ["h2"]
            if insecure { cfg.certificateVerification = .none }
            ssl = try NIOSSLContext(configuration: cfg)
        } else {
            ssl = nil
        }
        // Agents on the first `threads` loops; viewers on `viewerThreads` loops of their own (as
        // dashboards run apart from the agents), or sharing the agents' loops.
        let viewerLoopCount = viewers > 0 ? viewerThreads : 0
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads + viewerLoopCount)
        defer { try? group.syncShutdownGracefully() }
        let loops = (0..<(threads + viewerLoopCount)).map { _ in group.next() }
        // Build every loop's state on its loop.
        let states: [NIOLoopBound<LoopState>] = try loops.map { loop in
            try loop.submit { NIOLoopBound(LoopState(loop: loop, plan: plan, sslContext: ssl), eventLoop: loop) }.wait()
        }
        /// Runs `body` on every loop with that loop's state, waiting for each; results in loop order.
        func eachLoop<T: Sendable>(_ body: @escaping @Sendable (Int, LoopState) -> T) throws -> [T] {
            try loops.enumerated().map { (li, loop) in try loop.submit { body(li, states[li].value) }.wait() }
        }
        let connectionCount = connections == 0 ? agents : min(connections, agents)
        let loopCount = threads
        // Connections round robin over the agents' loops; agents round robin over connections;
        // viewers round robin over theirs.
        _ = try eachLoop { li, st in
            if viewerLoopCount > 0 {
                if li >= loopCount {
                    for v in stride(from: li - loopCount, to: plan.viewers, by: viewerLoopCount) { st.viewers.append(Viewer(state: st, index: v)) }
                    st.start()
                    return
                }
            } else {
                for v in stride(from: li, to: plan.viewers, by: loopCount) { st.viewers.append(Viewer(state: st, index: v)) }
            }
            for _ in stride(from: li, to: connectionCount, by: loopCount) { st.connections.append(LoadConnection(state: st)) }
            for a in 0..<plan.agents {
                let connIndex = a % connectionCount
                guard connIndex % loopCount == li else { continue }
                let conn = st.connections[connIndex / loopCount]
                conn.agents.append(Agent(owner: conn, index: a, serverID: plan.serverPrefix + String(format: "%05d", a + 1),
                                         metricCount: plan.metrics.count))
            }
            st.start()
        }
        // Ramp-up: start agents spread over the ramp-up period.
        let start = NIODeadline.now()
        _ = try eachLoop { _, st in
            for conn in st.connections {
                for a in conn.agents {
                    let delay = plan.rampUpSeconds * Double(a.index) / Double(max(1, plan.agents))
                    if delay <= 0 { a.begin(); continue }
                    let bound = NIOLoopBound(a, eventLoop: st.loop)
                    st.loop.scheduleTask(in: .nanoseconds(Int64(delay * 1e9))) { bound.value.begin() }
                }
            }
        }
        func collect() throws -> LoadStats {
            try eachLoop { _, st in st.snapshot() }.reduce(into: LoadStats()) { $0.merge($1) }
        }
        // Progress, once a second.
        let totalSeconds = rampUp + settle + duration
        var last = LoadStats()
        var lastAt = NIODeadline.now()
        var measuredFrom: (at: NIODeadline, stats: LoadStats)? = rampUp + settle == 0 ? (start, LoadStats()) : nil
        while NIODeadline.now() < start + .nanoseconds(Int64(totalSeconds * 1e9)) {
            Thread.sleep(forTimeInterval: 1)
            let s = try collect()
            let now = NIODeadline.now()
            let dt = Double((now - lastAt).nanoseconds) / 1e9
            if measuredFrom == nil && now >= start + .nanoseconds(Int64((rampUp + settle) * 1e9)) {
                measuredFrom = (now, s)
                _ = try eachLoop { _, st in st.measuring = true }
            }
            if !quiet {
                let elapsed = Double((now - start).nanoseconds) / 1e9
                var line = String(format: "[%5.1fs]", elapsed)
                line += " conns \(s.openConnections) streams \(s.openStreams)/\(agents)"
                line += " | sent \(human(Double(s.samplesSent - last.samplesSent) / dt))/s acked \(human(Double(s.samplesAcked - last.samplesAcked) / dt))/s"
                line += " | total \(human(Double(s.samplesSent))) acked \(human(Double(s.samplesAcked))) rej \(s.linesRejected)"
                line += " resent \(s.linesResent) pend \(s.pendingLines) | ack \(s.ackLatency.short())"
                if viewers > 0 {
                    let perUpdate = s.sseUpdates > 0 ? Double(s.sseUpdateBytes) / Double(s.sseUpdates) : 0
                    line += " | viewers \(s.viewersConnected) fresh \(s.freshness.short()) lag \(s.updateLag.short()) \(human(perUpdate))B/upd"
                }
                FileHandle.standardError.write((line + "\n").data(using: .utf8)!)
            }
            last = s
            lastAt = now
        }
        // Stop generating; wait for the last acks.
        let stopAt = NIODeadline.now()
        let generated = try collect()
        _ = try eachLoop { _, st in st.generating = false }
        let drainDeadline = NIODeadline.now() + .nanoseconds(Int64(drain * 1e9))
        var final = try collect()
        while final.pendingLines > 0 && NIODeadline.now() < drainDeadline {
            Thread.sleep(forTimeInterval: 0.05)
            final = try collect()
        }
        _ = try eachLoop { _, st in st.finish() }
        Thread.sleep(forTimeInterval: 0.3)
        final = try collect()
        _ = try eachLoop { _, st in st.close() }

        let from = measuredFrom ?? (start, LoadStats())
        let measuredSeconds = Double((stopAt - from.at).nanoseconds) / 1e9
        let report = Report(plan: plan, connections: connectionCount, seconds: measuredSeconds, start: from.stats, end: generated, final: final)
        print(report.text())
        if let json {
            let data = try JSONSerialization.data(withJSONObject: report.json(), options: [.prettyPrinted, .sortedKeys])
            if json == "-" { FileHandle.standardOutput.write(data + Data("\n".utf8)) } else { try data.write(to: URL(fileURLWithPath: json)) }
        }
        if final.pendingLines > 0 { throw ExitCode(3) }  // unacknowledged samples at the end
    }
}

func human(_ v: Double) -> String {
    switch abs(v) {
    case 1e9...: return String(format: "%.2fG", v / 1e9)
    case 1e6...: return String(format: "%.2fM", v / 1e6)
    case 1e4...: return String(format: "%.1fk", v / 1e3)
    default: return String(format: "%.0f", v)
    }
}

/// The final numbers: throughput over the measured period (after ramp-up, until the load stopped),
/// totals at the end (after the drain), latency percentiles.
struct Report {
    let plan: LoadPlan
    let connections: Int
    let seconds: Double
    let start: LoadStats
    let end: LoadStats
    let final: LoadStats

    var sentPerSecond: Double { Double(end.samplesSent - start.samplesSent) / max(0.001, seconds) }
    var ackedPerSecond: Double { Double(end.samplesAcked - start.samplesAcked) / max(0.001, seconds) }

    func text() -> String {
        var out = """
        metrics-loadgen: \(plan.agents) agents on \(connections) connections, \(plan.format.rawValue), \(plan.metrics.count) metrics, \
        \(plan.samplesPerSecond) samples/s each, \(String(format: "%.1f", seconds)) s measured
          samples: sent \(final.samplesSent), acknowledged (durable) \(final.samplesAcked), rejected \(final.samplesRejected) \
        (lines \(final.linesRejected)), \
        resent \(final.linesResent), unacknowledged at end \(final.pendingLines) lines
          throughput: sent \(human(sentPerSecond))/s, acknowledged \(human(ackedPerSecond))/s
          ack latency (sent → committed, after ramp-up): \(final.ackLatency.short())
          reconnects \(final.reconnects), stream errors \(final.streamErrors), throttled agent-ticks \(final.throttledTicks)
          generator timer slip per step (agents write late by this much): \(final.timerSlip.short())
        """
        if !final.rejectedByCode.isEmpty { out += "\n  rejected by code: \(final.rejectedByCode.sorted { $0.key < $1.key })" }
        if !final.errorCauses.isEmpty { out += "\n  reconnects and stream errors by cause: \(final.errorCauses.sorted { $0.key < $1.key })" }
        if plan.viewers > 0 {
            let avg = final.sseUpdates > 0 ? final.sseUpdateBytes / final.sseUpdates : 0
            out += """

              viewers: \(plan.viewers), events \(final.sseEvents) (init \(final.sseInits), updates \(final.sseUpdates)), \
            bytes per update avg \(avg) max \(final.sseMaxUpdateBytes)
              freshness (sample timestamp → first seen by a viewer): \(final.freshness.short())
              of which sample timestamp → tick: \(final.ageAtTick.short()); rows resent unchanged (not counted) \(final.rowsResent)
              update lag (server tick → received): \(final.updateLag.short())
            """
        }
        return out
    }

    func json() -> [String: Any] {
        [
            "agents": plan.agents, "connections": connections, "format": plan.format.rawValue, "metrics": plan.metrics.count,
            "rate_per_agent": plan.samplesPerSecond, "measured_seconds": seconds,
            "samples_sent": final.samplesSent, "samples_acked": final.samplesAcked, "samples_rejected": final.samplesRejected, "lines_sent": final.linesSent,
            "lines_acked": final.linesAcked, "lines_rejected": final.linesRejected, "rejected_by_code": final.rejectedByCode,
            "lines_resent": final.linesResent, "unacked_lines_at_end": final.pendingLines, "reconnects": final.reconnects,
            "stream_errors": final.streamErrors, "error_causes": final.errorCauses, "throttled_agent_ticks": final.throttledTicks, "bytes_sent": final.bytesSent,
            "sent_per_second": sentPerSecond, "acked_per_second": ackedPerSecond,
            "ack_latency": final.ackLatency.summary(), "generator_timer_slip": final.timerSlip.summary(),
            "viewers": plan.viewers, "sse_events": final.sseEvents, "sse_updates": final.sseUpdates, "sse_inits": final.sseInits,
            "sse_bytes_per_update_avg": final.sseUpdates > 0 ? final.sseUpdateBytes / final.sseUpdates : 0,
            "sse_bytes_per_update_max": final.sseMaxUpdateBytes,
            "freshness": final.freshness.summary(), "age_at_tick": final.ageAtTick.summary(), "rows_resent": final.rowsResent,
            "update_lag": final.updateLag.summary(),
        ]
    }
}
