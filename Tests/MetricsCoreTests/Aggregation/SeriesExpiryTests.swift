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
        // Every number is found under its hash; with the count equal, nothing else is stored.
        for (hash, ids) in model {
            for id in ids { #expect(index.find(hash: hash) { $0 == id } == id) }
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
        // (Which one is refused depends on how the two shards' folds interleave.)
        #expect(await agg.ingest(fresh).count == 1)
        // An expired series that reports again starts afresh.
        let back = all[39]
        #expect(await agg.ingest([T.sample(back.serverID, back.metricName, 5, now)]) == [0], "the cap is full again")
    }

    @Test("the label sets of a server's metric stay listed exactly (history's open minutes) while series expire and move")
    func serverMetricListsSurviveExpiry() async {
        let agg = Aggregator(configuration: .init(shardCount: 1, idleSeriesTimeout: 3_000))
        var rng = CoreTestSupport.SeededRNG(seed: 11)
        // Two servers x two metrics x 40 label sets, interleaved so swap-removal moves series across lists.
        var keys: [SeriesKey] = []
        for l in 0..<40 { for srv in ["a", "b"] { for m in ["cpu", "mem"] { keys.append(SeriesKey(serverID: srv, metricName: m, labels: "core=\(l)")) } } }
        var live = Set(keys)
        var seq: UInt64 = 0
        var now = Self.m + 1_000
        for round in 0..<6 {
            // Feed the live ones, except a random quarter that goes quiet for good.
            if round > 0 { for k in live where rng.chance(0.25) { live.remove(k) } }
            for step in 0..<5 {
                now += 1_000
                _ = await agg.ingest(live.map { T.sample($0.serverID, $0.metricName, Double(step), now, labels: $0.labels) })
                seq += 1
                _ = await agg.collect(now: now, seq: seq)
            }
            #expect(await agg.seriesCount() == live.count, "round \(round)")
            for srv in ["a", "b"] {
                for m in ["cpu", "mem"] {
                    let open = await agg.openMinutes(serverID: srv, metricName: m)
                    let expected = Set(live.filter { $0.serverID == srv && $0.metricName == m }.map(\.labels))
                    #expect(Set(open.map(\.key.labels)) == expected && open.count == expected.count, "round \(round) \(srv)/\(m)")
                }
            }
        }
        // Series that come back join their lists again.
        let back = keys.filter { !live.contains($0) }.prefix(5)
        _ = await agg.ingest(back.map { T.sample($0.serverID, $0.metricName, 1, now, labels: $0.labels) })
        for k in back {
            #expect(await agg.openMinutes(serverID: k.serverID, metricName: k.metricName, labels: k.labels).count == 1)
        }
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

    @Test("in the engine's order (maintain between ticks) a series staged for the coming tick and changed again after the maintain is not expired early")
    func noEarlyExpiryBetweenTicks() async {
        let agg = Aggregator(configuration: .init(shardCount: 1, idleSeriesTimeout: 5_000))
        let a = SeriesKey(serverID: "a", metricName: "cpu")
        _ = await agg.ingest([T.sample("a", "cpu", 1, Self.m)])
        _ = await agg.maintain(now: Self.m, lastTick: 0)
        #expect(await agg.collectChanges(now: Self.m, seq: 1).changed.map(\.key) == [a])
        // Tick 2: staged at +500, the pass over every series at +600 (the last published tick is 1),
        // a new sample at +900, collected at +1,000.
        _ = await agg.ingest([T.sample("a", "cpu", 2, Self.m + 400)])
        #expect(await agg.stage(now: Self.m + 500, seq: 2).map(\.key) == [a])
        _ = await agg.maintain(now: Self.m + 600, lastTick: 1)
        _ = await agg.ingest([T.sample("a", "cpu", 3, Self.m + 900)])
        #expect(await agg.collectChanges(now: Self.m + 1_000, seq: 2).changed.map(\.key) == [a])
        // 4.8 s after its last sample it is not idle yet (pairing +600 with tick 2 would say so) ...
        for (k, at) in [(3, 2_000), (4, 3_000), (5, 4_000), (6, 5_000), (7, 5_700)] {
            _ = await agg.maintain(now: Self.m + Int64(at), lastTick: UInt64(k - 1))
            #expect(await agg.collectChanges(now: Self.m + Int64(at) + 100, seq: UInt64(k)).expired.isEmpty, "tick \(k)")
        }
        // ... and leaves once the timeout has passed since tick 2's collect.
        var gone: [SeriesKey] = []
        for (k, at) in [(8, 6_100), (9, 7_100)] where gone.isEmpty {
            _ = await agg.maintain(now: Self.m + Int64(at), lastTick: UInt64(k - 1))
            gone = await agg.collectChanges(now: Self.m + Int64(at) + 100, seq: UInt64(k)).expired
        }
        #expect(gone == [a])
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
        b.submitRemoteRemoval([SeriesKey(serverID: "far-1", metricName: "cpu")], origin: "peer-b")
        b.publish(changed: [], seq: 3, timestamp: Self.t0 + 2_000)
        #expect(b.remoteCounters.series == 2, "peer-b's removal does not drop peer-a's series")
        b.submitRemoteRemoval([SeriesKey(serverID: "far-1", metricName: "cpu"), SeriesKey(serverID: "far-1", metricName: "cpu")], origin: "peer-a")
        b.publish(changed: [], seq: 3, timestamp: Self.t0 + 2_000)
        #expect(b.remoteCounters.series == 1 && b.seriesCount == 1)
        #expect(b.removedSeries == 1, "a key listed twice is removed (and counted) once")
        // far-2 changed at tick 1; idle removal is checked every 16 ticks, after 20 idle ticks.
        for seq in 4...31 { b.publish(changed: [], seq: UInt64(seq), timestamp: Self.t0 + Int64(seq) * 1_000) }
        #expect(b.seriesCount == 1)
        b.publish(changed: [], seq: 32, timestamp: Self.t0 + 32_000)
        #expect(b.seriesCount == 0 && b.removedSeries == 2)
    }

    static func view(_ e: T.SSEEvent) -> [String: Any]? { (e.json["views"] as? [[String: Any]])?.first }

    @Test("member versions: a metric that leaves and comes back never repeats one; losing one of a server's label sets keeps it")
    func memberVersions() throws {
        let b = Self.populated()
        let heat = try b.subscribe(filter: try SubscriptionFilter(query: [("metrics", "cpu"), ("heatmap", "1")], tickMilliseconds: 1000),
                                   lastEventID: nil, onReady: {})
        let first = try T.parseSSE(try #require(heat.next()))
        let v1 = try #require(Self.view(first)?["members_version"] as? Int)
        // web-2 loses one of its two label sets: same servers, same version, no member list resent.
        b.publish(changed: [], removed: [SeriesKey(serverID: "web-2", metricName: "cpu", labels: "core=1")], seq: 2, timestamp: Self.t0 + 1_000)
        let second = try T.parseSSE(try #require(heat.next()))
        let e2 = try #require(Self.view(second))
        #expect(e2["members_version"] as? Int == v1 && e2["members"] == nil)
        // Every cpu series leaves, then one new server reports cpu.
        b.publish(changed: [], removed: [SeriesKey(serverID: "web-1", metricName: "cpu"), SeriesKey(serverID: "web-2", metricName: "cpu")],
                  seq: 3, timestamp: Self.t0 + 2_000)
        _ = heat.next()
        b.publish(changed: [T.snapshot("new-1", "cpu", last: 5, seq: 4)], seq: 4, timestamp: Self.t0 + 3_000)
        let fourth = try T.parseSSE(try #require(heat.next()))
        let e4 = try #require(Self.view(fourth))
        #expect((e4["members_version"] as? Int).map { $0 > v1 } == true)
        #expect(e4["members"] as? [String] == ["new-1"], "the new member list is sent")
        heat.cancel()
    }

    @Test("top=N subscribers are told only about their focus servers' removals; a coalesced snapshot drops pending removals")
    func topFiltersAndCoalescedSnapshots() throws {
        let b = Self.populated(.init(subscriberQueueEvents: 2))
        let top = try b.subscribe(filter: try SubscriptionFilter(query: [("top", "5"), ("focus", "db-1")], tickMilliseconds: 1000),
                                  lastEventID: nil, onReady: {})
        _ = top.next()
        b.publish(changed: [], removed: [SeriesKey(serverID: "web-1", metricName: "cpu"), SeriesKey(serverID: "db-1", metricName: "mem")],
                  seq: 2, timestamp: Self.t0 + 1_000)
        let e = try T.parseSSE(try #require(top.next()))
        #expect(Self.removedKeys(e) == ["db-1/mem"])
        // A subscriber that stops reading is coalesced; its next event is a snapshot and no
        // removal from before it follows.
        let slow = try b.subscribe(filter: SubscriptionFilter(), lastEventID: nil, onReady: {})
        _ = slow.next()
        for seq in 3...6 {
            b.publish(changed: [], removed: seq == 5 ? [SeriesKey(serverID: "web-2", metricName: "cpu")] : [],
                      seq: UInt64(seq), timestamp: Self.t0 + Int64(seq) * 1_000)
        }
        let snap = try T.parseSSE(try #require(slow.next()))
        #expect(snap.event == "init" && !snap.rowKeys.contains("web-2/cpu"))
        b.publish(changed: [], seq: 7, timestamp: Self.t0 + 7_000)
        let after = try T.parseSSE(try #require(slow.next()))
        #expect(Self.removedKeys(after).isEmpty)
        top.cancel(); slow.cancel()
    }

    @Test("the series table reuses removed numbers and keeps its metric and server lists exact")
    func seriesTableReuse() {
        var table = SeriesTable()
        func entry(_ server: String, _ metric: String) -> SeriesTable.Entry {
            .init(snapshot: T.snapshot(server, metric, last: 1, seq: 1), slot: (0, 0), origin: 0)
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
