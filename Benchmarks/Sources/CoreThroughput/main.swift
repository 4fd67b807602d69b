// Core throughput on this machine, wall clock, release build:
//   cd Benchmarks && swift run -c release CoreThroughput [seconds-per-case] [tick [staged]]
// Prints samples/s for: NDJSON parse (1 thread), line-protocol parse (1 thread), aggregator fold
// (all shards), and the server's shape: parse chunks on one task while the previous chunk is folded.
import MetricsCore

let metrics = ["cpu_usage", "memory_usage", "disk_io", "network_rx", "network_tx"]
let base: Int64 = 1_795_900_000_000
let seconds = CommandLine.arguments.count > 1 ? Double(CommandLine.arguments[1]) ?? 2 : 2
/// `tick` as the second argument runs only the dashboard tick case (last below); `staged` after it
/// only its staged variant (e.g. under `perf`, whose profile the other variant would dominate).
let tickOnly = CommandLine.arguments.count > 2 && CommandLine.arguments[2] == "tick"

/// 10,000 agents x 5 metrics; `agentShaped` puts each agent's 5 lines together (as one stream
/// delivers them), otherwise servers are interleaved round robin (worst case for locality).
func ndjson(lines: Int, agentShaped: Bool) -> [UInt8] {
    var s = ""
    s.reserveCapacity(lines * 100)
    for i in 0..<lines {
        let server = agentShaped ? (i / 5) % 10_000 : i % 10_000
        let metric = agentShaped ? metrics[i % 5] : metrics[(i / 10_000) % 5]
        s += "{\"server_id\":\"web-\(server)\",\"metric_name\":\"\(metric)\",\"value\":\(Double(i % 1000) / 10),\"ts\":\(base + Int64(i / 50_000))}\n"
    }
    return Array(s.utf8)
}

func lineProtocol(lines: Int) -> [UInt8] {
    var s = ""
    for i in 0..<lines {
        s += "sys,host=web-\(i % 10_000),dc=eu cpu_usage=\(i % 100).5,memory_usage=\(i % 77)i,disk_io=1.25,network_rx=\(i)i,network_tx=3.5 \((base + Int64(i / 10_000)) * 1_000_000)\n"
    }
    return Array(s.utf8)
}

func rate(_ label: String, samplesPerRound: Int, _ body: () async -> Void) async {
    await body()  // warm up
    let clock = ContinuousClock()
    var rounds = 0
    let start = clock.now
    var elapsed = Duration.zero
    while elapsed < .seconds(seconds) {
        await body()
        rounds += 1
        elapsed = clock.now - start
    }
    let secs = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    let perSecond = Double(rounds * samplesPerRound) / secs
    print("\(label): \(Int(perSecond).formatted()) samples/s")
}

extension Int {
    func formatted() -> String {
        let s = String(self)
        var out = ""
        for (i, c) in s.reversed().enumerated() {
            if i > 0 && i % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return String(out.reversed())
    }
}

func parse(_ input: [UInt8], chunk: Int = 64 << 10) -> [[MetricSample]] {
    var parser = NDJSONParser()
    var batches: [[MetricSample]] = []
    input.withUnsafeBytes { all in
        var offset = 0
        while offset < all.count {
            var out = ParseOutput()
            let n = min(chunk, all.count - offset)
            parser.parse(UnsafeRawBufferPointer(rebasing: all[offset..<offset + n]), now: base, into: &out)
            batches.append(out.samples)
            offset += n
        }
    }
    return batches
}

let lines = 200_000
let interleaved = ndjson(lines: lines, agentShaped: false)
let agents = ndjson(lines: lines, agentShaped: true)
let lp = lineProtocol(lines: 40_000)
print("input: \(lines) NDJSON lines (\(interleaved.count / 1024) KiB), 10,000 servers x 5 metrics; \(ProcessInfoLite.activeProcessorCount) cores")

/// Parses all of `input` (`lines` lines) in one call on this thread.
func parseWhole(_ input: [UInt8]) {
    var p = NDJSONParser()
    var out = ParseOutput()
    out.samples.reserveCapacity(lines)
    input.withUnsafeBytes { p.parse($0, now: base, into: &out) }
    precondition(out.samples.count == lines)
}

if !tickOnly {
await rate("NDJSON parse, 1 thread", samplesPerRound: lines) { parseWhole(interleaved) }
// The tiny-POST shape (scripts/bench/tiny_posts.py): 10 servers, one metric, no timestamps, so
// the name caches hit on every line: the parser's own per-line cost.
let tiny = Array((0..<lines).map { "{\"server_id\":\"web-0\($0 % 10)\",\"metric_name\":\"cpu_usage\",\"value\":\(Double($0 % 10) * 1.5)}\n" }.joined().utf8)
await rate("NDJSON parse, 1 thread, tiny-POST lines (10 servers)", samplesPerRound: lines) { parseWhole(tiny) }
await rate("line protocol parse, 1 thread", samplesPerRound: 200_000) {
    var p = LineProtocolParser()
    var out = ParseOutput()
    out.samples.reserveCapacity(200_000)
    lp.withUnsafeBytes { p.parse($0, now: base, into: &out) }
    precondition(out.samples.count == 200_000)
}
for (name, input) in [("interleaved servers", interleaved), ("agent-shaped", agents)] {
    let aggregator = Aggregator()
    let batches = parse(input)
    for b in batches { await aggregator.ingest(b) }
    await rate("aggregator fold, \(name), \(aggregator.shards.count) shards", samplesPerRound: lines) {
        for b in batches { await aggregator.ingest(b) }
    }
    // The server's shape: 64 KiB reads are parsed on one thread; the batch writer hands the
    // aggregator what accumulated meanwhile (here: batches of >= 16k samples), so parsing of the
    // next batch overlaps folding of the previous one.
    await rate("parse + aggregate pipelined, \(name)", samplesPerRound: lines) {
        var parser = NDJSONParser()
        var pending: Task<Void, Never>? = nil
        var offset = 0
        var out = ParseOutput()
        while offset < input.count {
            let n = min(64 << 10, input.count - offset)
            input.withUnsafeBytes { all in
                parser.parse(UnsafeRawBufferPointer(rebasing: all[offset..<offset + n]), now: base, into: &out)
            }
            offset += n
            if out.samples.count >= 16_384 || offset == input.count {
                await pending?.value
                let samples = out.samples
                out.samples = []
                out.samples.reserveCapacity(20_000)
                out.sampleLines.removeAll()
                pending = Task { await aggregator.ingest(samples) }
            }
        }
        await pending?.value
    }
}

}  // !tickOnly

// One dashboard tick at the 10,000-agent scale: 50,000 series (10,000 servers x 5 metrics), each
// with this and the previous minute's sketch populated, all changed since the last tick; 500
// viewers subscribed as the page is (fleet heatmap + top 20 of one metric). Collect and publish
// are timed separately (what the update lag and freshness of `scripts/bench/fleet_10k.py` wait for),
// and "events ready" is the time from the tick's start until the viewers' events are queued.
// Run twice: everything changed after the last stage (`--stages-per-tick 1`), and as a fleet
// reporting once a second looks with staging (7/8 of the series staged into the broadcaster
// ahead, as the engine's tick loop does, 1/8 changed after).
import Synchronization
for staging in (CommandLine.arguments.contains("staged") ? [true] : [false, true]) {
    let aggregator = Aggregator()
    let broadcaster = Broadcaster()
    func step(_ k: Int) -> [MetricSample] {
        var out: [MetricSample] = []
        out.reserveCapacity(50_000)
        for i in 0..<50_000 {
            let value: Double = 40 + Double((i &* 31 &+ k &* 17) % 400) / 10
            let ts: Int64 = base + Int64(k) * 1_000 + Int64(i % 1000)
            out.append(MetricSample(serverID: "web-\(i / 5)", metricName: metrics[i % 5], value: value, timestamp: ts))
        }
        return out
    }
    var seq: UInt64 = 0
    for k in 0..<90 {  // 90 simulated seconds: two minutes with data
        await aggregator.ingest(step(k))
        seq += 1
        let r = await aggregator.collect(now: base + Int64(k) * 1_000 + 1_000, seq: seq)
        broadcaster.publish(changed: r.changed, seq: seq, timestamp: base + Int64(k) * 1_000 + 1_000)
    }
    let filter = try! SubscriptionFilter(query: [("metrics", "cpu_usage"), ("heatmap", "1"), ("fleet", "0"), ("top", "20")],
                                         tickMilliseconds: 1000)
    let clock = ContinuousClock()
    let firstReady = Mutex<ContinuousClock.Instant?>(nil)
    let viewers = (0..<500).map { _ in
        try! broadcaster.subscribe(filter: filter, lastEventID: nil, onReady: { firstReady.withLock { if $0 == nil { $0 = clock.now } } })
    }
    for v in viewers { while v.next() != nil {} }
    var collect = Duration.zero, publish = Duration.zero, ready = Duration.zero, between = Duration.zero, staged = Duration.zero
    var stagedBroadcaster = Duration.zero
    let rounds = max(5, Int(seconds * 5))
    for k in 90..<(90 + rounds) {
        let samples = step(k)
        let now = base + Int64(k) * 1_000 + 1_000
        // As the engine does between ticks (at its first stage point, or right after the tick
        // without staging): what the last publish deferred, and the pass over every series.
        let m0 = clock.now
        broadcaster.finishPublish()
        _ = await aggregator.maintain(now: now - 1_000, lastTick: seq)
        between += clock.now - m0
        if staging {
            await aggregator.ingest(Array(samples[..<43_750]))
            let s0 = clock.now
            let snapshots = await aggregator.stage(now: now - 125, seq: seq + 1)
            let s1 = clock.now
            broadcaster.stage(snapshots)
            staged += clock.now - s0
            stagedBroadcaster += clock.now - s1
            await aggregator.ingest(Array(samples[43_750...]))
        } else {
            await aggregator.ingest(samples)
        }
        seq += 1
        firstReady.withLock { $0 = nil }
        let t0 = clock.now
        let r = await aggregator.collectChanges(now: now, seq: seq)
        let t1 = clock.now
        broadcaster.publish(changed: r.changed, seq: seq, timestamp: now)
        let t2 = clock.now
        for v in viewers { while v.next() != nil {} }
        collect += t1 - t0
        publish += t2 - t1
        ready += (firstReady.withLock { $0 } ?? t2) - t0
    }
    func ms(_ d: Duration) -> String {
        let v = (Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) / 1e15) / Double(rounds)
        return String(Int(v.rounded()))
    }
    print("tick, 50,000 changed series\(staging ? " (7/8 staged ahead)" : ""), 500 dashboard viewers: collect \(ms(collect)) ms, "
          + "publish \(ms(publish)) ms, events ready after \(ms(ready)) ms; between ticks (finishPublish + maintain) \(ms(between)) ms"
          + (staging ? "; staging 43,750 series \(ms(staged)) ms (broadcaster \(ms(stagedBroadcaster)) ms)" : ""))
    for v in viewers { v.cancel() }
}
