import Benchmark
import MetricsCore

// Inputs built once: 100,000 NDJSON lines (10,000 servers x 5 metrics x 2) and the same samples
// as line protocol (5 fields per line), so parser figures are samples/s and MB/s of real shapes.
let metrics = ["cpu_usage", "memory_usage", "disk_io", "network_rx", "network_tx"]
let baseTS: Int64 = 1_795_900_000_000

let ndjsonInput: [UInt8] = {
    var s = ""
    s.reserveCapacity(12_000_000)
    for i in 0..<100_000 {
        let server = i % 10_000, m = metrics[(i / 10_000) % 5]
        s += "{\"server_id\":\"web-\(server)\",\"metric_name\":\"\(m)\",\"value\":\(Double(i % 1000) / 10),\"ts\":\(baseTS + Int64(i))}\n"
    }
    return Array(s.utf8)
}()

let lineProtocolInput: [UInt8] = {
    var s = ""
    for i in 0..<20_000 {
        s += "sys,host=web-\(i % 10_000),dc=eu cpu_usage=\(i % 100).5,memory_usage=\(i % 77)i,disk_io=1.25,network_rx=\(i)i,network_tx=3.5 \((baseTS + Int64(i)) * 1_000_000)\n"
    }
    return Array(s.utf8)
}()

let samples: [MetricSample] = {
    var p = NDJSONParser()
    var out = ParseOutput()
    ndjsonInput.withUnsafeBytes { p.parse($0, now: baseTS, into: &out) }
    return out.samples
}()

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .throughput, .mallocCountTotal, .peakMemoryResident],
                                           maxDuration: .seconds(3), maxIterations: 1_000)

    Benchmark("NDJSON parse 100k lines (\(ndjsonInput.count / 1000) kB)", configuration: .init(scalingFactor: .kilo)) { benchmark in
        for _ in benchmark.scaledIterations {
            var p = NDJSONParser()
            var out = ParseOutput()
            out.samples.reserveCapacity(100_000)
            ndjsonInput.withUnsafeBytes { p.parse($0, now: baseTS, into: &out) }
            blackHole(out.samples.count)
        }
    }

    Benchmark("Line protocol parse 20k lines / 100k samples (\(lineProtocolInput.count / 1000) kB)") { benchmark in
        for _ in benchmark.scaledIterations {
            var p = LineProtocolParser()
            var out = ParseOutput()
            out.samples.reserveCapacity(100_000)
            lineProtocolInput.withUnsafeBytes { p.parse($0, now: baseTS, into: &out) }
            blackHole(out.samples.count)
        }
    }

    Benchmark("Aggregator ingest 100k samples (50k series, warm)") { benchmark in
        let aggregator = Aggregator()
        await aggregator.ingest(samples)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            await aggregator.ingest(samples)
        }
    }

    Benchmark("Parse + aggregate 100k NDJSON samples") { benchmark in
        let aggregator = Aggregator()
        await aggregator.ingest(samples)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            var p = NDJSONParser()
            var out = ParseOutput()
            ndjsonInput.withUnsafeBytes { p.parse($0, now: baseTS, into: &out) }
            await aggregator.ingest(out.samples)
        }
    }

    Benchmark("Broadcaster publish 50k changed series, 100 filtered subscribers") { benchmark in
        let aggregator = Aggregator()
        let broadcaster = Broadcaster()
        var subs: [Subscription] = []
        for i in 0..<100 {
            var f = SubscriptionFilter()
            f.metrics = [metrics[i % 5]]
            f.serverPrefixes = ["web-\(i % 10)"]
            subs.append(try! broadcaster.subscribe(filter: f, lastEventID: nil) {})
        }
        await publishTicks(benchmark, aggregator: aggregator, broadcaster: broadcaster, subscribers: subs)
    }

    // The dashboard's subscription: one metric's fleet view (heatmap of 10,000 servers, counts,
    // percentiles) plus the top 20, for 100 viewers with 10 distinct thresholds; views are computed
    // once per distinct question per tick and shared.
    Benchmark("Broadcaster publish 50k changed series, 100 dashboard viewers (fleet heatmap + top 20)") { benchmark in
        let aggregator = Aggregator()
        let broadcaster = Broadcaster()
        var subs: [Subscription] = []
        for i in 0..<100 {
            var f = SubscriptionFilter()
            f.metrics = [metrics[0]]
            f.heatmap = true
            f.top = 20
            f.fleet = false
            f.warn = Double(70 + i % 10)
            f.crit = 95
            subs.append(try! broadcaster.subscribe(filter: f, lastEventID: nil) {})
        }
        await publishTicks(benchmark, aggregator: aggregator, broadcaster: broadcaster, subscribers: subs)
    }

    Benchmark("Memory: 100k series in the aggregator", configuration: .init(metrics: [.peakMemoryResident, .mallocCountTotal], maxIterations: 3)) { benchmark in
        let aggregator = Aggregator()
        var batch: [MetricSample] = []
        batch.reserveCapacity(100_000)
        for i in 0..<100_000 {
            batch.append(MetricSample(serverID: "srv-\(i / 10)", metricName: metrics[i % 5] + "_\(i % 2)", value: Double(i), timestamp: baseTS))
        }
        benchmark.startMeasurement()
        await aggregator.ingest(batch)
        blackHole(await aggregator.seriesCount())
    }
}

/// Each iteration: fold the 100k samples (not measured), collect the changed series, then publish
/// them and drain every subscriber's events (measured).
func publishTicks(_ benchmark: Benchmark, aggregator: Aggregator, broadcaster: Broadcaster, subscribers: [Subscription]) async {
    var seq: UInt64 = 0
    benchmark.startMeasurement()
    for _ in benchmark.scaledIterations {
        benchmark.stopMeasurement()
        await aggregator.ingest(samples)
        seq += 1
        let (changed, _, _) = await aggregator.collect(now: baseTS + 1000, seq: seq, sealAfter: 5000)
        benchmark.startMeasurement()
        broadcaster.publish(changed: changed, seq: seq, timestamp: baseTS + 1000)
        for s in subscribers { while s.next() != nil {} }
    }
    blackHole(subscribers.count)
}
