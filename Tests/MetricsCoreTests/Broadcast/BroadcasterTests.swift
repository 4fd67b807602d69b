import Testing
import Foundation
@testable import MetricsCore

@Suite("Broadcaster and Subscription")
struct BroadcasterTests {
    typealias T = CoreTestSupport
    static let t0: Int64 = 1_700_000_000_000

    static func num(_ obj: [String: Any]?, _ key: String) -> Double? { T.number(obj, key) }

    /// Seven series over three servers and two metrics (one labelled), published as tick 1.
    static let initial: [SeriesSnapshot] = [
        T.snapshot("web-1", "cpu", last: 10, seq: 1),
        T.snapshot("web-2", "cpu", last: 50, seq: 1),
        T.snapshot("db-1", "cpu", last: 30, seq: 1),
        T.snapshot("web-1", "cpu", last: 90, seq: 1, labels: "cpu=cpu1"),
        T.snapshot("web-1", "mem", last: 100, seq: 1),
        T.snapshot("web-2", "mem", last: 5, seq: 1),
        T.snapshot("db-1", "mem", last: 70, seq: 1),
    ]
    static let allKeysSorted = ["db-1/cpu", "db-1/mem", "web-1/cpu", "web-1/cpu{cpu=cpu1}", "web-1/mem", "web-2/cpu", "web-2/mem"]

    static func populated(_ config: Broadcaster.Configuration = .init()) -> Broadcaster {
        let b = Broadcaster(configuration: config)
        b.publish(changed: initial, seq: 1, timestamp: t0)
        return b
    }

    static func firstEvent(_ b: Broadcaster, _ filter: SubscriptionFilter, lastEventID: String? = nil) throws -> T.SSEEvent {
        let sub = try b.subscribe(filter: filter, lastEventID: lastEventID, onReady: {})
        defer { sub.cancel() }
        return try T.parseSSE(try #require(sub.next()))
    }

    static func filter(_ query: [(String, String)]) throws -> SubscriptionFilter {
        try SubscriptionFilter(query: query, tickMilliseconds: 1000)
    }

    // MARK: - init snapshots

    @Test("the init event frames an SSE event with id epoch-seq, retry and the full unfiltered snapshot")
    func initEventFramingAndContents() throws {
        let b = Self.populated()
        let e = try Self.firstEvent(b, SubscriptionFilter())
        #expect(e.id == "\(b.epoch)-1")
        #expect(e.event == "init")
        #expect(e.retry == 2000)
        #expect(e.type == "init" && e.seq == 1)
        #expect(Self.num(e.json, "timestamp") == Double(Self.t0))
        #expect(Self.num(e.json, "tick_ms") == 1000)
        #expect(e.rowKeys == Self.allKeysSorted)
        #expect(!e.truncated)
        let row = try #require(e.row("web-1/cpu{cpu=cpu1}"))
        #expect(row["labels"] as? String == "cpu=cpu1")
        #expect(Self.num(row, "last") == 90)
        #expect(Self.num(row, "count") == 1 && Self.num(row, "count1m") == 1)
        #expect(Self.num(row, "seq") == 1)
        #expect(e.row("web-1/cpu")?["labels"] == nil)
        #expect(e.fleet.map { $0["metric_name"] as? String } == ["cpu", "mem"])
        let cpu = e.fleet[0]
        #expect(Self.num(cpu, "series") == 4 && Self.num(cpu, "servers") == 3)
        #expect(Self.num(cpu, "mean") == 45 && Self.num(cpu, "min") == 10 && Self.num(cpu, "max") == 90)
        #expect(Self.num(cpu, "p50") == 30 && Self.num(cpu, "p95") == 90)
        let top = try #require(cpu["top"] as? [[String: Any]])
        #expect(top.compactMap { Self.num($0, "value") } == [90, 50, 30, 10])
        #expect(top.first?["labels"] as? String == "cpu=cpu1")
    }

    @Test("init snapshots honour the filter",
          arguments: [
            ([("metrics", "cpu")], ["db-1/cpu", "web-1/cpu", "web-1/cpu{cpu=cpu1}", "web-2/cpu"], ["cpu"]),
            ([("servers", "web-1")], ["web-1/cpu", "web-1/cpu{cpu=cpu1}", "web-1/mem"], ["cpu", "mem"]),
            ([("server_prefix", "web-")], ["web-1/cpu", "web-1/cpu{cpu=cpu1}", "web-1/mem", "web-2/cpu", "web-2/mem"], ["cpu", "mem"]),
            ([("server_prefix", "db-,web-2")], ["db-1/cpu", "db-1/mem", "web-2/cpu", "web-2/mem"], ["cpu", "mem"]),
            ([("metric", "mem"), ("server", "db-1"), ("server", "web-2")], ["db-1/mem", "web-2/mem"], ["mem"]),
            ([("top", "1")], ["web-1/cpu{cpu=cpu1}", "web-1/mem"], ["cpu", "mem"]),
            ([("top", "2"), ("metrics", "mem")], ["web-1/mem", "db-1/mem"], ["mem"]),
            ([("fleet", "0")], allKeysSorted, []),
            ([("series", "0")], [], ["cpu", "mem"]),
            ([("series", "false"), ("fleet", "false")], [], []),
            ([("metrics", "nope")], [], []),
          ] as [([(String, String)], [String], [String])])
    func initSnapshotHonoursFilter(query: [(String, String)], rows: [String], fleet: [String]) throws {
        let b = Self.populated()
        let e = try Self.firstEvent(b, try Self.filter(query))
        #expect(e.event == "init")
        #expect(e.rowKeys == rows)
        #expect(e.fleet.map { $0["metric_name"] as? String ?? "?" } == fleet)
        #expect(!e.truncated)
    }

    @Test("rankings no subscriber needed during a tick (left for after its events) are complete when publish returns")
    func deferredRankingsCompleteAfterPublish() throws {
        let b = Self.populated()
        // A subscriber of cpu's top row: mem's ranking is left for after this tick's events.
        let cpuTop = try b.subscribe(filter: try Self.filter([("metrics", "cpu"), ("top", "1")]), lastEventID: nil, onReady: {})
        defer { cpuTop.cancel() }
        while cpuTop.next() != nil {}
        b.publish(changed: [T.snapshot("db-1", "mem", last: 1_000, seq: 2), T.snapshot("web-1", "cpu", last: 99, seq: 2)],
                  seq: 2, timestamp: Self.t0 + 1_000)
        let update = try T.parseSSE(try #require(cpuTop.next()))
        #expect(update.rowKeys == ["web-1/cpu"])
        // A new subscriber of mem's top row sees this tick's ranking, and the fleet rollup moved too.
        let memTop = try Self.firstEvent(b, try Self.filter([("metrics", "mem"), ("top", "1")]))
        #expect(memTop.rowKeys == ["db-1/mem"])
        #expect(T.number(memTop.fleet.first, "max") == 1_000)
        #expect(b.fleet["mem"]?.max == 1_000)
    }

    @Test("limit cuts the rows and sets truncated; a limit that fits does not")
    func limitTruncates() throws {
        let b = Self.populated()
        let cut = try Self.firstEvent(b, try Self.filter([("limit", "3")]))
        #expect(cut.rowKeys == Array(Self.allKeysSorted.prefix(3)))
        #expect(cut.truncated)
        #expect(cut.data.contains("\"truncated\":true"))
        let fits = try Self.firstEvent(b, try Self.filter([("limit", "7")]))
        #expect(fits.rowKeys.count == 7 && !fits.truncated)
        #expect(!fits.data.contains("truncated"))
        // top is per metric; limit still caps the event, in the snapshot and in every update.
        let topFilter = try Self.filter([("top", "2"), ("limit", "3")])
        let top = try Self.firstEvent(b, topFilter)
        #expect(top.rowKeys.count == 3 && top.truncated)
        let sub = try b.subscribe(filter: topFilter, lastEventID: nil, onReady: {})
        _ = sub.next()
        b.publish(changed: [T.snapshot("web-1", "cpu", last: 99, seq: 2)], seq: 2, timestamp: Self.t0 + 1_000)
        let update = try T.parseSSE(try #require(sub.next()))
        #expect(update.event == "update" && update.rowKeys.count == 3 && update.truncated)
        sub.cancel()
        // A drill-down server's series cut from the top rows by limit still comes as a drill-down
        // row, in the snapshot and in updates (mem: web-1 ranks first, db-1 second).
        let focused = try Self.filter([("metrics", "mem"), ("top", "2"), ("limit", "1"), ("focus", "db-1")])
        #expect(try Self.firstEvent(b, focused).rowKeys.contains("db-1/mem"))
        let drill = try b.subscribe(filter: focused, lastEventID: nil, onReady: {})
        _ = drill.next()
        b.publish(changed: [T.snapshot("db-1", "mem", last: 60, seq: 3), T.snapshot("web-1", "mem", last: 1e9, seq: 3)],
                  seq: 3, timestamp: Self.t0 + 2_000)
        let drilled = try T.parseSSE(try #require(drill.next()))
        #expect(drilled.rowKeys.first == "web-1/mem" && drilled.rowKeys.contains("db-1/mem"), "\(drilled.rowKeys)")
        drill.cancel()
    }

    // MARK: - updates

    @Test("after a publish, a subscriber gets an update with only the changed rows")
    func updateCarriesOnlyChangedRows() throws {
        let b = Self.populated()
        let ready = T.Recorder<Int>()
        let sub = try b.subscribe(filter: SubscriptionFilter(), lastEventID: nil, onReady: { ready.append(1) })
        let memOnly = try b.subscribe(filter: try Self.filter([("metrics", "mem")]), lastEventID: nil, onReady: {})
        _ = sub.next()
        _ = memOnly.next()
        #expect(sub.next() == nil)
        #expect(ready.count == 0, "onReady is not called for the first event")
        #expect(b.nextSequence == 2)

        b.publish(changed: [T.snapshot("web-2", "cpu", last: 55, seq: 2)], seq: 2, timestamp: Self.t0 + 1_000)
        #expect(ready.count == 1)
        #expect(b.currentSequence == 2)
        let e = try T.parseSSE(try #require(sub.next()))
        #expect(e.id == "\(b.epoch)-2" && e.event == "update" && e.type == "update" && e.seq == 2)
        #expect(e.retry == nil)
        #expect(e.rowKeys == ["web-2/cpu"])
        #expect(Self.num(e.rows.first, "last") == 55)
        #expect(Self.num(e.rows.first, "seq") == 2)
        // The fleet rollup of the changed metric is recomputed.
        let cpu = e.fleet.first { $0["metric_name"] as? String == "cpu" }
        #expect(Self.num(cpu, "mean") == (10 + 55 + 30 + 90) / 4.0)
        #expect(b.fleet["cpu"]?.mean == (10 + 55 + 30 + 90) / 4.0)
        #expect(sub.next() == nil)

        // A subscriber filtered to another metric gets an update without rows.
        let m = try T.parseSSE(try #require(memOnly.next()))
        #expect(m.event == "update" && m.rows.isEmpty)
        #expect(m.fleet.map { $0["metric_name"] as? String ?? "" } == ["mem"])

        // A new series appears in updates and in later snapshots.
        b.publish(changed: [T.snapshot("new-9", "cpu", last: 1, seq: 3)], seq: 3, timestamp: Self.t0 + 2_000)
        #expect(try T.parseSSE(try #require(sub.next())).rowKeys == ["new-9/cpu"])
        #expect(b.seriesCount == 8)
        sub.cancel()
        memOnly.cancel()
    }

    @Test("resume with a Last-Event-ID of this epoch sends an update with what changed after it; a foreign id gets init")
    func resumeWithLastEventID() throws {
        let b = Self.populated()
        b.publish(changed: [T.snapshot("web-2", "cpu", last: 51, seq: 2)], seq: 2, timestamp: Self.t0 + 1_000)
        b.publish(changed: [T.snapshot("db-1", "mem", last: 71, seq: 3)], seq: 3, timestamp: Self.t0 + 2_000)

        let after2 = try Self.firstEvent(b, SubscriptionFilter(), lastEventID: "\(b.epoch)-2")
        #expect(after2.event == "update" && after2.id == "\(b.epoch)-3")
        #expect(after2.rowKeys == ["db-1/mem"])
        #expect(after2.retry == 2000)

        let after1 = try Self.firstEvent(b, SubscriptionFilter(), lastEventID: "\(b.epoch)-1")
        #expect(after1.event == "update")
        #expect(after1.rowKeys == ["db-1/mem", "web-2/cpu"])
        #expect(Self.num(after1.row("web-2/cpu"), "last") == 51)

        let filtered = try Self.firstEvent(b, try Self.filter([("metrics", "cpu")]), lastEventID: "\(b.epoch)-1")
        #expect(filtered.rowKeys == ["web-2/cpu"])

        let current = try Self.firstEvent(b, SubscriptionFilter(), lastEventID: "\(b.epoch)-3")
        #expect(current.event == "update" && current.rows.isEmpty)

        for foreign in ["not-an-epoch-2", "\(b.epoch)-99", "\(b.epoch)-x", "garbage", ""] {
            let e = try Self.firstEvent(b, SubscriptionFilter(), lastEventID: foreign)
            #expect(e.event == "init", "Last-Event-ID \(foreign)")
            #expect(e.rowKeys.count == 7)
        }
    }

    @Test("rows an update cut at limit come in the next updates with their current values; a cut row is late, never lost")
    func rowsCutByLimitAreCarried() throws {
        let b = Self.populated()
        let sub = try b.subscribe(filter: try Self.filter([("limit", "2")]), lastEventID: nil, onReady: {})
        defer { sub.cancel() }
        _ = sub.next()
        b.publish(changed: [T.snapshot("new-1", "cpu", last: 1, seq: 2), T.snapshot("new-2", "cpu", last: 2, seq: 2),
                            T.snapshot("new-3", "cpu", last: 3, seq: 2)], seq: 2, timestamp: Self.t0 + 1_000)
        let first = try T.parseSSE(try #require(sub.next()))
        #expect(first.rowKeys.count == 2 && first.truncated)
        // The next tick changes another series: it comes, and the cut row after it.
        let cut = try #require(["new-1/cpu", "new-2/cpu", "new-3/cpu"].first { !first.rowKeys.contains($0) })
        b.publish(changed: [T.snapshot("web-1", "mem", last: 7, seq: 3)], seq: 3, timestamp: Self.t0 + 2_000)
        let second = try T.parseSSE(try #require(sub.next()))
        #expect(second.rowKeys == ["web-1/mem", cut] && !second.truncated)
        #expect(Self.num(second.row(cut), "last") == Double(cut.dropFirst(4).prefix(1))!)
        b.publish(changed: [], seq: 4, timestamp: Self.t0 + 3_000)
        let third = try T.parseSSE(try #require(sub.next()))
        #expect(third.rows.isEmpty, "carried once")
    }

    @Test("a resume of a top=N subscription sends its top rows whole, as every tick does, not only those changed since")
    func resumeSendsTopRowsWhole() throws {
        let b = Self.populated()
        b.publish(changed: [T.snapshot("web-2", "cpu", last: 51, seq: 2)], seq: 2, timestamp: Self.t0 + 1_000)
        let filter = try Self.filter([("metrics", "cpu"), ("top", "3")])
        let fresh = try Self.firstEvent(b, filter)
        let resumed = try Self.firstEvent(b, filter, lastEventID: "\(b.epoch)-2")
        #expect(resumed.event == "update")
        #expect(fresh.rowKeys.count >= 2)
        #expect(resumed.rowKeys == fresh.rowKeys)
    }

    @Test("a subscriber that never reads is coalesced at the queue bound; its next read is an init with current values; others are unaffected")
    func slowSubscriberIsCoalesced() throws {
        let b = Self.populated(.init(subscriberQueueEvents: 2))
        let slowReady = T.Recorder<Int>()
        let slow = try b.subscribe(filter: SubscriptionFilter(), lastEventID: nil, onReady: { slowReady.append(1) })
        let fast = try b.subscribe(filter: SubscriptionFilter(), lastEventID: nil, onReady: {})
        _ = fast.next()
        var fastSeen: [Int] = []
        for tick in 2...6 {
            b.publish(changed: [T.snapshot("web-1", "cpu", last: Double(tick * 100), seq: UInt64(tick))],
                      seq: UInt64(tick), timestamp: Self.t0 + Int64(tick) * 1_000)
            let e = try T.parseSSE(try #require(fast.next()))
            #expect(e.rowKeys == ["web-1/cpu"] && Self.num(e.rows.first, "last") == Double(tick * 100))
            fastSeen.append(e.seq ?? -1)
            #expect(fast.next() == nil)
            if tick == 2 { #expect(slow.backlog.events == 2 && slow.coalescedCount == 0, "init + one update fit the bound of 2") }
            if tick == 3 { #expect(slow.coalescedCount == 1 && slow.backlog.events == 0, "a third event exceeds the bound") }
        }
        #expect(fastSeen == [2, 3, 4, 5, 6])
        #expect(fast.coalescedCount == 0)
        #expect(slow.coalescedCount == 1)
        #expect(slow.backlog.events == 0 && slow.backlog.bytes == 0, "the backlog was dropped")
        #expect(slowReady.count == 5, "still told that something is waiting")

        let snap = try T.parseSSE(try #require(slow.next()))
        #expect(snap.event == "init" && snap.id == "\(b.epoch)-6")
        #expect(snap.rowKeys == Self.allKeysSorted)
        #expect(Self.num(snap.row("web-1/cpu"), "last") == 600)
        #expect(snap.retry == nil)
        #expect(slow.next() == nil)
        #expect(b.counters.coalesced == 1)

        // Back to normal updates afterwards.
        b.publish(changed: [T.snapshot("db-1", "cpu", last: 1, seq: 7)], seq: 7, timestamp: Self.t0 + 7_000)
        let u = try T.parseSSE(try #require(slow.next()))
        #expect(u.event == "update" && u.rowKeys == ["db-1/cpu"])
        slow.cancel()
        fast.cancel()
    }

    @Test("a subscriber whose queued bytes exceed the byte bound is coalesced")
    func byteBoundCoalesces() throws {
        let b = Broadcaster(configuration: .init(subscriberQueueEvents: 1_000, subscriberQueueBytes: 64 << 10))
        let sub = try b.subscribe(filter: SubscriptionFilter(), lastEventID: nil, onReady: {})
        // ~300 rows of ~300 bytes: one update is larger than 64 KiB.
        let many = (0..<300).map { T.snapshot("host-\($0)", "a_rather_long_metric_name_for_bytes", last: Double($0) + 0.123456, seq: 1) }
        b.publish(changed: many, seq: 1, timestamp: Self.t0)
        #expect(sub.coalescedCount == 1)
        let e = try T.parseSSE(try #require(sub.next()))
        #expect(e.event == "init" && e.rows.count == 300)
        sub.cancel()
    }

    @Test("a reader that keeps up gets an update larger than the byte bound as an update; a backlog over the bound is coalesced")
    func oversizedUpdateForAReaderThatKeepsUp() throws {
        let b = Broadcaster(configuration: .init(subscriberQueueEvents: 1_000, subscriberQueueBytes: 64 << 10))
        let sub = try b.subscribe(filter: SubscriptionFilter(), lastEventID: nil, onReady: {})
        _ = try #require(sub.next())  // the (empty) init: nothing queued now
        func many(_ seq: UInt64) -> [SeriesSnapshot] {
            (0..<300).map { T.snapshot("host-\($0)", "a_rather_long_metric_name_for_bytes", last: Double($0) + Double(seq), seq: seq) }
        }
        b.publish(changed: many(1), seq: 1, timestamp: Self.t0)
        #expect(sub.coalescedCount == 0)
        let e = try T.parseSSE(try #require(sub.next()))
        #expect(e.event == "update" && e.rows.count == 300)
        // Not read this time: the next one would make a backlog over the bound.
        b.publish(changed: many(2), seq: 2, timestamp: Self.t0 + 1_000)
        b.publish(changed: many(3), seq: 3, timestamp: Self.t0 + 2_000)
        #expect(sub.coalescedCount == 1)
        let f = try T.parseSSE(try #require(sub.next()))
        #expect(f.event == "init" && f.rows.count == 300)
        sub.cancel()
    }

    @Test("interval=N ticks coalesces the changes of N ticks into one update with current rows")
    func intervalCoalescesChanges() throws {
        let b = Self.populated()
        let ready = T.Recorder<Int>()
        let f = try Self.filter([("interval", "3000")])
        #expect(f.every == 3)
        let sub = try b.subscribe(filter: f, lastEventID: nil, onReady: { ready.append(1) })
        _ = sub.next()
        b.publish(changed: [T.snapshot("web-1", "cpu", last: 1, seq: 2)], seq: 2, timestamp: Self.t0 + 1_000)
        #expect(sub.next() == nil)
        b.publish(changed: [T.snapshot("web-2", "mem", last: 2, seq: 3), T.snapshot("web-1", "cpu", last: 3, seq: 3)],
                  seq: 3, timestamp: Self.t0 + 2_000)
        #expect(sub.next() == nil)
        #expect(ready.count == 0)
        b.publish(changed: [T.snapshot("db-1", "cpu", last: 4, seq: 4)], seq: 4, timestamp: Self.t0 + 3_000)
        #expect(ready.count == 1)
        let e = try T.parseSSE(try #require(sub.next()))
        #expect(e.event == "update" && e.seq == 4)
        #expect(e.rowKeys == ["db-1/cpu", "web-1/cpu", "web-2/mem"])
        #expect(Self.num(e.row("web-1/cpu"), "last") == 3, "the row is current, not the first change")
        #expect(sub.next() == nil)
        // Three quiet ticks: one (empty) update at the third.
        for t in 5...7 { b.publish(changed: [], seq: UInt64(t), timestamp: Self.t0 + Int64(t) * 1_000) }
        #expect(ready.count == 2)
        let quiet = try T.parseSSE(try #require(sub.next()))
        #expect(quiet.rows.isEmpty && quiet.seq == 7)
        sub.cancel()
    }

    @Test("cancel removes the subscriber: no more events or callbacks")
    func cancelRemovesSubscriber() throws {
        let b = Self.populated(.init(maxSubscribers: 2))
        let ready = T.Recorder<Int>()
        let a = try b.subscribe(filter: SubscriptionFilter(), lastEventID: nil, onReady: { ready.append(1) })
        let c = try b.subscribe(filter: SubscriptionFilter(), lastEventID: nil, onReady: {})
        #expect(b.subscriberCount == 2)
        #expect(throws: Broadcaster.SubscribeError.self) {
            _ = try b.subscribe(filter: SubscriptionFilter(), lastEventID: nil, onReady: {})
        }
        a.cancel()
        #expect(b.subscriberCount == 1)
        #expect(a.next() == nil, "the queued init is dropped")
        b.publish(changed: [T.snapshot("web-1", "cpu", last: 5, seq: 2)], seq: 2, timestamp: Self.t0 + 1_000)
        #expect(ready.count == 0)
        #expect(a.next() == nil)
        #expect(c.next() != nil)
        // Room for a new subscriber again.
        let d = try b.subscribe(filter: SubscriptionFilter(), lastEventID: nil, onReady: {})
        #expect(b.subscriberCount == 2)
        c.cancel()
        d.cancel()
        #expect(b.subscriberCount == 0)
    }

    // MARK: - Fleet rollups

    @Test("FleetRollup.compute matches a naive nearest-rank computation for every size 1...300")
    func fleetRollupMatchesNaive() {
        var rng = T.SeededRNG(seed: 5150)
        for n in 1...300 {
            let values: [(key: SeriesKey, value: Double)] = (0..<n).map { i in
                (SeriesKey(serverID: "srv-\(rng.int(0...40))", metricName: "m", labels: "i=\(i)"),
                 rng.chance(0.3) ? Double(rng.int(0...5)) : rng.lognormal(mu: 0, sigma: 2) - 1)
            }
            let topN = rng.int(0...12)
            let f = FleetRollup.compute(metricName: "m", values: values, topN: topN)
            let sorted = values.map(\.value).sorted()
            // Nearest rank: the k-th smallest with k = ceil(p/100 · n), in integer arithmetic.
            func rank(_ percent: Int) -> Double { sorted[max(1, (percent * n + 99) / 100) - 1] }
            #expect(f.series == n)
            #expect(f.servers == Set(values.map(\.key.serverID)).count)
            #expect(f.min == sorted.first && f.max == sorted.last)
            #expect(f.p50 == rank(50), "n=\(n)")
            #expect(f.p95 == rank(95), "n=\(n)")
            #expect(f.p99 == rank(99), "n=\(n)")
            #expect(abs(f.mean - values.reduce(0) { $0 + $1.value } / Double(n)) <= 1e-9 * max(1, sorted.map(abs).max()!))
            let wantTop = values.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.prefix(topN)
            #expect(f.top.map(\.key) == wantTop.map(\.key))
            #expect(f.top.count == min(topN, n))
        }
        let empty = FleetRollup.compute(metricName: "e", values: [], topN: 3)
        #expect(empty.series == 0 && empty.servers == 0 && empty.top.isEmpty)
        #expect(empty.mean == 0 && empty.p50 == 0 && empty.min == 0 && empty.max == 0)
    }

    @Test("the broadcaster's fleet rollups equal FleetRollup.compute over the latest values")
    func broadcasterFleetMatchesCompute() {
        let b = Self.populated()
        let cpu = Self.initial.filter { $0.key.metricName == "cpu" }.map { (key: $0.key, value: $0.last) }
        #expect(b.fleet["cpu"] == FleetRollup.compute(metricName: "cpu", values: cpu, topN: 10))
        #expect(b.fleet.keys.sorted() == ["cpu", "mem"])
    }

    // MARK: - SubscriptionFilter(query:)

    @Test("SubscriptionFilter(query:) parses every parameter and ignores unknown ones")
    func filterParsesQuery() throws {
        let f = try SubscriptionFilter(query: [
            ("metrics", "cpu,mem"), ("metric", "disk"), ("metric_name", "net,"), ("servers", "web-1,web-2"), ("server", "db-1"),
            ("server_id", "x"), ("server_prefix", "web-,db-"), ("prefix", "edge"), ("top", "5"), ("fleet", "0"),
            ("series", "yes"), ("limit", "250"), ("interval", "2500"), ("_", "123456"),
        ], tickMilliseconds: 1000)
        #expect(f.metrics == ["cpu", "mem", "disk", "net"])
        #expect(f.servers == ["web-1", "web-2", "db-1", "x"])
        #expect(f.serverPrefixes == ["web-", "db-", "edge"])
        #expect(f.top == 5 && !f.fleet && f.series && f.limit == 250 && f.every == 3)
        #expect(try SubscriptionFilter(query: [], tickMilliseconds: 1000) == SubscriptionFilter())
        #expect(try SubscriptionFilter(query: [("interval", "1000")], tickMilliseconds: 1000).every == 1)
        #expect(try SubscriptionFilter(query: [("interval", "60000")], tickMilliseconds: 1000).every == 60)
        #expect(try SubscriptionFilter(query: [("interval", "1000")], tickMilliseconds: 250).every == 4)
        #expect(try SubscriptionFilter(query: [("top", "1000"), ("limit", "100000")]).limit == 100_000)
        let d = SubscriptionFilter()
        #expect(d.fleet && d.series && d.top == nil && d.limit == 10_000 && d.every == 1)
        #expect(d.matches(SeriesKey(serverID: "any", metricName: "thing")))
        #expect(f.matches(SeriesKey(serverID: "web-1", metricName: "cpu")))
        #expect(!f.matches(SeriesKey(serverID: "x", metricName: "cpu")), "x is listed but has no listed prefix")
        #expect(!f.matches(SeriesKey(serverID: "web-1", metricName: "load")))
        #expect(f.wantsFleet("cpu") == false)
    }

    @Test("SubscriptionFilter(query:) rejects malformed values, naming the parameter",
          arguments: [
            ("top", "0"), ("top", "1001"), ("top", "abc"), ("top", ""), ("limit", "0"), ("limit", "100001"), ("limit", "-5"),
            ("fleet", "2"), ("fleet", "maybe"), ("series", ""), ("interval", "0"), ("interval", "60001"), ("interval", "1s"),
            ("metrics", "cpu,bad name"), ("metric", "quo\"te"), ("servers", "web 1"), ("server", "a\\b"),
          ])
    func filterRejectsBadValues(name: String, value: String) {
        #expect {
            _ = try SubscriptionFilter(query: [("metrics", "cpu"), (name, value)], tickMilliseconds: 1000)
        } throws: { error in
            (error as? SubscriptionFilter.InvalidQuery)?.parameter == name
        }
    }
}

@Suite("Broadcaster staging ahead of the tick")
struct BroadcasterStagingTests {
    typealias T = CoreTestSupport

    /// An event with the parts that differ between two broadcasters (the epoch in `id`, the
    /// opaque `members_version` numbers, drawn from one clock in an order that depends on
    /// dictionary iteration; whether members were sent is compared) and the row order within an
    /// event (staging changes the order rows are listed in) normalised away.
    static func normalized(_ bytes: [UInt8]) throws -> String {
        let e = try T.parseSSE(bytes)
        func strip(_ v: Any) -> Any {
            if var d = v as? [String: Any] {
                d["members_version"] = nil
                for (k, x) in d { d[k] = strip(x) }
                return d
            }
            if let a = v as? [Any] { return a.map(strip) }
            return v
        }
        var json = strip(e.json) as! [String: Any]
        for field in ["data", "removed"] {
            if let rows = json[field] as? [[String: Any]] {
                let encoded = try rows.map { String(decoding: try JSONSerialization.data(withJSONObject: $0, options: [.sortedKeys]), as: UTF8.self) }
                json[field] = encoded.sorted()
            }
        }
        let body = String(decoding: try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]), as: UTF8.self)
        return "\(e.event ?? "-") \(e.id?.split(separator: "-").last ?? "-") \(body)"
    }

    @Test("lastPublish counts the tick's series once each, staged ones included, and the staged snapshots")
    func lastPublishCounts() throws {
        let b = Broadcaster()
        let t0: Int64 = 1_700_000_000_000
        b.publish(changed: [T.snapshot("a", "m", last: 1, seq: 1), T.snapshot("b", "m", last: 2, seq: 1)], seq: 1, timestamp: t0)
        #expect(b.lastPublish.changedSeries == 2 && b.lastPublish.stagedSeries == 0)
        // Two known series and a new one staged; one known series changes again; one more comes with the tick.
        b.stage([T.snapshot("a", "m", last: 3, seq: 2), T.snapshot("b", "m", last: 4, seq: 2)])
        b.stage([T.snapshot("c", "m", last: 5, seq: 2)])
        b.publish(changed: [T.snapshot("a", "m", last: 6, seq: 2), T.snapshot("d", "m", last: 7, seq: 2)], seq: 2, timestamp: t0 + 1_000)
        #expect(b.lastPublish.changedSeries == 4)
        #expect(b.lastPublish.stagedSeries == 3)
        #expect(b.lastPublish.eventsReadyNanoseconds > 0)
        #expect(b.seriesCount == 4)
        #expect(b.fleet["m"]?.max == 7 && b.fleet["m"]?.top.first?.value == 7)
        // Nothing staged is left for the next tick.
        b.publish(changed: [], seq: 3, timestamp: t0 + 2_000)
        #expect(b.lastPublish.changedSeries == 0 && b.lastPublish.stagedSeries == 0)
    }

    @Test("lastEventTakenNanoseconds: none until a subscriber takes a queued event after the publish, then the time since it began")
    func lastEventTaken() throws {
        let b = Broadcaster()
        let t0: Int64 = 1_700_000_000_000
        let sub = try b.subscribe(filter: try SubscriptionFilter(query: [], tickMilliseconds: 1000), lastEventID: nil, onReady: {})
        defer { sub.cancel() }
        #expect(sub.next() != nil)  // the init
        b.publish(changed: [T.snapshot("a", "m", last: 1, seq: 1)], seq: 1, timestamp: t0)
        #expect(b.lastEventTakenNanoseconds == nil)
        let before = ProcessInfoLite.monotonicNanoseconds()
        #expect(sub.next() != nil)
        let taken = try #require(b.lastEventTakenNanoseconds)
        #expect(taken <= ProcessInfoLite.monotonicNanoseconds() - b.lastPublish.startedNanoseconds)
        #expect(taken >= before - b.lastPublish.startedNanoseconds)
        // The next tick: nothing taken since it began.
        b.publish(changed: [T.snapshot("a", "m", last: 2, seq: 2)], seq: 2, timestamp: t0 + 1_000)
        #expect(b.lastEventTakenNanoseconds == nil)
    }

    @Test("Staged snapshots plus the tick's rest give every subscriber the same events as the whole tick at once",
          arguments: 1...12)
    func stagedPublishEqualsPlainPublish(seed: Int) throws {
        let plain = Broadcaster(), staged = Broadcaster()
        let queries: [[(String, String)]] = [
            [], [("metrics", "m0")], [("top", "3")], [("metrics", "m1"), ("top", "2"), ("fleet", "1")],
            [("servers", "srv-1,srv-2")], [("metrics", "m0"), ("heatmap", "1"), ("series", "0")], [("every", "3")],
        ]
        var rng = T.SeededRNG(seed: UInt64(seed))
        // Seeds 9-12 use more metrics than `stage` compares by name (it hashes them beyond 16),
        // in stage calls of up to 40 series; even seeds stage some series twice in a tick.
        let metrics = seed > 8 ? 24 : 3, twice = seed % 2 == 0
        let t0: Int64 = 1_700_000_000_000
        var known = Set<SeriesKey>()  // series the broadcasters hold (published, not removed)
        var subs: [(Subscription, Subscription)] = []
        var stagedRecorded = 0, restaged = 0, stagedNew = 0, restagedNew = 0, stagedTwiceKnown = 0
        for tick in 1...60 {
            let seq = UInt64(tick)
            func snap(_ key: SeriesKey) -> SeriesSnapshot {
                T.snapshot(key.serverID, key.metricName, last: Double(rng.int(0...500)), seq: seq, labels: key.labels,
                           timestamp: t0 + Int64(tick) * 1_000 + Int64(rng.int(0...999)))
            }
            func randomKey() -> SeriesKey {
                SeriesKey(serverID: "srv-\(rng.int(0...(4 + tick / 4)))", metricName: "m\(rng.int(0...(metrics - 1)))",
                          labels: rng.chance(0.2) ? "core=1" : "")
            }
            // This tick: up to three stage calls, then the rest; some staged series change again.
            var stages: [[SeriesSnapshot]] = []
            var seen = Set<SeriesKey>()
            for _ in 0..<rng.int(0...3) {
                var batch: [SeriesSnapshot] = []
                for _ in 0..<rng.int(0...(metrics > 16 ? 40 : 12)) {
                    let k = randomKey()
                    // The aggregator stages a series once per tick; other callers may twice.
                    if seen.insert(k).inserted {
                        batch.append(snap(k))
                    } else if twice && rng.chance(0.2) {
                        batch.append(snap(k))
                        if known.contains(k) { stagedTwiceKnown += 1 }
                    }
                }
                stages.append(batch)
            }
            var rest: [SeriesSnapshot] = []
            var restKeys = Set<SeriesKey>()
            for _ in 0..<rng.int(0...12) {
                let k = rng.chance(0.3) && !seen.isEmpty ? seen.sorted()[rng.int(0...(seen.count - 1))] : randomKey()
                if restKeys.insert(k).inserted { rest.append(snap(k)) }
            }
            // Idle series leave now and then (never one changed this tick, as with the aggregator).
            let idle = known.subtracting(seen).subtracting(restKeys)
            let removed = rng.chance(0.2) ? Array(idle.sorted().prefix(2)) : []
            // The whole tick at once: staged snapshots first, replaced by the rest's newer ones.
            var whole: [SeriesKey: SeriesSnapshot] = [:]
            var order: [SeriesKey] = []
            for s in stages.joined() + rest {
                if whole[s.key] == nil { order.append(s.key) }
                whole[s.key] = s
            }
            for s in stages.joined() {
                if known.contains(s.key) { stagedRecorded += 1 } else { stagedNew += 1 }
                if restKeys.contains(s.key) { restaged += 1 }
                if restKeys.contains(s.key) && !known.contains(s.key) { restagedNew += 1 }
            }
            for batch in stages { staged.stage(batch) }
            staged.publish(changed: rest, removed: removed, seq: seq, timestamp: t0 + Int64(tick) * 1_000)
            plain.publish(changed: order.map { whole[$0]! }, removed: removed, seq: seq, timestamp: t0 + Int64(tick) * 1_000)
            known.formUnion(order)
            known.subtract(removed)
            if tick == 3 {
                for q in queries {
                    let f = try SubscriptionFilter(query: q, tickMilliseconds: 1000)
                    subs.append((try plain.subscribe(filter: f, lastEventID: nil, onReady: {}),
                                 try staged.subscribe(filter: f, lastEventID: nil, onReady: {})))
                }
            }
            for (q, (a, b)) in zip(queries, subs) {
                var ea: [String] = [], eb: [String] = []
                while let e = a.next() { ea.append(try Self.normalized(e)) }
                while let e = b.next() { eb.append(try Self.normalized(e)) }
                #expect(ea == eb, "tick \(tick), query \(q)")
            }
            #expect(plain.seriesCount == staged.seriesCount)
            #expect(plain.fleet == staged.fleet, "tick \(tick)")
        }
        // A late subscriber's snapshot agrees too.
        let late = try SubscriptionFilter(query: [("top", "5")], tickMilliseconds: 1000)
        let a = try plain.subscribe(filter: late, lastEventID: nil, onReady: {})
        let b = try staged.subscribe(filter: late, lastEventID: nil, onReady: {})
        #expect(try Self.normalized(try #require(a.next())) == (try Self.normalized(try #require(b.next()))))
        // The run staged known and new series and changed staged ones again.
        #expect(stagedRecorded > 50 && stagedNew > 10 && restaged > 10 && restagedNew > 3, "\(stagedRecorded) \(stagedNew) \(restaged) \(restagedNew)")
        if twice { #expect(stagedTwiceKnown > 3, "\(stagedTwiceKnown) known series staged twice in a tick") }
        for (a, b) in subs { a.cancel(); b.cancel() }
        a.cancel(); b.cancel()
    }
}

@Suite("Broadcaster: one event build per distinct question per tick")
struct BroadcasterSharedEventTests {
    typealias T = CoreTestSupport

    @Test("Subscribers asking the same question get exactly the events each would get alone, joined at different ticks")
    func sharedEventsEqualSolitaryEvents() throws {
        let queries: [(joinAt: Int, query: [(String, String)])] = [
            (2, [("metrics", "m0"), ("heatmap", "1"), ("top", "3")]),
            (2, [("metrics", "m0"), ("heatmap", "1"), ("top", "3")]),
            (5, [("metrics", "m0"), ("heatmap", "1"), ("top", "3")]),
            (9, [("metrics", "m0"), ("heatmap", "1"), ("top", "3")]),
            (2, [("metrics", "m1"), ("heatmap", "1")]),
            (6, [("metrics", "m1"), ("heatmap", "1")]),
            (3, []),
            (4, []),
            (2, [("metrics", "m0"), ("top", "2")]),
            (3, [("metrics", "m1")]),
        ]
        // The ticks: servers join (member lists change) and leave.
        var rng = T.SeededRNG(seed: 99)
        var ticks: [(changed: [SeriesSnapshot], removed: [SeriesKey])] = []
        var live = Set<SeriesKey>()
        for tick in 1...20 {
            var changed: [SeriesSnapshot] = []
            var keys = Set<SeriesKey>()
            for _ in 0..<rng.int(3...10) {
                let k = SeriesKey(serverID: "srv-\(rng.int(0...(2 + tick / 2)))", metricName: "m\(rng.int(0...1))")
                if keys.insert(k).inserted {
                    changed.append(T.snapshot(k.serverID, k.metricName, last: Double(rng.int(0...100)), seq: UInt64(tick),
                                              timestamp: 1_700_000_000_000 + Int64(tick) * 1_000))
                }
            }
            let removed = tick % 4 == 0 ? Array(live.subtracting(keys).sorted().prefix(1)) : []
            live.formUnion(keys)
            live.subtract(removed)
            ticks.append((changed, removed))
        }
        func run(_ who: [Int]) throws -> [Int: [String]] {
            let b = Broadcaster()
            var subs: [Int: Subscription] = [:]
            var events: [Int: [String]] = [:]
            for (t, tick) in ticks.enumerated() {
                for i in who where queries[i].joinAt == t + 1 {
                    subs[i] = try b.subscribe(filter: try SubscriptionFilter(query: queries[i].query, tickMilliseconds: 1000),
                                              lastEventID: nil, onReady: {})
                }
                b.publish(changed: tick.changed, removed: tick.removed, seq: UInt64(t + 1), timestamp: 1_700_000_000_000 + Int64(t + 1) * 1_000)
                for (i, sub) in subs { while let e = sub.next() { events[i, default: []].append(try BroadcasterStagingTests.normalized(e)) } }
            }
            for sub in subs.values { sub.cancel() }
            return events
        }
        let together = try run(Array(queries.indices))
        for i in queries.indices {
            let alone = try run([i])
            #expect(together[i] == alone[i], "subscriber \(i) \(queries[i].query)")
            #expect((alone[i]?.count ?? 0) >= 10)
        }
        // The shared events really were shared: same bytes for the two subscribers that joined together.
        #expect(together[0] == together[1])
    }
}
