import Testing
import Foundation
@testable import MetricsCore

@Suite("Fleet views (heatmap, counts, history) and the dashboard's filter parameters")
struct FleetViewTests {
    typealias T = CoreTestSupport
    static let t0: Int64 = 1_700_000_000_000

    static func filter(_ query: [(String, String)]) throws -> SubscriptionFilter {
        try SubscriptionFilter(query: query, tickMilliseconds: 1000)
    }

    static func views(_ e: T.SSEEvent) -> [[String: Any]] { (e.json["views"] as? [[String: Any]]) ?? [] }

    /// The next event of a subscription, parsed.
    static func next(_ sub: Subscription) throws -> T.SSEEvent {
        guard let bytes = sub.next() else { throw Missing.event }
        return try T.parseSSE(bytes)
    }

    /// The first event of a new subscription with `query`.
    static func first(_ b: Broadcaster, _ query: [(String, String)]) throws -> T.SSEEvent {
        let sub = try b.subscribe(filter: try filter(query), lastEventID: nil, onReady: {})
        defer { sub.cancel() }
        return try next(sub)
    }

    /// The first fleet view of an event.
    static func view(_ e: T.SSEEvent) throws -> [String: Any] {
        guard let v = views(e).first else { throw Missing.view }
        return v
    }

    enum Missing: Error { case event, view }

    static func heat(_ v: [String: Any]) throws -> [UInt8] {
        let s = try #require(v["heat"] as? String)
        return [UInt8](try #require(Data(base64Encoded: s)))
    }

    /// Publishes `values` (server → cpu value) as one tick, each server with one series.
    static func tick(_ b: Broadcaster, seq: UInt64, _ values: [(String, Double)], metric: String = "cpu", labels: String = "") {
        b.publish(changed: values.map { T.snapshot($0.0, metric, last: $0.1, seq: seq, labels: labels) }, seq: seq,
                  timestamp: t0 + Int64(seq) * 1000)
    }

    @Test("a view counts servers, thresholds and the distribution over each server's worst series")
    func countsAndDistribution() throws {
        let b = Broadcaster()
        // web-2 has two label sets: its worst (highest) one counts.
        b.publish(changed: [
            T.snapshot("web-1", "cpu", last: 10, seq: 1), T.snapshot("web-2", "cpu", last: 20, seq: 1, labels: "core=0"),
            T.snapshot("web-2", "cpu", last: 95, seq: 1, labels: "core=1"), T.snapshot("web-10", "cpu", last: 85, seq: 1),
            T.snapshot("db-1", "cpu", last: 50, seq: 1), T.snapshot("db-1", "mem", last: 1, seq: 1),
        ], seq: 1, timestamp: Self.t0)
        let sub = try b.subscribe(filter: try Self.filter([("metrics", "cpu"), ("heatmap", "1"), ("warn", "80"), ("crit", "90"), ("series", "0")]),
                                  lastEventID: nil, onReady: {})
        defer { sub.cancel() }
        let e = try Self.next(sub)
        let v = try Self.view(e)
        #expect(v["metric_name"] as? String == "cpu")
        #expect(T.number(v, "servers") == 4 && T.number(v, "reporting") == 4 && T.number(v, "stale") == 0)
        #expect(T.number(v, "over_warn") == 2 && T.number(v, "over_crit") == 1)
        // Worst values: 10, 95, 85, 50 → sorted 10 50 85 95; nearest rank.
        #expect(T.number(v, "p50") == 50 && T.number(v, "p95") == 95 && T.number(v, "max") == 95 && T.number(v, "min") == 10)
        #expect(T.number(v, "mean") == 60)
        // Natural id order: db-1, web-1, web-2, web-10; auto scale from min to max.
        #expect(v["members"] as? [String] == ["db-1", "web-1", "web-2", "web-10"])
        #expect(T.number(v, "lo") == 10 && T.number(v, "hi") == 95)
        let h = try Self.heat(v)
        #expect(h.count == 4 && h[1] == 2 && h[2] == 255)
        #expect(h[0] == 2 + UInt8(((50.0 - 10) / 85 * 253).rounded()))
        #expect(T.number(v, "group") == 1 && T.number(v, "cells") == 4)
    }

    @Test("servers without a change within the stale threshold are stale: grey cells, not in the distribution")
    func staleness() throws {
        let b = Broadcaster(configuration: .init(tickMilliseconds: 1000, staleMilliseconds: 3000))
        Self.tick(b, seq: 1, [("a", 10), ("b", 20), ("c", 99)])
        for seq in UInt64(2)...5 { Self.tick(b, seq: seq, [("a", 11), ("b", 21)]) }  // c goes quiet after tick 1
        let e = try Self.first(b, [("heatmap", "1"), ("series", "0")])
        let v = try Self.view(e)
        #expect(T.number(v, "servers") == 3 && T.number(v, "reporting") == 2 && T.number(v, "stale") == 1)
        #expect(T.number(v, "max") == 21, "the stale server's 99 is not in the distribution")
        #expect(try Self.heat(v)[2] == 1)
        // A client may ask for a longer threshold.
        let e2 = try Self.first(b, [("heatmap", "1"), ("stale", "10")])
        #expect(T.number(Self.views(e2).first, "stale") == 0)
    }

    @Test("worst=low ranks and colours the lowest values as the bad ones")
    func lowIsWorse() throws {
        let b = Broadcaster()
        Self.tick(b, seq: 1, [("a", 50), ("b", 5), ("c", 80)], metric: "free")
        let sub = try b.subscribe(filter: try Self.filter([("metrics", "free"), ("heatmap", "1"), ("worst", "low"), ("warn", "20"),
                                                           ("crit", "6"), ("top", "2")]), lastEventID: nil, onReady: {})
        let e = try Self.next(sub)
        #expect(e.rowKeys == ["b/free", "a/free"])
        let v = try Self.view(e)
        #expect(T.number(v, "over_warn") == 1 && T.number(v, "over_crit") == 1)
    }

    @Test("a fleet larger than the cell budget is grouped; each cell shows its group's worst server")
    func grouping() throws {
        let b = Broadcaster()
        Self.tick(b, seq: 1, (1...10).map { ("n\($0)", Double($0)) })
        let e = try Self.first(b, [("heatmap", "1"), ("cells", "4"), ("scale", "0,253")])
        let v = try Self.view(e)
        #expect(T.number(v, "group") == 3 && T.number(v, "cells") == 4)
        #expect(v["members"] as? [String] == ["n1", "n4", "n7", "n10"])
        // Fixed scale 0...253: level = value + 2.
        #expect(try Self.heat(v) == [5, 8, 11, 12])
    }

    @Test("prefix and label filters narrow the view; members are resent only when the server set changes")
    func filtersAndMembersVersion() throws {
        let b = Broadcaster()
        b.publish(changed: [T.snapshot("web-1", "cpu", last: 1, seq: 1, labels: "dc=eu"), T.snapshot("web-2", "cpu", last: 2, seq: 1, labels: "dc=us"),
                            T.snapshot("db-1", "cpu", last: 3, seq: 1, labels: "dc=eu")], seq: 1, timestamp: Self.t0)
        let sub = try b.subscribe(filter: try Self.filter([("heatmap", "1"), ("labels", "dc=eu"), ("series", "0")]), lastEventID: nil, onReady: {})
        defer { sub.cancel() }
        let first = try Self.view(try Self.next(sub))
        #expect(first["members"] as? [String] == ["db-1", "web-1"])
        Self.tick(b, seq: 2, [("web-1", 5)], labels: "dc=eu")
        let second = try Self.view(try Self.next(sub))
        #expect(second["members"] == nil, "unchanged member list is not resent")
        #expect(T.number(second, "members_version") == T.number(first, "members_version"))
        #expect(T.number(second, "max") == 5)
        Self.tick(b, seq: 3, [("edge-1", 7)], labels: "dc=eu")
        let third = try Self.view(try Self.next(sub))
        #expect(third["members"] as? [String] == ["db-1", "edge-1", "web-1"])
        let prefixed = try Self.first(b, [("heatmap", "1"), ("server_prefix", "web-")])
        #expect(Self.views(prefixed).first?["members"] as? [String] == ["web-1", "web-2"])
        #expect(prefixed.rowKeys == ["web-1/cpu{dc=eu}", "web-2/cpu{dc=us}"])
    }

    @Test("the init event carries the unfiltered distribution history; filtered views start empty")
    func history() throws {
        let b = Broadcaster(configuration: .init(fleetHistoryPoints: 3))
        for seq in UInt64(1)...5 { Self.tick(b, seq: seq, [("a", Double(seq)), ("b", 10)]) }
        let e = try Self.first(b, [("heatmap", "1")])
        let h = try #require(Self.views(e).first?["history"] as? [String: [Any]])
        #expect((h["ts"] as? [NSNumber])?.map(\.int64Value) == [3, 4, 5].map { Self.t0 + $0 * 1000 })
        #expect((h["max"] as? [NSNumber])?.map(\.doubleValue) == [10, 10, 10])
        #expect((h["p50"] as? [NSNumber])?.map(\.doubleValue) == [3, 4, 5])
        #expect((h["reporting"] as? [NSNumber])?.map(\.doubleValue) == [2, 2, 2])
        let f = try Self.first(b, [("heatmap", "1"), ("server_prefix", "a")])
        #expect(Self.views(f).first?["history"] == nil)
    }

    @Test("a tick's history point, left for after its events, is the tick's own: staging the next tick's changes first completes it")
    func historyPointDeferredButExact() throws {
        let b = Broadcaster(configuration: .init(fleetHistoryPoints: 4))
        for seq in UInt64(1)...3 { Self.tick(b, seq: seq, [("a", Double(seq)), ("b", 10)]) }
        // The next tick's changes arrive before anything completed tick 3's point (as at the
        // engine's stage points): the point still holds tick 3's values, not the staged ones.
        b.stage([T.snapshot("a", "cpu", last: 500, seq: 4)])
        let e = try Self.first(b, [("heatmap", "1")])
        let h = try #require(Self.views(e).first?["history"] as? [String: [Any]])
        #expect((h["ts"] as? [NSNumber])?.map(\.int64Value) == [1, 2, 3].map { Self.t0 + $0 * 1000 })
        #expect((h["max"] as? [NSNumber])?.map(\.doubleValue) == [10, 10, 10])
        // finishPublish is idempotent, and the next publish adds exactly one point.
        b.finishPublish()
        b.finishPublish()
        Self.tick(b, seq: 4, [("b", 20)])
        b.finishPublish()
        let h2 = try #require(Self.views(try Self.first(b, [("heatmap", "1")])).first?["history"] as? [String: [Any]])
        #expect((h2["ts"] as? [NSNumber])?.map(\.int64Value) == [1, 2, 3, 4].map { Self.t0 + $0 * 1000 })
        #expect((h2["max"] as? [NSNumber])?.map(\.doubleValue) == [10, 10, 10, 500])
    }

    @Test("focus servers get every changed series, on top of a top-N selection of another metric")
    func focus() throws {
        let b = Broadcaster()
        b.publish(changed: [T.snapshot("a", "cpu", last: 90, seq: 1), T.snapshot("b", "cpu", last: 10, seq: 1),
                            T.snapshot("b", "mem", last: 5, seq: 1)], seq: 1, timestamp: Self.t0)
        let sub = try b.subscribe(filter: try Self.filter([("metrics", "cpu"), ("top", "1"), ("focus", "b")]), lastEventID: nil, onReady: {})
        defer { sub.cancel() }
        #expect(try Self.next(sub).rowKeys == ["a/cpu", "b/cpu", "b/mem"])
        b.publish(changed: [T.snapshot("b", "mem", last: 6, seq: 2)], seq: 2, timestamp: Self.t0 + 1000)
        #expect(try Self.next(sub).rowKeys == ["a/cpu", "b/mem"], "top rows every tick, focus rows when changed")
        b.publish(changed: [T.snapshot("a", "cpu", last: 91, seq: 3)], seq: 3, timestamp: Self.t0 + 2000)
        #expect(try Self.next(sub).rowKeys == ["a/cpu"])
    }

    @Test("the new query parameters parse, and bad values are refused naming the parameter")
    func parameters() throws {
        let f = try Self.filter([("heatmap", "1"), ("warn", "80.5"), ("crit", "-1e3"), ("worst", "low"), ("stale", "45"), ("cells", "500"),
                                 ("scale", "0,100"), ("labels", "dc=eu,role=web"), ("focus", "a,b,a")])
        #expect(f.heatmap && f.warn == 80.5 && f.crit == -1000 && f.lowIsWorse && f.staleMilliseconds == 45_000 && f.cells == 500)
        #expect(f.scale == 0...100 && f.labelPairs == ["dc=eu", "role=web"] && f.focus == ["a", "b"])
        #expect(f.matches(SeriesKey(serverID: "x", metricName: "m", labels: "dc=eu,rack=1,role=web")))
        #expect(!f.matches(SeriesKey(serverID: "x", metricName: "m", labels: "dc=eu")))
        #expect(!f.matches(SeriesKey(serverID: "x", metricName: "m", labels: "dc=euw,role=web")))
        for (k, v) in [("warn", "nan"), ("crit", "x"), ("worst", "up"), ("stale", "0"), ("cells", "20001"), ("scale", "5,5"),
                       ("scale", "1"), ("labels", "novalue"), ("labels", "=x"), ("focus", "bad id"),
                       ("focus", (1...33).map { "s\($0)" }.joined(separator: ","))] {
            #expect(throws: SubscriptionFilter.InvalidQuery.self, "\(k)=\(v)") { try Self.filter([(k, v)]) }
        }
    }

    @Test("base64 matches Foundation's, and ids sort naturally")
    func helpers() {
        for n in 0...7 {
            let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 * 97 + 13) }
            var w = JSONWriter()
            w.base64(bytes)
            #expect(String(decoding: w.bytes, as: UTF8.self) == "\"" + Data(bytes).base64EncodedString() + "\"")
        }
        let ids = ["web-10", "web-2", "web-1", "db-01", "db-1a", "web-02", "a", "web-", "web-1b"]
        #expect(ids.sorted(by: naturalLess) == ["a", "db-01", "db-1a", "web-", "web-1", "web-1b", "web-02", "web-2", "web-10"])
        #expect(!naturalLess("x", "x"))
    }

    @Test("the catalog lists metrics with series and server counts")
    func catalog() {
        let b = Broadcaster()
        b.publish(changed: [T.snapshot("a", "cpu", last: 1, seq: 1), T.snapshot("a", "cpu", last: 1, seq: 1, labels: "core=1"),
                            T.snapshot("b", "cpu", last: 1, seq: 1), T.snapshot("b", "mem", last: 1, seq: 1)], seq: 1, timestamp: Self.t0)
        let c = b.catalog
        #expect(c.map(\.metricName) == ["cpu", "mem"])
        #expect(c[0].series == 3 && c[0].servers == 2 && c[1].series == 1 && c[1].servers == 1)
    }

    @Test("JSONWriter numbers: short decimals and integers by the fast path, everything parses back exactly")
    func numbers() {
        func text(_ d: Double) -> String { var w = JSONWriter(); w.number(d); return String(decoding: w.bytes, as: UTF8.self) }
        let expected: [(Double, String)] = [(0, "0"), (-0.0, "0"), (42, "42"), (-7, "-7"), (42.5, "42.5"), (0.125, "0.125"),
                                            (-0.5, "-0.5"), (99.99, "99.99"), (0.000005, "0.000005"), (1e14, "100000000000000"),
                                            (123456.789012, "123456.789012"), (.nan, "null"), (.infinity, "null")]
        for (d, s) in expected { #expect(text(d) == s, "\(d)") }
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<20_000 {
            let d: Double
            switch Int.random(in: 0..<4, using: &rng) {
            case 0: d = Double(Int.random(in: -1_000_000...1_000_000, using: &rng)) / 100
            case 1: d = Double.random(in: -1e9...1e9, using: &rng)
            case 2: d = Double(bitPattern: UInt64.random(in: 0...UInt64.max, using: &rng))
            default: d = Double(Int64.random(in: Int64.min...Int64.max, using: &rng))
            }
            guard d.isFinite else { continue }
            #expect(Double(text(d)) == d, "\(d) -> \(text(d))")
        }
        for (i, s) in [(Int64.min, "-9223372036854775808"), (Int64.max, "9223372036854775807"), (0, "0"), (10, "10"), (-100, "-100")] {
            var w = JSONWriter(); w.integer(i)
            #expect(String(decoding: w.bytes, as: UTF8.self) == s)
        }
    }

    @Test("series merged from peers join the next tick everywhere; origin=local subscribers never see them")
    func remoteSeries() throws {
        let b = Broadcaster()
        b.publish(changed: [T.snapshot("a", "cpu", last: 1, seq: 1)], seq: 1, timestamp: Self.t0)
        let local = try b.subscribe(filter: try Self.filter([("origin", "local")]), lastEventID: nil, onReady: {})
        let all = try b.subscribe(filter: SubscriptionFilter(), lastEventID: nil, onReady: {})
        defer { local.cancel(); all.cancel() }
        _ = try Self.next(local); _ = try Self.next(all)
        b.submitRemote([T.snapshot("b", "cpu", last: 9, seq: 0)], origin: "http://peer:4002")
        b.publish(changed: [], seq: 2, timestamp: Self.t0 + 1000)
        let e = try Self.next(all)
        #expect(e.rowKeys == ["b/cpu"])
        #expect(T.number(e.row("b/cpu"), "seq") == 2, "stamped with the local tick")
        #expect(try Self.next(local).rowKeys == [])
        #expect(try Self.first(b, [("origin", "local")]).rowKeys == ["a/cpu"])
        #expect(try Self.first(b, []).rowKeys == ["a/cpu", "b/cpu"])
        #expect(b.fleet["cpu"]?.series == 2 && b.fleet["cpu"]?.max == 9)
        #expect(b.remoteCounters.series == 1 && b.remoteCounters.received == 1)
        // The agent moves here: its series becomes local again.
        b.publish(changed: [T.snapshot("b", "cpu", last: 3, seq: 3)], seq: 3, timestamp: Self.t0 + 2000)
        #expect(try Self.first(b, [("origin", "local")]).rowKeys == ["a/cpu", "b/cpu"])
        #expect(b.remoteCounters.series == 0)
    }

    @Test("a new series arriving in one tick from this instance and from a peer gets one entry, this instance's")
    func newSeriesFromBothSidesInOneTick() throws {
        let b = Broadcaster()
        b.publish(changed: [T.snapshot("a", "cpu", last: 1, seq: 1)], seq: 1, timestamp: Self.t0)
        b.submitRemote([T.snapshot("moved", "cpu", last: 9, seq: 0)], origin: "http://peer:4002")
        b.publish(changed: [T.snapshot("moved", "cpu", last: 5, seq: 2)], seq: 2, timestamp: Self.t0 + 1000)
        #expect(b.seriesCount == 2)
        #expect(try Self.first(b, []).rowKeys == ["a/cpu", "moved/cpu"])
        #expect(T.number(try Self.first(b, []).row("moved/cpu"), "last") == 5)
        #expect(b.fleet["cpu"]?.series == 2 && b.fleet["cpu"]?.max == 5)
        #expect(b.remoteCounters.series == 0)
        // Later values flow to the one entry, and it leaves whole.
        b.publish(changed: [T.snapshot("moved", "cpu", last: 7, seq: 3)], seq: 3, timestamp: Self.t0 + 2000)
        #expect(b.fleet["cpu"]?.max == 7 && b.fleet["cpu"]?.series == 2)
        b.publish(changed: [], removed: [SeriesKey(serverID: "moved", metricName: "cpu")], seq: 4, timestamp: Self.t0 + 3000)
        #expect(b.seriesCount == 1 && b.fleet["cpu"]?.series == 1 && b.fleet["cpu"]?.max == 1)
        #expect(try Self.first(b, []).rowKeys == ["a/cpu"])
    }
}
