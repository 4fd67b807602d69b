import Testing
@testable import MetricsCore

@Suite("Aggregator staging ahead of the tick")
struct AggregatorStagingTests {
    typealias T = CoreTestSupport

    /// Orders snapshots and rollups so that two collects can be compared as sets.
    static func sorted(_ snaps: [SeriesSnapshot]) -> [SeriesSnapshot] { snaps.sorted { $0.key < $1.key } }
    static func sorted(_ rollups: [MinuteRollup]) -> [MinuteRollup] {
        rollups.sorted { ($0.key, $0.minute) < ($1.key, $1.minute) }
    }

    /// One random batch of tick `tick`: mostly current samples, some up to 90 s late (sealed
    /// minutes, late parts); servers come and go (expiry after 4 s idle). Whole values, so sums of
    /// parts are exact whatever the grouping.
    static func batch(_ rng: inout T.SeededRNG, tick: Int, now: Int64) -> [MetricSample] {
        (0..<rng.int(0...40)).map { _ in
            let late = rng.chance(0.1) ? Int64(rng.int(1_000...90_000)) : 0
            let server = tick < 100 ? rng.int(0...11) : rng.int(6...17)
            return T.sample("srv-\(server)", "m\(rng.int(0...2))", Double(rng.int(-100...1_000)),
                            now - Int64(rng.int(0...999)) - late, labels: rng.chance(0.2) ? "core=1" : "")
        }
    }

    @Test("Staging changes nothing a tick returns: same snapshots, rollups and expiries, over minute turns, late samples and idle series")
    func stagedTicksEqualPlainTicks() async {
        // Two aggregators fed the same samples; one stages between batches as the engine does.
        let config = Aggregator.Configuration(shardCount: 2, idleSeriesTimeout: 4_000)
        let plain = Aggregator(configuration: config)
        let staged = Aggregator(configuration: config)
        var rng = T.SeededRNG(seed: 42)
        var stagedTotal = 0
        var collectedTotal = 0
        var handedOver: [SeriesKey: SeriesSnapshot] = [:]
        for tick in 1...200 {
            let now = T.baseMinute + Int64(tick) * 1_000
            // A few batches per tick; a staging point after each but the last.
            let batches = rng.int(1...4)
            for b in 0..<batches {
                let batch = Self.batch(&rng, tick: tick, now: now)
                await plain.ingest(batch)
                await staged.ingest(batch)
                if b < batches - 1 {
                    let snaps = await staged.stage(now: now, seq: UInt64(tick))
                    #expect(snaps.allSatisfy { handedOver[$0.key] == nil }, "tick \(tick): a series staged twice")
                    for snap in snaps { handedOver[snap.key] = snap }
                    stagedTotal += snaps.count
                }
            }
            let a = await plain.collect(now: now, seq: UInt64(tick))
            let s = await staged.collect(now: now, seq: UInt64(tick))
            // What was handed over, updated by what the tick's collect returns (the newer snapshot).
            #expect(Set(s.changed.map(\.key)).count == s.changed.count, "tick \(tick): a series twice")
            for snap in s.changed { handedOver[snap.key] = snap }
            #expect(Self.sorted(Array(handedOver.values)) == Self.sorted(a.changed), "tick \(tick): changed series")
            collectedTotal += s.changed.count
            handedOver = [:]
            #expect(Self.sorted(s.sealed) == Self.sorted(a.sealed), "tick \(tick): sealed rollups")
            #expect(s.expired.sorted() == a.expired.sorted(), "tick \(tick): expired series")
            #expect(plain.earliestHeldRollupMinute() == staged.earliestHeldRollupMinute(), "tick \(tick): held minute")
            #expect(s.changed.allSatisfy { $0.changedSeq == UInt64(tick) })
        }
        // The run exercised staging, and ticks also collected what changed after the last stage.
        #expect(stagedTotal > 1_000)
        #expect(collectedTotal > 1_000)
        let plainAll = Self.sorted(await plain.snapshotAll(now: T.baseMinute + 201_000))
        let stagedAll = Self.sorted(await staged.snapshotAll(now: T.baseMinute + 201_000))
        #expect(plainAll == stagedAll)
    }

    /// Per (series, minute): everything stored of it, merged (a minute may be stored in parts).
    static func merged(_ rollups: [MinuteRollup]) -> [String: (count: UInt64, sum: Double, min: Double, max: Double, p50: Double?, p99: Double?)] {
        var byKey: [String: MinuteRollup] = [:]
        for r in rollups {
            let k = "\(r.key.serverID)/\(r.key.metricName)/\(r.key.labels)@\(r.minute)"
            if byKey[k] == nil { byKey[k] = r } else { byKey[k]!.sketch.merge(r.sketch) }
        }
        return byKey.mapValues { ($0.count, $0.sum, $0.min, $0.max, $0.sketch.quantile(0.5), $0.sketch.quantile(0.99)) }
    }

    @Test("The engine's order (the pass over every series between ticks, stage points, the tick's collectChanges) gives what plain collects give: the same changes and expiries each tick, and the same rollups stored")
    func maintainBetweenTicksEqualsPlainCollect() async {
        let config = Aggregator.Configuration(shardCount: 2, idleSeriesTimeout: 4_000)
        let plain = Aggregator(configuration: config)
        let engineOrder = Aggregator(configuration: config)
        var rng = T.SeededRNG(seed: 7)
        var plainStored: [MinuteRollup] = []
        var engineStored: [MinuteRollup] = []
        var expiredTotal = 0
        var handedOver: [SeriesKey: SeriesSnapshot] = [:]
        for tick in 1...200 {
            let now = T.baseMinute + Int64(tick) * 1_000
            let batches = rng.int(1...4)
            // The pass over every series comes before the batch numbered `maintainAt` (after all of
            // them when it equals `batches`), as the engine's first stage point falls anywhere.
            // (`lastTick: tick`: this test's clock stands still within a tick, so every change
            // stamped with it happens by `now`; the engine, whose clock runs, passes the last
            // published tick.)
            let maintainAt = rng.int(0...batches)
            for b in 0..<batches {
                if b == maintainAt { engineStored += await engineOrder.maintain(now: now, lastTick: UInt64(tick)) }
                let batch = Self.batch(&rng, tick: tick, now: now)
                await plain.ingest(batch)
                await engineOrder.ingest(batch)
                if rng.chance(0.5) {
                    for snap in await engineOrder.stage(now: now, seq: UInt64(tick)) { handedOver[snap.key] = snap }
                }
            }
            if maintainAt == batches { engineStored += await engineOrder.maintain(now: now, lastTick: UInt64(tick)) }
            let a = await plain.collect(now: now, seq: UInt64(tick))
            let e = await engineOrder.collectChanges(now: now, seq: UInt64(tick))
            for snap in e.changed { handedOver[snap.key] = snap }
            #expect(Self.sorted(Array(handedOver.values)) == Self.sorted(a.changed), "tick \(tick): changed series")
            handedOver = [:]
            #expect(e.expired.sorted() == a.expired.sorted(), "tick \(tick): expired series")
            expiredTotal += e.expired.count
            plainStored += a.sealed
            engineStored += e.sealed
        }
        plainStored += await plain.sealAll()
        engineStored += await engineOrder.sealAll()
        #expect(expiredTotal > 0)
        #expect(plainStored.count > 100)
        let p = Self.merged(plainStored), q = Self.merged(engineStored)
        #expect(p.count == q.count)
        for (k, v) in p {
            let w = q[k]
            #expect(w?.count == v.count && w?.sum == v.sum && w?.min == v.min && w?.max == v.max && w?.p50 == v.p50 && w?.p99 == v.p99,
                    "\(k): \(v) stored, \(String(describing: w)) in the engine's order")
        }
    }

    @Test("A series staged and changed again is staged once and collected again with its newest value; the others are not collected again")
    func restagedSeriesCollectedAgainWithNewestValue() async {
        let agg = Aggregator(configuration: .init(shardCount: 1))
        let now = T.baseMinute + 10_000
        await agg.ingest([T.sample("a", "cpu", 1, now - 900), T.sample("b", "cpu", 5, now - 900)])
        let first = await agg.stage(now: now - 500, seq: 7)
        #expect(first.map(\.key.serverID).sorted() == ["a", "b"])
        #expect(first.allSatisfy { $0.changedSeq == 7 })
        // Staging again with nothing new hands over nothing.
        #expect(await agg.stage(now: now - 400, seq: 7).isEmpty)
        await agg.ingest([T.sample("a", "cpu", 2, now - 300)])
        // "a" was staged already: it waits for the tick rather than being snapshotted again.
        #expect(await agg.stage(now: now - 200, seq: 7).isEmpty)
        let r = await agg.collect(now: now, seq: 8)
        #expect(r.changed.count == 1)
        let a = r.changed.first
        #expect(a?.key.serverID == "a" && a?.last == 2 && a?.total.count == 2 && a?.changedSeq == 8)
        // Nothing is left staged for the next tick, and the next tick stages afresh.
        #expect(await agg.collect(now: now + 1_000, seq: 9).changed.isEmpty)
        await agg.ingest([T.sample("b", "cpu", 6, now + 1_100)])
        #expect(await agg.stage(now: now + 1_200, seq: 10).map(\.last) == [6])
    }
}
