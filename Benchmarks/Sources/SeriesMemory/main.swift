// Bytes of heap per live series, in the steady state, release build:
//   cd Benchmarks && swift run -c release SeriesMemory [series] [minutes]
//
// Builds `series` series (servers x 5 metrics, half of them with a label set) and feeds each one
// sample every 10 s of simulated time (Telegraf's default interval) for `minutes` simulated
// minutes (default 6, so every window, ring and sketch of a series is full), collecting and
// publishing a tick every 10 s as the server does. Heap in use is read from glibc's allocator
// (`mallinfo2`), not RSS, so freed transient buffers do not count. Printed separately: the
// aggregator alone, then the broadcaster's share (its series table, fleet index and rankings).
import MetricsCore
import CHeapInfo

let args = CommandLine.arguments
let seriesCount = args.count > 1 ? Int(args[1]) ?? 100_000 : 100_000
let minutes = args.count > 2 ? Int(args[2]) ?? 6 : 6
let metrics = ["cpu_usage", "memory_usage", "disk_io", "network_rx", "network_tx"]
let base: Int64 = 1_795_900_000_000

func heapInUse() -> Int { Int(rtd_heap_in_use()) }

/// The samples of one 10-second step: one per series, values varying within ±20 % like a gauge.
func step(_ k: Int) -> [MetricSample] {
    var out: [MetricSample] = []
    out.reserveCapacity(seriesCount)
    let ts = base + Int64(k) * 10_000
    for i in 0..<seriesCount {
        let labels = i % 2 == 0 ? "" : "dc=eu-west-1,rack=r\(i % 40)"
        let v = 50 + Double((i &* 7919 &+ k &* 104_729) % 2000) / 100
        out.append(MetricSample(serverID: "server-\(i / 5)", metricName: metrics[i % 5], value: v, timestamp: ts + Int64(i % 10_000), labels: labels))
    }
    return out
}

/// Runs the simulation; with a broadcaster, every tick is published to it too.
func simulate(_ aggregator: Aggregator, _ broadcaster: Broadcaster?) async {
    var seq: UInt64 = 0
    for k in 0..<(minutes * 6) {
        _ = await aggregator.ingest(step(k))
        seq += 1
        let now = base + Int64(k) * 10_000 + 10_000
        let (changed, _, _) = await aggregator.collect(now: now, seq: seq)
        broadcaster?.publish(changed: changed, seq: seq, timestamp: now)
    }
    let live = await aggregator.seriesCount()
    precondition(live == seriesCount)
}

let h0 = heapInUse()
let alone = Aggregator()
await simulate(alone, nil)
let h1 = heapInUse()
let aggregator = Aggregator()
let broadcaster = Broadcaster()
await simulate(aggregator, broadcaster)
let h2 = heapInUse()
precondition(broadcaster.seriesCount == seriesCount)
print("\(seriesCount) series, \(minutes) simulated minutes (one sample per series per 10 s), heap bytes per series:")
print("  aggregator:  \((h1 - h0) / seriesCount)")
print("  broadcaster: \((h2 - h1 - (h1 - h0)) / seriesCount)")
print("  total:       \((h2 - h1) / seriesCount)")
withExtendedLifetime((alone, aggregator, broadcaster)) {}
