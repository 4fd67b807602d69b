// Embeds the aggregator, the batch writer and the in-memory store in a plain program:
// parse NDJSON, write it durably, read live aggregates, fleet rollups and history back.
import MetricsCore

let engine = MetricsEngine(store: MemoryStore(), configuration: .init(broadcaster: .init(tickMilliseconds: 50)))
let now = ProcessInfoLite.nowMilliseconds()

// 1. Parse some NDJSON exactly as the server does (any chunking works).
var parser = NDJSONParser(defaultServerID: "embedded-1")
var output = ParseOutput()
var ndjson = ""
for i in 0..<300 {
    let server = "web-\(i % 3)"
    ndjson += #"{"server_id":"\#(server)","metric_name":"cpu_usage","value":\#(Double(i % 100)),"ts":\#(now - Int64(300 - i) * 100)}"# + "\n"
}
ndjson += #"{"metric_name":"memory_usage","value":NaN}"# + "\n"  // rejected: not finite
var bytes = Array(ndjson.utf8)
bytes.withUnsafeBytes { parser.parse($0, now: now, into: &output) }
parser.finish(now: now, into: &output)
print("parsed \(output.samples.count) samples, rejected \(output.rejections.count):",
      output.rejections.map { "line \($0.line) \($0.error.code.rawValue)" })

// 2. Run the engine, write durably, tick once, read the live state back.
await withDiscardingTaskGroup { group in
    group.addTask { await engine.run() }

    let outcome = await engine.writer.write(output.samples)
    precondition(outcome == .durable)
    await engine.tick()

    let live = await engine.aggregator.snapshotAll(now: ProcessInfoLite.nowMilliseconds())
    for s in live.sorted(by: { $0.key < $1.key }) {
        print("\(s.key): last=\(s.last) count=\(s.total.count) avg1m=\(s.window1m.mean ?? .nan) p95=\(s.p95 ?? .nan)")
    }
    if let fleet = engine.broadcaster.fleet["cpu_usage"] {
        print("fleet cpu_usage: servers=\(fleet.servers) mean=\(fleet.mean) p95=\(fleet.p95) top=\(fleet.top.map(\.key.serverID))")
    }
    let history = try? await engine.history(HistoryQuery(serverID: "web-0", metricName: "cpu_usage", from: now - 3_600_000, to: now + 60_000))
    print("history points for web-0: \(history?.points.count ?? 0), samples: \(history?.points.reduce(0) { $0 + $1.count } ?? 0)")
    precondition(live.count == 3, "expected three live series")
    engine.shutdown()
}
print("done")
