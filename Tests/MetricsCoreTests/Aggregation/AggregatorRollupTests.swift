import Testing
@testable import MetricsCore

/// Sealed minute rollups: `collect(now:seq:sealAfter:)` and `sealAll()` against a naive per-minute recomputation.
@Suite("Aggregator minute rollups")
struct AggregatorRollupTests {
    typealias T = CoreTestSupport
    typealias Ref = AggregatorReferenceTests

    struct MinuteKey: Hashable {
        var key: SeriesKey
        var minute: Int64
    }

    @Test("the union of all sealed rollups equals a naive per-(series, minute) recomputation, late samples included",
          arguments: [UInt64(21), 22])
    func unionOfRollupsEqualsNaivePerMinuteStats(seed: UInt64) async {
        let samples = Ref.workload(seed: seed, count: 12_000, lateFraction: 0.15)
        let aggregator = Aggregator(configuration: .init(shardCount: 4))
        var rollups: [MinuteRollup] = []
        var fromCollect = 0
        var clock = Int64.min
        var seq: UInt64 = 0
        var staleOpenMinutes = 0
        var arrivedThisWallMinute = Set<MinuteKey>()
        await Ref.ingestInBatches(samples, into: aggregator, seed: seed + 100, maxBatch: 500) { batch in
            // The wall clock runs a little ahead of the newest sample.
            let before = clock
            clock = max(clock, batch.map(\.timestamp).max()! + 1_500)
            if before == .min || MinuteRollup.minute(of: clock) != MinuteRollup.minute(of: before) { arrivedThisWallMinute.removeAll() }
            arrivedThisWallMinute.formUnion(batch.map { MinuteKey(key: $0.seriesKey, minute: MinuteRollup.minute(of: $0.timestamp)) })
            seq += 1
            let (changed, sealed, _) = await aggregator.collect(now: clock, seq: seq, sealAfter: 5_000)
            // `changed` is exactly the series of this batch, each stamped with this tick.
            #expect(Set(changed.map(\.key)) == Set(batch.map(\.seriesKey)))
            #expect(changed.count == Set(batch.map(\.seriesKey)).count)
            #expect(changed.allSatisfy { $0.changedSeq == seq })
            rollups.append(contentsOf: sealed)
            fromCollect += sealed.count
            // After a tick no series keeps a minute open that ended more than `sealAfter` ago,
            // unless samples for that minute arrived in this very tick (then it waits for a quiet
            // tick), or arrived late in this wall-clock minute (stored when the next one begins).
            if seq % 10 == 0 {
                let arriving = Set(batch.map { MinuteKey(key: $0.seriesKey, minute: MinuteRollup.minute(of: $0.timestamp)) })
                for key in Set(batch.map(\.seriesKey)) {
                    for open in await aggregator.openMinutes(serverID: key.serverID, metricName: key.metricName, labels: key.labels)
                    where open.minute < MinuteRollup.minute(of: clock - 5_000) && !arriving.contains(MinuteKey(key: key, minute: open.minute))
                        && !arrivedThisWallMinute.contains(MinuteKey(key: key, minute: open.minute)) {
                        staleOpenMinutes += 1
                    }
                }
            }
        }
        #expect(staleOpenMinutes == 0)
        #expect(fromCollect > 0, "collect must seal minutes before shutdown")
        rollups.append(contentsOf: await aggregator.sealAll())
        #expect(await aggregator.sealAll().isEmpty)
        #expect(await aggregator.collect(now: clock, seq: seq + 1, sealAfter: 5_000).sealed.isEmpty)

        // Naive: group raw samples by series and minute.
        var naive: [MinuteKey: [Double]] = [:]
        for s in samples { naive[MinuteKey(key: s.seriesKey, minute: MinuteRollup.minute(of: s.timestamp)), default: []].append(s.value) }

        var merged: [MinuteKey: QuantileSketch] = [:]
        var pieces: [MinuteKey: Int] = [:]
        for r in rollups {
            #expect(r.minute % 60_000 == 0)
            #expect(r.count > 0)
            let k = MinuteKey(key: r.key, minute: r.minute)
            merged[k, default: QuantileSketch()].merge(r.sketch)
            pieces[k, default: 0] += 1
        }
        #expect(Set(merged.keys) == Set(naive.keys))
        #expect(rollups.reduce(0) { $0 + Int($1.count) } == samples.count, "every sample is in exactly one rollup")
        for (k, values) in naive {
            guard let sk = merged[k] else { continue }
            let want = T.stats(values)
            #expect(sk.count == want.count, "\(k.key) @\(k.minute)")
            #expect(sk.min == want.min && sk.max == want.max, "\(k.key) @\(k.minute)")
            #expect(T.sumsAgree(sk.sum, want.sum, scale: abs(want.sum) + Double(want.count)))
            // The merged sketch of a minute answers that minute's quantiles within α.
            let sorted = values.sorted()
            for q in [0.5, 0.99] {
                #expect(T.withinRelative(sk.quantile(q)!, T.exactQuantile(sorted, q), 0.01))
            }
        }
        // Late samples really came back as extra one-sample rollups.
        let late = rollups.filter { $0.count == 1 && pieces[MinuteKey(key: $0.key, minute: $0.minute)]! > 1 }
        #expect(late.count > 50)
    }

    @Test("collect stores a minute only once it ended more than sealAfter ago; a later sample of it is stored apart at the next minute turn")
    func collectSealsAfterDelayAndReturnsLateSamples() async {
        let m = T.baseMinute
        let key = SeriesKey(serverID: "web-1", metricName: "cpu", labels: "cpu=cpu0")
        let aggregator = Aggregator(configuration: .init(shardCount: 2))
        await aggregator.ingest([MetricSample(serverID: "web-1", metricName: "cpu", value: 10, timestamp: m + 10_000, labels: "cpu=cpu0"),
                                 MetricSample(serverID: "web-1", metricName: "cpu", value: 30, timestamp: m + 50_000, labels: "cpu=cpu0")])
        var r = await aggregator.collect(now: m + 60_000 + 4_999, seq: 1, sealAfter: 5_000)
        #expect(r.changed.map(\.key) == [key])
        #expect(r.sealed.isEmpty)
        #expect(await aggregator.openMinutes(serverID: "web-1", metricName: "cpu").map(\.count) == [2])

        r = await aggregator.collect(now: m + 65_000, seq: 2, sealAfter: 5_000)
        #expect(r.changed.isEmpty, "nothing changed since the last tick")
        #expect(r.sealed.count == 1)
        #expect(r.sealed.first?.key == key && r.sealed.first?.minute == m)
        #expect(r.sealed.first?.count == 2 && r.sealed.first?.sum == 40 && r.sealed.first?.min == 10 && r.sealed.first?.max == 30)
        #expect(await aggregator.openMinutes(serverID: "web-1", metricName: "cpu").isEmpty)

        // A late sample for the stored minute: kept apart (the store holds the rest) and stored at
        // the next wall-clock minute, not at once (one merge per minute, however many ticks bring some).
        await aggregator.ingest([MetricSample(serverID: "web-1", metricName: "cpu", value: 20, timestamp: m + 59_000, labels: "cpu=cpu0")])
        r = await aggregator.collect(now: m + 66_000, seq: 3, sealAfter: 5_000)
        #expect(r.changed.map(\.changedSeq) == [3])
        #expect(r.sealed.isEmpty)
        #expect(await aggregator.openMinutes(serverID: "web-1", metricName: "cpu").map(\.count) == [1], "only the part the store lacks")
        let snap = await aggregator.snapshot(of: key, now: m + 66_000)!
        #expect(snap.total.count == 3)
        #expect(snap.window5m.count == 3 && snap.window5m.sum == 60)
        #expect(snap.changedSeq == 3)
        r = await aggregator.collect(now: m + 120_000, seq: 4, sealAfter: 5_000)
        #expect(r.sealed.count == 1)
        #expect(r.sealed.first?.minute == m && r.sealed.first?.count == 1 && r.sealed.first?.sum == 20)
        #expect(await aggregator.openMinutes(serverID: "web-1", metricName: "cpu").isEmpty)
    }

    @Test("a minute still receiving samples past its seal deadline stays open until a quiet tick (stored in part once a minute meanwhile): one rollup, not one late rollup per tick")
    func backlogMinuteWaitsForQuietTick() async {
        let m = T.baseMinute
        let aggregator = Aggregator(configuration: .init(shardCount: 2))
        func sample(_ v: Double, at offset: Int64) -> MetricSample {
            MetricSample(serverID: "lag-1", metricName: "cpu", value: v, timestamp: m + offset)
        }
        // A backlog delivers minute m well after it ended: samples arrive in every tick.
        var sealed: [MinuteRollup] = []
        for (tick, now) in [m + 66_000, m + 67_000, m + 68_000].enumerated() {
            await aggregator.ingest([sample(Double(tick + 1), at: 10_000 + Int64(tick) * 1_000)])
            let r = await aggregator.collect(now: now, seq: UInt64(tick + 1), sealAfter: 5_000)
            sealed += r.sealed
        }
        #expect(sealed.isEmpty, "minute m is still arriving")
        #expect(await aggregator.openMinutes(serverID: "lag-1", metricName: "cpu").map(\.count) == [3])
        // The first tick without samples for it seals it, whole.
        let quiet = await aggregator.collect(now: m + 69_000, seq: 4, sealAfter: 5_000)
        #expect(quiet.sealed.count == 1 && quiet.sealed.first?.minute == m && quiet.sealed.first?.count == 3 && quiet.sealed.first?.sum == 6)

        // A minute that never stops receiving samples stays open; what it holds is stored as a
        // partial rollup once per wall-clock minute: one store merge per minute of backlog, not one per tick.
        let m2 = m + 60_000
        var seq: UInt64 = 10
        var partials: [(at: Int64, rollup: MinuteRollup)] = []
        var sent = 0
        for now in stride(from: m2 + 66_000, through: m2 + 250_000, by: 4_000) {
            await aggregator.ingest([MetricSample(serverID: "lag-1", metricName: "cpu", value: 1, timestamp: m2 + 30_000)])
            sent += 1
            seq += 1
            let r = await aggregator.collect(now: now, seq: seq, sealAfter: 5_000)
            partials += r.sealed.filter { $0.minute == m2 }.map { (now, $0) }
        }
        // The previous collect was in minute m2; ticks from m2 + 66 s to m2 + 250 s enter four more
        // wall-clock minutes (m2 + 60, 120, 180, 240 s): one partial rollup in the first tick of each.
        #expect(partials.map { MinuteRollup.minute(of: $0.at) } == [m2 + 60_000, m2 + 120_000, m2 + 180_000, m2 + 240_000],
                "partials at \(partials.map { $0.at - m2 })")
        // The rest is stored at the next minute turn (not at a quiet tick: a stream paused by
        // backpressure has quiet ticks every few seconds).
        let quietTick = await aggregator.collect(now: m2 + 254_000, seq: seq + 1, sealAfter: 5_000)
        #expect(quietTick.sealed.isEmpty)
        let last = await aggregator.collect(now: m2 + 300_000, seq: seq + 2, sealAfter: 5_000)
        let all = partials.map(\.rollup) + last.sealed.filter { $0.minute == m2 }
        #expect(all.count == 5 && all.reduce(0) { $0 + $1.count } == sent, "every sample in exactly one rollup")
        #expect(await aggregator.openMinutes(serverID: "lag-1", metricName: "cpu").isEmpty)
    }

    @Test("a sample in a newer minute seals the previous one at the next collect, even before sealAfter")
    func newerMinuteSealsPreviousAtNextCollect() async {
        let m = T.baseMinute
        let aggregator = Aggregator(configuration: .init(shardCount: 1))
        await aggregator.ingest([T.sample("a", "x", 1, m + 1_000), T.sample("a", "x", 2, m + 2_000), T.sample("a", "x", 3, m + 61_000)])
        let r = await aggregator.collect(now: m + 61_500, seq: 1, sealAfter: 5_000)
        #expect(r.sealed.map(\.minute) == [m])
        #expect(r.sealed.map(\.count) == [2])
        let all = await aggregator.sealAll()
        #expect(all.map(\.minute) == [m + 60_000])
        #expect(all.map(\.count) == [1])
    }

    @Test("late samples of a sealed minute are kept apart and stored once per wall-clock minute, not once per tick (two streams of one series straddling a minute boundary)")
    func lateSamplesAreStoredOncePerMinute() async {
        let m = T.baseMinute
        let aggregator = Aggregator(configuration: .init(shardCount: 2))
        let servers = (0..<50).map { "s-\($0)" }
        var sealed: [MinuteRollup] = []
        var sentForM = 0, sentForNext = 0
        // Twenty ticks inside wall-clock minute m+1: each brings, per series, a sample of minute
        // m+1 (stream A) and one of minute m (stream B, a few seconds behind).
        for tick in 0..<20 {
            var batch: [MetricSample] = []
            for s in servers {
                batch.append(T.sample(s, "cpu", 1, m + 60_000 + Int64(tick) * 1_000))
                batch.append(T.sample(s, "cpu", 2, m + 40_000 + Int64(tick) * 1_000))
                sentForNext += 1
                sentForM += 1
            }
            await aggregator.ingest(batch)
            sealed += await aggregator.collect(now: m + 60_500 + Int64(tick) * 1_000, seq: UInt64(tick + 1), sealAfter: 5_000).sealed
        }
        let early = sealed.filter { $0.minute == m }
        // Before the first A sample each series held none of minute m (B's first sample came after
        // it in the batch), so nothing of minute m may be stored yet, and none twice.
        #expect(early.count == 0, "rollups of minute m for \(servers.count) series in 20 ticks")
        // The store lacks the late part until the minute turns: history still sees it.
        let open = await aggregator.openMinutes(serverID: "s-0", metricName: "cpu")
        #expect(open.reduce(0) { $0 + $1.count } == 40, "minute m+1's 20 and minute m's 20 samples, none stored yet")
        #expect(Set(open.map(\.minute)) == [m, m + 60_000])

        // Held back, of minute m: a store that rebuilds rollups from raw rows must wait.
        #expect(aggregator.earliestHeldRollupMinute() == m)

        // The next wall-clock minute stores the late part: one rollup per series.
        let turn = await aggregator.collect(now: m + 120_500, seq: 21, sealAfter: 5_000).sealed
        #expect(turn.filter { $0.minute == m }.count == servers.count)
        // (Counted before that tick's flushes: released one tick later.)
        #expect(aggregator.earliestHeldRollupMinute() == m)
        _ = await aggregator.collect(now: m + 121_500, seq: 22, sealAfter: 5_000)
        #expect(aggregator.earliestHeldRollupMinute() == nil)
        sealed += turn
        sealed += await aggregator.sealAll()
        #expect(sealed.filter { $0.minute == m }.reduce(0) { $0 + $1.count } == sentForM, "every sample of minute m in exactly one rollup")
        #expect(sealed.filter { $0.minute == m + 60_000 }.reduce(0) { $0 + $1.count } == sentForNext)
        #expect(sealed.filter { $0.minute == m }.allSatisfy { $0.sum == 2 * Double($0.count) })
        #expect(await aggregator.openMinutes(serverID: "s-0", metricName: "cpu").isEmpty)
    }
}
