import Testing
import Foundation
@testable import MetricsCore

@Suite("Idle series expiry")
struct SeriesExpiryTests {
    typealias T = CoreTestSupport
    static let m: Int64 = 1_700_000_040_000 - 1_700_000_040_000 % 60_000  // a minute start

    @Test("the series index stays exact under random inserts, removals and renumbering")
    func seriesIndexRandomOperations() {
        var rng = T.SeededRNG(seed: 7)
        var index = SeriesIndex()
        var model: [UInt64: Set<Int32>] = [:]
        var nextID: Int32 = 0
        for _ in 0..<20_000 {
            // Few distinct hashes with shared low bits: long probe chains, duplicates, wrap-around.
            let hash = (UInt64(rng.int(0...300)) << 20 | UInt64(rng.int(0...3))) | 1
            let op = rng.int(0...9)
            if op < 5 {
                index.insert(hash: hash, id: nextID)
                model[hash, default: []].insert(nextID)
                nextID += 1
            } else if op < 8, let id = model[hash]?.randomElement(using: &rng) {
                index.remove(hash: hash, id: id)
                model[hash]!.remove(id)
            } else if let id = model[hash]?.randomElement(using: &rng) {
                index.renumber(hash: hash, id: id, to: nextID)
                model[hash]!.remove(id)
                model[hash]!.insert(nextID)
                nextID += 1
            }
        }
        #expect(index.count == model.values.reduce(0) { $0 + $1.count })
        for (hash, ids) in model {
            #expect(Set(index.all(hash: hash) { _ in true }) == ids)
        }
    }

    @Test("a series idle for the timeout is removed: its open minute sealed, its room under the cap given back, the others intact")
    func idleSeriesAreRemoved() async {
        let agg = Aggregator(configuration: .init(shardCount: 2, maxSeries: 40, idleSeriesTimeout: 10_000))
        // 40 series at the cap; the first 30 keep reporting, the last 10 stop after t = m + 1 s.
        var all: [MetricSample] = []
        for i in 0..<40 { all.append(T.sample("srv-\(i % 8)", "m\(i / 8)", Double(i), Self.m + 1_000)) }
        #expect(await agg.ingest(all).isEmpty)
        var reference: [SeriesKey: [Double]] = [:]
        for s in all { reference[s.seriesKey, default: []].append(s.value) }
        var sealed: [MinuteRollup] = []
        var expired: [SeriesKey] = []
        for tick in 1...15 {
            let now = Self.m + Int64(tick) * 1_000
            var batch: [MetricSample] = []
            for i in 0..<30 { batch.append(T.sample("srv-\(i % 8)", "m\(i / 8)", Double(i * tick), now)) }
            _ = await agg.ingest(batch)
            for s in batch { reference[s.seriesKey, default: []].append(s.value) }
            let r = await agg.collect(now: now, seq: UInt64(tick), sealAfter: 5_000)
            sealed += r.sealed
            expired += r.expired
            if tick < 11 { #expect(r.expired.isEmpty, "tick \(tick): nothing is idle for 10 s yet") }
        }
        let idleKeys = Set(all[30...].map(\.seriesKey))
        #expect(Set(expired) == idleKeys)
        #expect(expired.count == 10)
        #expect(await agg.seriesCount() == 30)
        #expect(await agg.expiredSeries() == 10)
        // Their minute reached the rollups exactly once.
        for key in idleKeys {
            let rollups = sealed.filter { $0.key == key }
            #expect(rollups.count == 1 && rollups.first?.count == 1 && rollups.first?.sum == reference[key]?.first)
        }
        // The series that stayed are whole (swap-removal moved some of them).
        let now = Self.m + 15_000
        for (key, values) in reference where !idleKeys.contains(key) {
            let snap = await agg.snapshot(of: key, now: now)
            #expect(snap?.total.count == UInt64(values.count))
            #expect(snap.map { T.sumsAgree($0.total.sum, values.reduce(0, +), scale: 1000) } == true)
            #expect(snap?.last == values.last)
        }
        for key in idleKeys { #expect(await agg.snapshot(of: key, now: now) == nil) }
        // Room under the cap came back: ten new series fit, the eleventh is refused.
        var fresh: [MetricSample] = []
        for i in 0..<11 { fresh.append(T.sample("new-\(i)", "cpu", 1, now)) }
        #expect(await agg.ingest(fresh) == [10])
        // An expired series that reports again starts afresh.
        let back = all[39]
        #expect(await agg.ingest([T.sample(back.serverID, back.metricName, 5, now)]) == [0], "the cap is full again")
    }

    @Test("no expiry without a timeout, and none before the timeout has passed since the series changed")
    func noExpiryWithoutTimeout() async {
        let never = Aggregator(configuration: .init(shardCount: 1))
        _ = await never.ingest([T.sample("a", "cpu", 1, Self.m)])
        for tick in 1...5 {
            #expect(await never.collect(now: Self.m + Int64(tick) * 3_600_000, seq: UInt64(tick)).expired.isEmpty)
        }
        let agg = Aggregator(configuration: .init(shardCount: 1, idleSeriesTimeout: 5_000))
        _ = await agg.ingest([T.sample("a", "cpu", 1, Self.m)])
        #expect(await agg.collect(now: Self.m, seq: 1).expired.isEmpty)
        #expect(await agg.collect(now: Self.m + 4_000, seq: 2).expired.isEmpty)
        _ = await agg.ingest([T.sample("a", "cpu", 2, Self.m + 4_000)])  // a sample resets the clock
        #expect(await agg.collect(now: Self.m + 6_000, seq: 3).expired.isEmpty)
        #expect(await agg.collect(now: Self.m + 8_999, seq: 4).expired.isEmpty)
        #expect(await agg.collect(now: Self.m + 11_000, seq: 5).expired == [SeriesKey(serverID: "a", metricName: "cpu")])
    }
}

@Suite("Broadcaster removals")
struct BroadcasterRemovalTests {
    typealias T = CoreTestSupport
    static let t0: Int64 = 1_700_000_000_000

    static func removedKeys(_ e: T.SSEEvent) -> [String] {
        ((e.json["removed"] as? [[String: Any]]) ?? []).map { r in
            let base = "\(r["server_id"] as? String ?? "?")/\(r["metric_name"] as? String ?? "?")"
            if let l = r["labels"] as? String { return base + "{\(l)}" }
            return base
        }.sorted()
    }

    static func populated(_ config: Broadcaster.Configuration = .init()) -> Broadcaster {
        let b = Broadcaster(configuration: config)
        b.publish(changed: [T.snapshot("web-1", "cpu", last: 10, seq: 1), T.snapshot("web-2", "cpu", last: 50, seq: 1),
                            T.snapshot("web-2", "cpu", last: 60, seq: 1, labels: "core=1"), T.snapshot("db-1", "mem", last: 70, seq: 1)],
                  seq: 1, timestamp: t0)
        return b
    }

    @Test("removed series leave the table, the fleet rollup and the member list, and subscribers are told")
    func removalReachesSubscribers() throws {
        let b = Self.populated()
        let all = try b.subscribe(filter: SubscriptionFilter(), lastEventID: nil, onReady: {})
        let memOnly = try b.subscribe(filter: try SubscriptionFilter(query: [("metrics", "mem")], tickMilliseconds: 1000), lastEventID: nil, onReady: {})
        let heat = try b.subscribe(filter: try SubscriptionFilter(query: [("metrics", "cpu"), ("heatmap", "1")], tickMilliseconds: 1000),
                                   lastEventID: nil, onReady: {})
        let focus = try b.subscribe(filter: try SubscriptionFilter(query: [("metrics", "mem"), ("focus", "web-2")], tickMilliseconds: 1000),
                                    lastEventID: nil, onReady: {})
        _ = all.next(); _ = memOnly.next(); _ = focus.next()
        let heatInit = try T.parseSSE(try #require(heat.next()))
        let view0 = try #require((heatInit.json["views"] as? [[String: Any]])?.first)
        b.publish(changed: [T.snapshot("web-1", "cpu", last: 11, seq: 2)],
                  removed: [SeriesKey(serverID: "web-2", metricName: "cpu"), SeriesKey(serverID: "web-2", metricName: "cpu", labels: "core=1"),
                            SeriesKey(serverID: "nobody", metricName: "cpu")],
                  seq: 2, timestamp: Self.t0 + 1_000)
        let e = try T.parseSSE(try #require(all.next()))
        #expect(e.rowKeys == ["web-1/cpu"])
        #expect(Self.removedKeys(e) == ["web-2/cpu", "web-2/cpu{core=1}"], "unknown keys are not reported")
        let mem = try T.parseSSE(try #require(memOnly.next()))
        #expect(Self.removedKeys(mem).isEmpty, "a filter that never showed cpu is not told about it")
        let focused = try T.parseSSE(try #require(focus.next()))
        #expect(Self.removedKeys(focused) == ["web-2/cpu", "web-2/cpu{core=1}"], "a drill-down on web-2 shows every metric of it")
        #expect(b.seriesCount == 2)
        #expect(b.removedSeries == 2)
        let cpu = try #require(b.fleet["cpu"])
        #expect(cpu.series == 1 && cpu.servers == 1 && cpu.max == 11)
        let hv = try T.parseSSE(try #require(heat.next()))
        let view = try #require((hv.json["views"] as? [[String: Any]])?.first)
        #expect(view["members"] as? [String] == ["web-1"], "the member list is sent again: web-2 left")
        #expect((view["members_version"] as? Int) != (view0["members_version"] as? Int))
        // A fresh snapshot no longer has them; a series that comes back is new again.
        let snap = try T.parseSSE(try #require(try b.subscribe(filter: SubscriptionFilter(), lastEventID: nil, onReady: {}).next()))
        #expect(snap.rowKeys == ["db-1/mem", "web-1/cpu"])
        b.publish(changed: [T.snapshot("web-2", "cpu", last: 5, seq: 3)], seq: 3, timestamp: Self.t0 + 2_000)
        #expect(b.seriesCount == 3 && b.fleet["cpu"]?.series == 2)
        // The last series of a metric leaving takes the metric with it.
        b.publish(changed: [], removed: [SeriesKey(serverID: "db-1", metricName: "mem")], seq: 4, timestamp: Self.t0 + 3_000)
        #expect(b.fleet["mem"] == nil)
        #expect(!b.catalog.contains { $0.metricName == "mem" })
        all.cancel(); memOnly.cancel(); heat.cancel(); focus.cancel()
    }

    @Test("a resume lists the removals since its event id; one from before the remembered removals gets init")
    func resumeCarriesRemovals() throws {
        let b = Self.populated(.init(removalLog: 2))
        b.publish(changed: [], removed: [SeriesKey(serverID: "web-1", metricName: "cpu")], seq: 2, timestamp: Self.t0 + 1_000)
        let resumed = try T.parseSSE(try #require(try b.subscribe(filter: SubscriptionFilter(), lastEventID: "\(b.epoch)-1", onReady: {}).next()))
        #expect(resumed.event == "update")
        #expect(Self.removedKeys(resumed) == ["web-1/cpu"])
        let later = try T.parseSSE(try #require(try b.subscribe(filter: SubscriptionFilter(), lastEventID: "\(b.epoch)-2", onReady: {}).next()))
        #expect(later.event == "update" && Self.removedKeys(later).isEmpty)
        // Two more removals push the first out of a log of two: resuming from 1 needs a snapshot now.
        b.publish(changed: [], removed: [SeriesKey(serverID: "web-2", metricName: "cpu"), SeriesKey(serverID: "db-1", metricName: "mem")],
                  seq: 3, timestamp: Self.t0 + 2_000)
        let old = try T.parseSSE(try #require(try b.subscribe(filter: SubscriptionFilter(), lastEventID: "\(b.epoch)-1", onReady: {}).next()))
        #expect(old.event == "init")
        #expect(old.rowKeys == ["web-2/cpu{core=1}"])
        let recent = try T.parseSSE(try #require(try b.subscribe(filter: SubscriptionFilter(), lastEventID: "\(b.epoch)-2", onReady: {}).next()))
        #expect(recent.event == "update" && Self.removedKeys(recent) == ["db-1/mem", "web-2/cpu"])
    }

    @Test("interval subscribers get the removals of the ticks they skipped")
    func intervalSubscribersAccumulateRemovals() throws {
        let b = Self.populated()
        let sub = try b.subscribe(filter: try SubscriptionFilter(query: [("interval", "2000")], tickMilliseconds: 1000), lastEventID: nil, onReady: {})
        _ = sub.next()
        b.publish(changed: [], removed: [SeriesKey(serverID: "web-1", metricName: "cpu")], seq: 2, timestamp: Self.t0 + 1_000)
        #expect(sub.next() == nil)
        b.publish(changed: [T.snapshot("web-2", "cpu", last: 1, seq: 3)], removed: [SeriesKey(serverID: "db-1", metricName: "mem")],
                  seq: 3, timestamp: Self.t0 + 2_000)
        let e = try T.parseSSE(try #require(sub.next()))
        #expect(Self.removedKeys(e) == ["db-1/mem", "web-1/cpu"])
        #expect(e.rowKeys == ["web-2/cpu"])
        sub.cancel()
    }

    @Test("peers' series leave when the peer says so or when idle; a local removal never drops a peer's series of the same key")
    func remoteRemovals() throws {
        let b = Broadcaster(configuration: .init(tickMilliseconds: 1000, idleRemoteSeriesMilliseconds: 20_000))
        b.submitRemote([T.snapshot("far-1", "cpu", last: 1, seq: 0), T.snapshot("far-2", "cpu", last: 2, seq: 0)], origin: "peer-a")
        b.publish(changed: [], seq: 1, timestamp: Self.t0)
        #expect(b.remoteCounters.series == 2)
        b.publish(changed: [], removed: [SeriesKey(serverID: "far-1", metricName: "cpu")], seq: 2, timestamp: Self.t0 + 1_000)
        #expect(b.remoteCounters.series == 2, "far-1 is the peer's, not ours")
        b.submitRemoteRemoval([SeriesKey(serverID: "far-1", metricName: "cpu")])
        b.publish(changed: [], seq: 3, timestamp: Self.t0 + 2_000)
        #expect(b.remoteCounters.series == 1 && b.seriesCount == 1)
        // far-2 changed at tick 1; idle removal is checked every 16 ticks, after 20 idle ticks.
        for seq in 4...31 { b.publish(changed: [], seq: UInt64(seq), timestamp: Self.t0 + Int64(seq) * 1_000) }
        #expect(b.seriesCount == 1)
        b.publish(changed: [], seq: 32, timestamp: Self.t0 + 32_000)
        #expect(b.seriesCount == 0 && b.removedSeries == 2)
    }

    @Test("the series table reuses removed numbers and keeps its metric and server lists exact")
    func seriesTableReuse() {
        var table = SeriesTable()
        func entry(_ server: String, _ metric: String) -> SeriesTable.Entry {
            .init(snapshot: T.snapshot(server, metric, last: 1, seq: 1), slot: (0, 0), remote: false)
        }
        for i in 0..<6 { table.insert(entry("s\(i % 3)", "m\(i % 2)")) }  // six distinct keys
        let gone = table.remove([SeriesKey(serverID: "s0", metricName: "m0"), SeriesKey(serverID: "s1", metricName: "m1"), SeriesKey(serverID: "zz", metricName: "m0")])
        #expect(gone.count == 2 && table.count == 4)
        #expect(table[SeriesKey(serverID: "s0", metricName: "m0")] == nil)
        #expect(Set(table.keys(server: "s0").map(\.metricName)) == ["m1"])
        let before = table.entries.count
        table.insert(entry("s9", "m0"))
        #expect(table.entries.count == before, "a freed number is reused")
        #expect(table.count == 5 && table[SeriesKey(serverID: "s9", metricName: "m0")] != nil)
        #expect(Set(table.allKeys) == Set(table.keys(metric: "m0") + table.keys(metric: "m1")))
    }
}
