import Testing
import Foundation
@testable import MetricsCore

/// The aggregator compared against a naive recomputation from the raw samples.
@Suite("Aggregator vs naive reference")
struct AggregatorReferenceTests {
    typealias T = CoreTestSupport

    // MARK: - Workload

    static let servers = ["web-01", "web-02", "web-03", "web-04", "db-1", "db-2", "cache-a", "edge/eu-1"]
    static let metrics = ["cpu", "mem", "latency"]
    static let labelSets = ["", "cpu=cpu0", "cpu=cpu1", "disk=sda,mount=root"]

    /// Random samples in arrival order: several servers, metrics and label sets, timestamps spread
    /// over ~4 minutes, ~12 % of them late (up to 100 s older than their neighbours).
    static func workload(seed: UInt64, count: Int, start: Int64 = T.baseMinute + 17_000,
                         span: Int64 = 240_000, lateFraction: Double = 0.12) -> [MetricSample] {
        var rng = T.SeededRNG(seed: seed)
        var out: [MetricSample] = []
        out.reserveCapacity(count)
        for i in 0..<count {
            var ts = start + Int64(i) * span / Int64(count) + Int64(rng.int(0...300))
            if rng.chance(lateFraction) { ts -= Int64(rng.int(1_000...100_000)) }
            let server = servers[rng.int(0...servers.count - 1)]
            let metric = metrics[rng.int(0...metrics.count - 1)]
            let labels = rng.chance(0.5) ? "" : labelSets[rng.int(1...labelSets.count - 1)]
            let value: Double
            switch metric {
            case "cpu": value = (rng.unit() * 100 * 8).rounded() / 8   // many ties
            case "mem": value = rng.lognormal(mu: 3, sigma: 1.2)
            default: value = rng.chance(0.05) ? -rng.exponential(rate: 0.5) : rng.pareto(scale: 2, shape: 1.3)
            }
            out.append(T.sample(server, metric, value, ts, labels: labels))
        }
        return out
    }

    /// Ingests `samples` in random batch sizes (1...maxBatch), calling `between` after each batch.
    static func ingestInBatches(_ samples: [MetricSample], into aggregator: Aggregator, seed: UInt64,
                                maxBatch: Int = 700,
                                between: (ArraySlice<MetricSample>) async -> Void = { _ in }) async {
        var rng = T.SeededRNG(seed: seed)
        var i = 0
        while i < samples.count {
            let n = min(samples.count - i, rng.int(1...maxBatch))
            let batch = samples[i..<(i + n)]
            await aggregator.ingest(Array(batch))
            await between(batch)
            i += n
        }
    }

    // MARK: - Naive reference

    struct NaiveSeries {
        var samples: [MetricSample] = []  // arrival order

        var last: (value: Double, ts: Int64) {
            var v = 0.0, t = Int64.min
            for s in samples where s.timestamp >= t { v = s.value; t = s.timestamp }
            return (v, t)
        }

        var total: WindowStats { T.stats(samples.map(\.value)) }

        /// The last minute at 10 s resolution: the 10 s periods that overlap [now − 60 s, now]; when
        /// both the oldest of them (start = floor10(now) − 60 s) and the current one have data, only six
        /// slots exist, so the oldest is the one that is dropped. Assumes no sample is later than `now`.
        func window1m(now: Int64) -> WindowStats {
            func slot(_ t: Int64) -> Int64 { t - ((t % 10_000) + 10_000) % 10_000 }
            let current = slot(now)
            let oldest = current - 60_000
            let currentHasData = samples.contains { slot($0.timestamp) == current }
            return T.stats(samples.filter {
                let s = slot($0.timestamp)
                guard s + 10_000 > now - 60_000 && s <= now else { return false }
                return !(s == oldest && currentHasData)
            }.map(\.value))
        }

        /// The last five minutes at 1 min resolution: the minute of `now` and the four before it.
        func window5m(now: Int64) -> WindowStats {
            let horizon = MinuteRollup.minute(of: now) - 4 * 60_000
            return T.stats(samples.filter { MinuteRollup.minute(of: $0.timestamp) >= horizon }.map(\.value))
        }

        /// Values of the series' newest minute and the minute before it (what p50/p95/p99 cover).
        var quantileWindow: [Double] {
            guard let newest = samples.map({ MinuteRollup.minute(of: $0.timestamp) }).max() else { return [] }
            return samples.filter { MinuteRollup.minute(of: $0.timestamp) >= newest - 60_000 }.map(\.value).sorted()
        }
    }

    static func naive(_ samples: [MetricSample]) -> [SeriesKey: NaiveSeries] {
        var out: [SeriesKey: NaiveSeries] = [:]
        for s in samples { out[s.seriesKey, default: NaiveSeries()].samples.append(s) }
        return out
    }

    static func expectStatsEqual(_ got: WindowStats, _ want: WindowStats, _ what: String,
                                 sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(got.count == want.count, "\(what): count \(got.count) vs \(want.count)", sourceLocation: sourceLocation)
        #expect(got.min == want.min, "\(what): min \(got.min) vs \(want.min)", sourceLocation: sourceLocation)
        #expect(got.max == want.max, "\(what): max \(got.max) vs \(want.max)", sourceLocation: sourceLocation)
        #expect(T.sumsAgree(got.sum, want.sum, scale: abs(want.sum) + Double(want.count)),
                "\(what): sum \(got.sum) vs \(want.sum)", sourceLocation: sourceLocation)
    }

    static func compare(_ snaps: [SeriesSnapshot], _ reference: [SeriesKey: NaiveSeries], now: Int64,
                        checkQuantiles: Bool = true, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(snaps.count == reference.count, sourceLocation: sourceLocation)
        #expect(Set(snaps.map(\.key)) == Set(reference.keys), sourceLocation: sourceLocation)
        for snap in snaps {
            guard let ref = reference[snap.key] else { continue }
            let k = snap.key.description
            let last = ref.last
            #expect(snap.last == last.value && snap.lastTimestamp == last.ts, "\(k): last", sourceLocation: sourceLocation)
            expectStatsEqual(snap.total, ref.total, "\(k) total", sourceLocation: sourceLocation)
            expectStatsEqual(snap.window1m, ref.window1m(now: now), "\(k) window1m @\(now)", sourceLocation: sourceLocation)
            expectStatsEqual(snap.window5m, ref.window5m(now: now), "\(k) window5m @\(now)", sourceLocation: sourceLocation)
            guard checkQuantiles else { continue }
            let window = ref.quantileWindow
            for (q, est) in [(0.5, snap.p50), (0.95, snap.p95), (0.99, snap.p99)] {
                guard let est else { Issue.record("\(k): p\(Int(q * 100)) is nil", sourceLocation: sourceLocation); continue }
                let exact = T.exactQuantile(window, q)
                #expect(T.withinRelative(est, exact, 0.01), "\(k) p\(Int(q * 100)): \(est) vs exact \(exact) over \(window.count) values",
                        sourceLocation: sourceLocation)
            }
        }
    }

    // MARK: - Tests

    @Test("snapshotAll matches a naive recomputation: last, totals, 1 m and 5 m windows, p50/p95/p99",
          arguments: [(UInt64(1), 4), (UInt64(2), 1), (UInt64(3), 7)])
    func snapshotsMatchNaiveReference(seed: UInt64, shards: Int) async {
        let samples = Self.workload(seed: seed, count: 20_000)
        let aggregator = Aggregator(configuration: .init(shardCount: shards))
        await Self.ingestInBatches(samples, into: aggregator, seed: seed &* 31)
        let reference = Self.naive(samples)
        let maxTs = samples.map(\.timestamp).max()!
        for now in [maxTs + 1_234, maxTs + 25_000, maxTs + 95_000] {
            let snaps = await aggregator.snapshotAll(now: now)
            Self.compare(snaps, reference, now: now)
        }
        #expect(await aggregator.seriesCount() == reference.count)
        #expect(await aggregator.rejectedNewSeries() == 0)
    }

    @Test("series order repeated, rotated, shuffled or mixed between batches gives the naive result (successor prediction)",
          arguments: ["repeated", "rotated", "shuffled", "mixed"])
    func orderOfSeriesDoesNotChangeResults(order: String) async {
        var rng = T.SeededRNG(seed: 77)
        let keys = (0..<500).map { i in SeriesKey(serverID: "s\(i % 100)", metricName: "m\(i / 100)", labels: i % 3 == 0 ? "core=\(i)" : "") }
        let aggregator = Aggregator(configuration: .init(shardCount: 2))
        var all: [MetricSample] = []
        var sequence = keys
        for round in 0..<40 {
            switch order {
            case "rotated": sequence = Array(sequence[7...] + sequence[..<7])
            case "shuffled": sequence.shuffle(using: &rng)
            case "mixed": if round % 3 == 0 { sequence.shuffle(using: &rng) }
            default: break
            }
            // Some series skip a round: the prediction's successor is then absent from the batch.
            let batch = sequence.filter { _ in !rng.chance(0.1) }.map {
                MetricSample(serverID: $0.serverID, metricName: $0.metricName, value: Double(rng.int(0...1000)),
                             timestamp: T.baseMinute + Int64(round) * 1_000, labels: $0.labels)
            }
            all += batch
            // Cut the round into batches at random places (a stream's reads do not align with rounds).
            var at = 0
            while at < batch.count {
                let n = min(batch.count - at, rng.int(1...200))
                _ = await aggregator.ingest(Array(batch[at..<at + n]))
                at += n
            }
        }
        let reference = Self.naive(all)
        Self.compare(await aggregator.snapshotAll(now: T.baseMinute + 40_000), reference, now: T.baseMinute + 40_000)
        #expect(await aggregator.seriesCount() == reference.count)
    }

    @Test("snapshot(of:) agrees with snapshotAll and is nil for unknown series")
    func singleSnapshotAgrees() async {
        let samples = Self.workload(seed: 9, count: 3_000)
        let aggregator = Aggregator(configuration: .init(shardCount: 3))
        await aggregator.ingest(samples)
        let now = samples.map(\.timestamp).max()! + 500
        for snap in await aggregator.snapshotAll(now: now) {
            #expect(await aggregator.snapshot(of: snap.key, now: now) == snap)
        }
        #expect(await aggregator.snapshot(of: SeriesKey(serverID: "nope", metricName: "cpu"), now: now) == nil)
    }

    @Test("the result does not depend on the number of shards")
    func shardCountDoesNotChangeResults() async {
        let samples = Self.workload(seed: 11, count: 6_000)
        let now = samples.map(\.timestamp).max()! + 3_000
        var results: [[SeriesSnapshot]] = []
        for shards in [1, 2, 5] {
            let aggregator = Aggregator(configuration: .init(shardCount: shards))
            await Self.ingestInBatches(samples, into: aggregator, seed: 5)
            results.append(await aggregator.snapshotAll(now: now).sorted { $0.key < $1.key })
        }
        #expect(results[0].map(\.key) == results[1].map(\.key))
        for r in results.dropFirst() {
            for (a, b) in zip(results[0], r) {
                #expect(a.last == b.last && a.lastTimestamp == b.lastTimestamp && a.total.count == b.total.count)
                #expect(a.window1m.count == b.window1m.count && a.window5m.count == b.window5m.count)
                #expect(a.p50 == b.p50 && a.p95 == b.p95 && a.p99 == b.p99)
            }
        }
    }

    @Test("a late sample for a minute that has no data yet still counts in the 5-minute window")
    func lateSampleIntoEmptyMinuteCountsInWindow5m() async {
        let m = T.baseMinute
        let aggregator = Aggregator(configuration: .init(shardCount: 1))
        // Minute m+0 and m+2 have data; then a late sample for m+1 arrives.
        await aggregator.ingest([T.sample("a", "x", 1, m + 1_000), T.sample("a", "x", 3, m + 120_500)])
        await aggregator.ingest([T.sample("a", "x", 2, m + 61_000)])
        let snap = await aggregator.snapshot(of: SeriesKey(serverID: "a", metricName: "x"), now: m + 125_000)!
        #expect(snap.total.count == 3)
        #expect(snap.window5m.count == 3)
        #expect(snap.window5m.sum == 6)
        #expect(snap.window5m.min == 1 && snap.window5m.max == 3)
    }

    @Test("a late sample for the previous minute is included in the quantiles")
    func lateSampleIntoPreviousMinuteCountsInQuantiles() async throws {
        let m = T.baseMinute
        let key = SeriesKey(serverID: "a", metricName: "x")
        let aggregator = Aggregator(configuration: .init(shardCount: 1))
        // Previous minute: one value 10; current minute: one value 20.
        await aggregator.ingest([T.sample("a", "x", 10, m + 1_000), T.sample("a", "x", 20, m + 61_000)])
        // Nine late values of 1000 for the previous minute: they dominate the two-minute window.
        await aggregator.ingest((0..<9).map { T.sample("a", "x", 1_000, m + 2_000 + Int64($0)) })
        let snap = await aggregator.snapshot(of: key, now: m + 62_000)!
        #expect(snap.window5m.count == 11)
        let p50 = try #require(snap.p50)
        #expect(T.withinRelative(p50, 1_000, 0.01), "p50 \(p50) should come from the 11 values of both minutes")

        // The same when the previous minute had no data before the late sample.
        let b = Aggregator(configuration: .init(shardCount: 1))
        await b.ingest([T.sample("a", "x", 20, m + 61_000)])
        await b.ingest([T.sample("a", "x", 5_000, m + 1_000), T.sample("a", "x", 5_000, m + 2_000)])
        let s2 = await b.snapshot(of: key, now: m + 62_000)!
        #expect(T.withinRelative(s2.p50 ?? 0, 5_000, 0.01), "p50 \(String(describing: s2.p50))")
    }

    @Test("last follows the newest timestamp, not arrival order; equal timestamps take the later arrival")
    func lastFollowsNewestTimestamp() async {
        let m = T.baseMinute
        let key = SeriesKey(serverID: "s", metricName: "m")
        let aggregator = Aggregator(configuration: .init(shardCount: 2))
        await aggregator.ingest([T.sample("s", "m", 5, m + 5_000), T.sample("s", "m", 1, m + 1_000)])
        var snap = await aggregator.snapshot(of: key, now: m + 6_000)!
        #expect(snap.last == 5 && snap.lastTimestamp == m + 5_000)
        await aggregator.ingest([T.sample("s", "m", 7, m + 5_000)])
        snap = await aggregator.snapshot(of: key, now: m + 6_000)!
        #expect(snap.last == 7)
    }

    @Test("windows drop data as now moves on: nothing in 1 m after 70 s, nothing in 5 m after 5 minutes")
    func windowsExpireWithNow() async {
        let m = T.baseMinute
        let key = SeriesKey(serverID: "s", metricName: "m")
        let aggregator = Aggregator(configuration: .init(shardCount: 1))
        await aggregator.ingest([T.sample("s", "m", 4, m + 10_000), T.sample("s", "m", 6, m + 15_000)])
        var snap = await aggregator.snapshot(of: key, now: m + 20_000)!
        #expect(snap.window1m.count == 2 && snap.window5m.count == 2)
        snap = await aggregator.snapshot(of: key, now: m + 79_999)!   // slot [10 s, 20 s) still overlaps [now-60 s, now]
        #expect(snap.window1m.count == 2)
        snap = await aggregator.snapshot(of: key, now: m + 80_000)!
        #expect(snap.window1m.count == 0)
        #expect(snap.window5m.count == 2)
        snap = await aggregator.snapshot(of: key, now: m + 4 * 60_000 + 59_999)!
        #expect(snap.window5m.count == 2)
        snap = await aggregator.snapshot(of: key, now: m + 5 * 60_000)!
        #expect(snap.window5m.count == 0)
        #expect(snap.total.count == 2)
    }
}
