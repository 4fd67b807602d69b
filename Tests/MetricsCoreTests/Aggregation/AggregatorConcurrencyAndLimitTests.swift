import Testing
@testable import MetricsCore

@Suite("Aggregator concurrency and series cap")
struct AggregatorConcurrencyAndLimitTests {
    typealias T = CoreTestSupport

    /// 16 tasks, each building its own random batches (unique timestamps, integer values so sums are exact).
    static func taskBatches(task t: Int, batches: Int) -> [[MetricSample]] {
        var rng = T.SeededRNG(seed: UInt64(1_000 + t))
        var out: [[MetricSample]] = []
        var n: Int64 = 0
        for _ in 0..<batches {
            out.append((0..<rng.int(1...64)).map { _ in
                n += 1
                return T.sample("srv-\(rng.int(0...23))", "m\(rng.int(0...2))", Double(rng.int(-50...1_000)),
                                T.baseMinute + Int64(t) * 1_000_000 + n,
                                labels: rng.chance(0.3) ? "core=\(rng.int(0...1))" : "")
            })
        }
        return out
    }

    static func expectTotalsMatch(_ snaps: [SeriesSnapshot], _ all: [MetricSample], sourceLocation: SourceLocation = #_sourceLocation) {
        var ref: [SeriesKey: (stats: WindowStats, last: MetricSample)] = [:]
        for s in all {
            var e = ref[s.seriesKey] ?? (WindowStats(), s)
            e.stats.add(s.value)
            if s.timestamp >= e.last.timestamp { e.last = s }
            ref[s.seriesKey] = e
        }
        #expect(snaps.count == ref.count, sourceLocation: sourceLocation)
        for snap in snaps {
            guard let r = ref[snap.key] else { Issue.record("unexpected \(snap.key)", sourceLocation: sourceLocation); continue }
            #expect(snap.total == r.stats, "\(snap.key)", sourceLocation: sourceLocation)
            #expect(snap.last == r.last.value && snap.lastTimestamp == r.last.timestamp, sourceLocation: sourceLocation)
        }
    }

    @Test("16 tasks ingesting concurrently lose no sample: totals are exact and several shards are used")
    func concurrentIngestLosesNothing() async {
        let aggregator = Aggregator(configuration: .init(shardCount: 4))
        let work = (0..<16).map { Self.taskBatches(task: $0, batches: 120) }
        await withTaskGroup(of: Void.self) { group in
            for batches in work {
                group.addTask {
                    for b in batches { await aggregator.ingest(b) }
                }
            }
        }
        let all = work.flatMap { $0.flatMap { $0 } }
        let snaps = await aggregator.snapshotAll(now: T.baseMinute)
        Self.expectTotalsMatch(snaps, all)
        var folded = 0
        var usedShards = 0
        for shard in aggregator.shards {
            folded += await shard.samplesFolded
            if await shard.seriesCount > 0 { usedShards += 1 }
        }
        #expect(folded == all.count)
        #expect(usedShards > 1)
        // Every series lives in the shard its server hashes to.
        for (i, shard) in aggregator.shards.enumerated() {
            for snap in await shard.snapshotAll(now: T.baseMinute) {
                #expect(aggregator.shardIndex(for: snap.key.serverID) == i)
            }
        }
    }

    @Test("the series cap rejects and counts new series while existing series keep updating")
    func seriesCapRejectsNewSeries() async {
        let aggregator = Aggregator(configuration: .init(shardCount: 1, maxSeries: 3))
        let m = T.baseMinute
        await aggregator.ingest([T.sample("a", "x", 1, m), T.sample("b", "x", 1, m), T.sample("c", "x", 1, m)])
        #expect(await aggregator.seriesCount() == 3)
        #expect(await aggregator.rejectedNewSeries() == 0)
        _ = await aggregator.collect(now: m, seq: 1)
        let refused = await aggregator.ingest([T.sample("d", "x", 1, m), T.sample("a", "x", 5, m + 1), T.sample("d", "x", 2, m + 2),
                                               T.sample("a", "y", 1, m), T.sample("b", "x", 7, m + 3)])
        #expect(refused == [0, 2, 3], "the positions of the refused samples are returned")
        #expect(await aggregator.seriesCount() == 3)
        #expect(await aggregator.rejectedNewSeries() == 3)
        #expect(await aggregator.snapshot(of: SeriesKey(serverID: "d", metricName: "x"), now: m) == nil)
        #expect(await aggregator.snapshot(of: SeriesKey(serverID: "a", metricName: "y"), now: m) == nil)
        let a = await aggregator.snapshot(of: SeriesKey(serverID: "a", metricName: "x"), now: m + 10)!
        #expect(a.total.count == 2 && a.last == 5)
        let b = await aggregator.snapshot(of: SeriesKey(serverID: "b", metricName: "x"), now: m + 10)!
        #expect(b.total.count == 2 && b.last == 7)
        // Rejected samples are not folded into anything, and their series never appear in a collect.
        let changed = await aggregator.collect(now: m + 10, seq: 2).changed
        #expect(Set(changed.map(\.key.serverID)) == ["a", "b"])
    }

    @Test("with several shards the total number of live series never exceeds maxSeries", arguments: [(4, 10), (3, 7), (8, 5)])
    func seriesCapHoldsAcrossShards(shards: Int, maxSeries: Int) async {
        let aggregator = Aggregator(configuration: .init(shardCount: shards, maxSeries: maxSeries))
        let m = T.baseMinute
        let samples = (0..<300).map { T.sample("host-\($0)", "x", 1, m) }
        await aggregator.ingest(samples)
        let live = await aggregator.seriesCount()
        #expect(live == maxSeries, "one cap for all shards: it is reached however the series spread")
        #expect(await aggregator.rejectedNewSeries() == 300 - live)
        #expect(await aggregator.snapshotAll(now: m).count == live)
        #expect(aggregator.budget.headroom == 0)
        #expect(aggregator.mayRefuseNewSeries(samples: 1))
    }

    @Test("the cap is shared: one server may hold every series when it is the only one", arguments: [4, 8])
    func seriesCapIsNotSplitPerShard(shards: Int) async {
        let aggregator = Aggregator(configuration: .init(shardCount: shards, maxSeries: 10))
        let m = T.baseMinute
        #expect(!aggregator.mayRefuseNewSeries(samples: 10))
        #expect(aggregator.mayRefuseNewSeries(samples: 11))
        let refused = await aggregator.ingest((0..<12).map { T.sample("only-one", "m\($0)", 1, m) })
        #expect(refused == [10, 11])
        #expect(await aggregator.seriesCount() == 10)
    }
}
