import Testing
@testable import MetricsCore

@Suite("MemoryStore")
struct MemoryStoreTests {
    typealias T = CoreTestSupport
    static let m0 = T.baseMinute

    static func rollup(_ server: String, _ metric: String, minute: Int64, values: [Double], labels: String = "") -> MinuteRollup {
        var sk = QuantileSketch()
        for v in values { sk.add(v) }
        return MinuteRollup(key: SeriesKey(serverID: server, metricName: metric, labels: labels), minute: minute, sketch: sk)
    }

    static func samples(_ range: Range<Int>) -> [MetricSample] {
        range.map { T.sample("s", "m", Double($0), m0 + Int64($0)) }
    }

    @Test("the raw ring keeps the newest maxSamples samples, oldest overwritten, in order")
    func ringKeepsNewestSamples() async throws {
        let store = MemoryStore(configuration: .init(maxSamples: 5))
        try await store.write(StoreBatch(samples: Self.samples(0..<3)))
        #expect(await store.recentSamples(limit: 10).map(\.value) == [0, 1, 2])
        try await store.write(StoreBatch(samples: Self.samples(3..<8)))
        #expect(await store.recentSamples(limit: 10).map(\.value) == [3, 4, 5, 6, 7])
        #expect(await store.recentSamples(limit: 2).map(\.value) == [6, 7])
        // Wrap around more than once within one batch.
        try await store.write(StoreBatch(samples: Self.samples(8..<20)))
        #expect(await store.recentSamples(limit: 10).map(\.value) == [15, 16, 17, 18, 19])
        #expect(await store.samplesWritten == 20)
        let health = await store.health()
        #expect(health.storedSamples == 5)
        #expect(health.healthy && health.backend == "memory")
    }

    @Test("rollups of the same series and minute merge into one")
    func sameMinuteRollupsMerge() async throws {
        let store = MemoryStore()
        try await store.write(StoreBatch(rollups: [Self.rollup("s", "m", minute: Self.m0, values: [1, 2, 3])]))
        try await store.write(StoreBatch(rollups: [Self.rollup("s", "m", minute: Self.m0, values: [10]),
                                                   Self.rollup("s", "m", minute: Self.m0 + 60_000, values: [5])]))
        try await store.write(StoreBatch(rollups: [Self.rollup("s", "m", minute: Self.m0, values: [-4])]))
        #expect(await store.health().storedRollups == 2)
        let all = try await store.recentRollups(since: 0).sorted { $0.minute < $1.minute }
        #expect(all.map(\.minute) == [Self.m0, Self.m0 + 60_000])
        #expect(all[0].count == 5 && all[0].sum == 12 && all[0].min == -4 && all[0].max == 10)
        let h = try await store.history(HistoryQuery(serverID: "s", metricName: "m", from: Self.m0, to: Self.m0 + 120_000))
        #expect(h.resolution == 60_000)
        #expect(h.points.map(\.count) == [5, 1])
        #expect(h.points[0].avg == 12.0 / 5)
        #expect(h.points[0].min == -4 && h.points[0].max == 10)
    }

    @Test("minutes older than the retention are evicted, also when they arrive late")
    func retentionEvictsOldMinutes() async throws {
        let store = MemoryStore(configuration: .init(retentionMinutes: 3))
        for i in 0..<6 {
            try await store.write(StoreBatch(rollups: [Self.rollup("s", "m", minute: Self.m0 + Int64(i) * 60_000, values: [Double(i)])]))
        }
        var kept = try await store.recentRollups(since: 0).map(\.minute).sorted()
        #expect(kept == [3, 4, 5].map { Self.m0 + Int64($0) * 60_000 })
        #expect(await store.health().storedRollups == 3)
        // A late rollup older than the retention is not kept.
        try await store.write(StoreBatch(rollups: [Self.rollup("s", "m", minute: Self.m0 + 60_000, values: [9])]))
        kept = try await store.recentRollups(since: 0).map(\.minute).sorted()
        #expect(kept == [3, 4, 5].map { Self.m0 + Int64($0) * 60_000 })
        #expect(await store.health().storedRollups == 3)
        // One within retention but out of order is inserted in place.
        try await store.write(StoreBatch(rollups: [Self.rollup("s", "m", minute: Self.m0 + 4 * 60_000, values: [9])]))
        let h = try await store.history(HistoryQuery(serverID: "s", metricName: "m", from: Self.m0, to: Self.m0 + 600_000))
        #expect(h.points.map(\.count) == [1, 2, 1])
        // recentRollups(since:) honours its bound.
        #expect(try await store.recentRollups(since: Self.m0 + 4 * 60_000).map(\.minute).sorted() == [Self.m0 + 240_000, Self.m0 + 300_000])
    }

    @Test("rollups of new series beyond maxSeries are dropped and counted; existing series still merge")
    func maxSeriesDropsNewSeries() async throws {
        let store = MemoryStore(configuration: .init(maxSeries: 2))
        try await store.write(StoreBatch(rollups: [Self.rollup("a", "m", minute: Self.m0, values: [1]),
                                                   Self.rollup("b", "m", minute: Self.m0, values: [1]),
                                                   Self.rollup("c", "m", minute: Self.m0, values: [1]),
                                                   Self.rollup("c", "m", minute: Self.m0 + 60_000, values: [1])]))
        #expect(await store.droppedSeries == 2)
        try await store.write(StoreBatch(rollups: [Self.rollup("a", "m", minute: Self.m0, values: [2]),
                                                   Self.rollup("b", "m", minute: Self.m0 + 60_000, values: [2])]))
        #expect(await store.droppedSeries == 2)
        let a = try await store.history(HistoryQuery(serverID: "a", metricName: "m", from: Self.m0, to: Self.m0 + 120_000))
        #expect(a.points.map(\.count) == [2])
        let c = try await store.history(HistoryQuery(serverID: "c", metricName: "m", from: Self.m0, to: Self.m0 + 120_000))
        #expect(c.points.isEmpty)
        #expect(await store.health().storedRollups == 3)
    }

    @Test("history of series that stopped reporting leaves after the retention, swept once a minute")
    func quietSeriesLeaveAfterRetention() async throws {
        let store = MemoryStore(configuration: .init(retentionMinutes: 3))
        try await store.write(StoreBatch(rollups: [Self.rollup("gone", "m", minute: Self.m0, values: [1]),
                                                   Self.rollup("gone", "m", minute: Self.m0 + 60_000, values: [1]),
                                                   Self.rollup("live", "m", minute: Self.m0 + 60_000, values: [1])]))
        // Only "live" reports from here on; the last three minutes are kept, so once the newest
        // minute is three past gone's last one, gone's history is gone.
        for k in 2...3 {
            try await store.write(StoreBatch(rollups: [Self.rollup("live", "m", minute: Self.m0 + Int64(k) * 60_000, values: [1])]))
        }
        var gone = try await store.history(HistoryQuery(serverID: "gone", metricName: "m", from: Self.m0, to: Self.m0 + 600_000))
        #expect(gone.points.map(\.timestamp) == [Self.m0 + 60_000], "minute 0 is past retention, minute 1 not yet")
        try await store.write(StoreBatch(rollups: [Self.rollup("live", "m", minute: Self.m0 + 4 * 60_000, values: [1])]))
        gone = try await store.history(HistoryQuery(serverID: "gone", metricName: "m", from: Self.m0, to: Self.m0 + 600_000))
        #expect(gone.points.isEmpty)
        #expect(await store.evictedSeries == 1)
        let live = try await store.history(HistoryQuery(serverID: "live", metricName: "m", from: Self.m0, to: Self.m0 + 600_000))
        #expect(live.points.count == 3)
        #expect(await store.health().storedRollups == 3)
    }

    @Test("at the series cap, series quiet for two minutes make room for new ones (churn); busy ones do not")
    func quietSeriesMakeRoomAtTheCap() async throws {
        let store = MemoryStore(configuration: .init(maxSeries: 3))
        try await store.write(StoreBatch(rollups: [Self.rollup("old-1", "m", minute: Self.m0, values: [1]),
                                                   Self.rollup("old-2", "m", minute: Self.m0, values: [1]),
                                                   Self.rollup("busy", "m", minute: Self.m0, values: [1])]))
        for k in 1...3 { try await store.write(StoreBatch(rollups: [Self.rollup("busy", "m", minute: Self.m0 + Int64(k) * 60_000, values: [1])])) }
        try await store.write(StoreBatch(rollups: [Self.rollup("new-1", "m", minute: Self.m0 + 3 * 60_000, values: [1]),
                                                   Self.rollup("new-2", "m", minute: Self.m0 + 3 * 60_000, values: [1]),
                                                   Self.rollup("new-3", "m", minute: Self.m0 + 3 * 60_000, values: [1])]))
        #expect(await store.droppedSeries == 1, "two quiet series made room for two; the third found every series busy")
        #expect(await store.evictedSeries == 2)
        for (srv, n) in [("busy", 4), ("new-1", 1), ("new-2", 1), ("new-3", 0), ("old-1", 0)] {
            let h = try await store.history(HistoryQuery(serverID: srv, metricName: "m", from: Self.m0, to: Self.m0 + 600_000))
            #expect(h.points.count == n, "\(srv)")
        }
    }

    @Test("history with maxPoints merges whole minutes into buckets whose counts add up", arguments: [1, 2, 3, 4, 7, 10, 30])
    func historyBucketsWholeMinutes(maxPoints: Int) async throws {
        let store = MemoryStore()
        var rng = T.SeededRNG(seed: UInt64(maxPoints))
        var counts: [Int64: UInt64] = [:]
        var rollups: [MinuteRollup] = []
        for i in 0..<10 where i != 6 {   // one empty minute
            let minute = Self.m0 + Int64(i) * 60_000
            let values = (0..<rng.int(1...20)).map { _ in rng.unit() * 100 }
            counts[minute] = UInt64(values.count)
            rollups.append(Self.rollup("s", "m", minute: minute, values: values))
        }
        try await store.write(StoreBatch(rollups: rollups.shuffled(using: &rng)))
        let h = try await store.history(HistoryQuery(serverID: "s", metricName: "m", from: Self.m0, to: Self.m0 + 600_000, maxPoints: maxPoints))
        #expect(h.points.count <= maxPoints)
        #expect(h.resolution % 60_000 == 0 && h.resolution >= 60_000)
        #expect(h.resolution == Int64((10 + maxPoints - 1) / maxPoints) * 60_000)
        #expect(h.points.map(\.timestamp) == h.points.map(\.timestamp).sorted())
        #expect(h.points.reduce(0) { $0 + $1.count } == counts.values.reduce(0, +))
        for p in h.points {
            #expect((p.timestamp - Self.m0) % h.resolution == 0, "buckets start on whole-bucket boundaries")
            let inBucket = counts.filter { $0.key >= p.timestamp && $0.key < p.timestamp + h.resolution }.values.reduce(0, +)
            #expect(p.count == inBucket)
        }
    }

    @Test("history never returns more than maxPoints points, also when from is not minute-aligned", arguments: [1, 3, 5, 10])
    func historyRespectsMaxPointsForUnalignedRange(maxPoints: Int) async throws {
        let store = MemoryStore()
        try await store.write(StoreBatch(rollups: (0...10).map { Self.rollup("s", "m", minute: Self.m0 + Int64($0) * 60_000, values: [1]) }))
        // 10 minutes long, starting half-way into minute 0: touches minutes 0...10.
        let from = Self.m0 + 30_000
        let h = try await store.history(HistoryQuery(serverID: "s", metricName: "m", from: from, to: from + 600_000, maxPoints: maxPoints))
        #expect(h.points.count <= maxPoints, "\(h.points.count) points for maxPoints \(maxPoints)")
        #expect(h.points.reduce(0) { $0 + $1.count } == 11)
    }

    @Test("history with labels=nil merges every label set; a label set selects one series")
    func historyMergesLabelSets() async throws {
        let store = MemoryStore()
        try await store.write(StoreBatch(rollups: [
            Self.rollup("s", "cpu", minute: Self.m0, values: [1, 2], labels: "cpu=cpu0"),
            Self.rollup("s", "cpu", minute: Self.m0, values: [10], labels: "cpu=cpu1"),
            Self.rollup("s", "cpu", minute: Self.m0 + 60_000, values: [20], labels: "cpu=cpu1"),
            Self.rollup("s", "cpu", minute: Self.m0, values: [100]),
            Self.rollup("s", "mem", minute: Self.m0, values: [1_000]),
            Self.rollup("t", "cpu", minute: Self.m0, values: [1_000]),
        ]))
        let all = try await store.history(HistoryQuery(serverID: "s", metricName: "cpu", from: Self.m0, to: Self.m0 + 120_000))
        #expect(all.points.map(\.count) == [4, 1])
        #expect(all.points[0].max == 100 && all.points[0].min == 1)
        let one = try await store.history(HistoryQuery(serverID: "s", metricName: "cpu", labels: "cpu=cpu1", from: Self.m0, to: Self.m0 + 120_000))
        #expect(one.points.map(\.count) == [1, 1])
        #expect(one.points.map(\.max) == [10, 20])
        let none = try await store.history(HistoryQuery(serverID: "s", metricName: "cpu", labels: "cpu=cpu9", from: Self.m0, to: Self.m0 + 120_000))
        #expect(none.points.isEmpty)
    }

    @Test("open rollups in the query are merged into the history answer")
    func openRollupsAreMergedIntoHistory() async throws {
        let store = MemoryStore()
        try await store.write(StoreBatch(rollups: [Self.rollup("s", "m", minute: Self.m0, values: [1, 2]),
                                                   Self.rollup("s", "m", minute: Self.m0 + 60_000, values: [3])]))
        var q = HistoryQuery(serverID: "s", metricName: "m", from: Self.m0, to: Self.m0 + 180_000)
        q.openRollups = [Self.rollup("s", "m", minute: Self.m0 + 60_000, values: [4]),      // late data for a stored minute
                         Self.rollup("s", "m", minute: Self.m0 + 120_000, values: [5, 6]),  // the open minute
                         Self.rollup("s", "m", minute: Self.m0 + 600_000, values: [7])]     // outside the range
        let h = try await store.history(q)
        #expect(h.points.map(\.timestamp) == [Self.m0, Self.m0 + 60_000, Self.m0 + 120_000])
        #expect(h.points.map(\.count) == [2, 2, 2])
        #expect(h.points[1].max == 4 && h.points[2].avg == 5.5)
        // The store itself did not change.
        #expect(await store.health().storedRollups == 2)
    }

    @Test("history points carry the sketch quantiles of their bucket")
    func historyPointQuantiles() async throws {
        let store = MemoryStore()
        let values = (1...1_000).map(Double.init)
        try await store.write(StoreBatch(rollups: [Self.rollup("s", "m", minute: Self.m0, values: values)]))
        let p = try #require(try await store.history(HistoryQuery(serverID: "s", metricName: "m", from: Self.m0, to: Self.m0 + 60_000)).points.first)
        #expect(T.withinRelative(p.p50, T.exactQuantile(values, 0.5), 0.01))
        #expect(T.withinRelative(p.p95, T.exactQuantile(values, 0.95), 0.01))
        #expect(T.withinRelative(p.p99, T.exactQuantile(values, 0.99), 0.01))
        #expect(p.count == 1_000 && p.min == 1 && p.max == 1_000 && p.avg == 500.5)
    }

    @Test("past the rollup cap the oldest minutes go first, for every series alike; the newest stay and history answers from them")
    func rollupCapDropsOldestMinutes() async throws {
        let store = MemoryStore(configuration: .init(retentionMinutes: 1_440, maxSeries: 10, maxRollups: 100))
        let t0 = MinuteRollup.minute(of: ProcessInfoLite.nowMilliseconds()) - 60 * 60_000
        for m in 0..<30 {
            let rollups = (0..<10).map { Self.rollup("srv-\($0)", "cpu", minute: t0 + Int64(m) * 60_000, values: [Double(m)]) }
            try await store.write(StoreBatch(rollups: rollups))
            let h = await store.health()
            #expect((h.storedRollups ?? .max) <= 100, "minute \(m): \(h.storedRollups ?? -1) rollups")
        }
        let kept = try #require(await store.historyMinutesKept)
        #expect(kept >= 9 && kept < 30)
        for s in 0..<10 {
            let h = try await store.history(HistoryQuery(serverID: "srv-\(s)", metricName: "cpu", from: t0, to: t0 + 31 * 60_000, maxPoints: 100))
            let minutes = h.points.map(\.timestamp)
            #expect(minutes.last == t0 + 29 * 60_000, "the newest minute stays")
            #expect(minutes.count == minutes.last.map { Int(($0 - minutes[0]) / 60_000) + 1 }, "a contiguous recent run")
            #expect(minutes.count >= 9 && minutes.count <= 10, "series \(s): \(minutes.count) minutes")
        }
        #expect(await store.health().detail.contains("history shortened"))
        // Late rollups of a minute the cap dropped (a resent backlog), for known and new series:
        // not kept, and every series still answers (an empty series made the next sweep trap).
        try await store.write(StoreBatch(rollups: [Self.rollup("srv-1", "cpu", minute: t0, values: [1]),
                                                   Self.rollup("late-new", "cpu", minute: t0, values: [1])]))
        #expect(await store.droppedBeforeCap == 2)
        let more = (0..<10).map { Self.rollup("srv-\($0)", "cpu", minute: t0 + 40 * 60_000, values: [1]) }
        try await store.write(StoreBatch(rollups: more))  // a minute later: a sweep and a trim run
        let h = try await store.history(HistoryQuery(serverID: "late-new", metricName: "cpu", from: t0, to: t0 + 60 * 60_000))
        #expect(h.points.isEmpty)
    }

    @Test("a rollup from a clock far ahead neither ages out the others' history nor makes them look quiet")
    func futureRollupDoesNotMoveTheClock() async throws {
        let now = MinuteRollup.minute(of: ProcessInfoLite.nowMilliseconds())
        let store = MemoryStore(configuration: .init(retentionMinutes: 60, maxSeries: 3))
        try await store.write(StoreBatch(rollups: [Self.rollup("a", "m", minute: now, values: [1]),
                                                   Self.rollup("b", "m", minute: now, values: [2])]))
        // One agent's clock is a day ahead.
        try await store.write(StoreBatch(rollups: [Self.rollup("fast", "m", minute: now + 86_400_000, values: [3])]))
        try await store.write(StoreBatch(rollups: [Self.rollup("a", "m", minute: now + 60_000, values: [4])]))
        // At the cap, a new series finds no quiet one to make room for: a and b are current.
        try await store.write(StoreBatch(rollups: [Self.rollup("new", "m", minute: now + 60_000, values: [5])]))
        let kept = Set(try await store.recentRollups(since: 0).map(\.key.serverID))
        #expect(kept == ["a", "b", "fast"])
        #expect(await store.evictedSeries == 0)
    }
}
