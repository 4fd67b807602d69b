/// What one dashboard client asked to receive.
///
/// Built from the SSE query string (see ``init(query:)``). An empty filter means "everything",
/// bounded by ``limit``.
public struct SubscriptionFilter: Sendable, Equatable {
    /// Only these metrics (exact names); empty = all.
    public var metrics: Set<String> = []
    /// Only these servers (exact ids); empty = all.
    public var servers: Set<String> = []
    /// Only servers whose id starts with one of these prefixes; empty = no prefix filter.
    public var serverPrefixes: [String] = []
    /// When set, only the `top` highest series (by latest value) of each selected metric are sent.
    public var top: Int? = nil
    /// Whether fleet rollups are included. Default `true`.
    public var fleet: Bool = true
    /// Whether per-series rows are included. Default `true` (`series=0` asks for fleet data only).
    public var series: Bool = true
    /// Most series rows in one event; more are cut and the event says `"truncated":true`. Default 10,000.
    public var limit: Int = 10_000
    /// Send an update only every `every` ticks (changes in between are coalesced). Default 1.
    public var every: Int = 1
    /// Only series whose labels hold every one of these `key=value` pairs; empty = no label filter.
    public var labelPairs: [String] = []
    /// Servers whose series are always sent (every metric, every change), whatever the other
    /// filters and `top` select: the servers a dashboard has open in a drill-down. At most 32.
    public var focus: [String] = []
    /// Whether each event carries a ``FleetView`` (heatmap and counts) per selected metric.
    public var heatmap: Bool = false
    /// Threshold at which a server counts as "warning" in fleet views (`nil` = none).
    public var warn: Double? = nil
    /// Threshold at which a server counts as "critical" in fleet views (`nil` = none).
    public var crit: Double? = nil
    /// Whether low values are the bad ones: `top` then lists the lowest series, thresholds count
    /// values at or below them, and a server's heatmap cell shows its lowest series. Default `false`.
    public var lowIsWorse: Bool = false
    /// A server is stale in fleet views after this long without a change (ms); `nil` = the
    /// broadcaster's default.
    public var staleMilliseconds: Int? = nil
    /// Most heatmap cells; larger fleets are grouped, several servers per cell. Default 10,000.
    public var cells: Int = 10_000
    /// Fixed heatmap scale (`scale=lo,hi`); `nil` = each tick's minimum and maximum.
    public var scale: ClosedRange<Double>? = nil
    /// Only series of this instance's own agents, not those merged from peers (`origin=local`):
    /// what peers subscribe to, so merged series are never echoed back.
    public var localOnly: Bool = false

    /// The unfiltered default.
    public init() {}

    /// Errors found in a query string.
    public struct InvalidQuery: Error, Sendable, Equatable, CustomStringConvertible {
        /// The parameter at fault.
        public var parameter: String
        /// Why it was refused.
        public var reason: String
        public var description: String { "invalid query parameter '\(parameter)': \(reason)" }
    }

    /// Parses query parameters:
    /// `metrics=a,b` (or repeated `metric=`), `servers=x,y` (or `server=`), `server_prefix=web-`,
    /// `top=N` (1...1000), `fleet=0|1`, `series=0|1`, `limit=N` (1...100000),
    /// `interval=ms` (1...60,000 ms, rounded up to whole ticks; needs `tickMilliseconds`),
    /// `labels=k=v,k2=v2`, `focus=x,y` (at most 32), `heatmap=0|1`, `warn=x`, `crit=x`,
    /// `worst=high|low`, `stale=seconds` (1...86,400), `cells=N` (1...20,000), `scale=lo,hi`.
    /// Unknown parameters are ignored (browsers add cache busters).
    /// - Throws: ``InvalidQuery`` for malformed values.
    public init(query: [(String, String)], tickMilliseconds: Int = 1000) throws {
        func list(_ v: String) -> [String] { v.split(separator: ",").map(String.init).filter { !$0.isEmpty } }
        func int(_ name: String, _ v: String, _ range: ClosedRange<Int>) throws -> Int {
            guard let n = Int(v), range.contains(n) else {
                throw InvalidQuery(parameter: name, reason: "expected an integer in \(range.lowerBound)...\(range.upperBound)")
            }
            return n
        }
        func bool(_ name: String, _ v: String) throws -> Bool {
            switch v {
            case "1", "true", "yes": return true
            case "0", "false", "no": return false
            default: throw InvalidQuery(parameter: name, reason: "expected 0 or 1")
            }
        }
        func number(_ name: String, _ v: String) throws -> Double {
            guard let d = Double(v), d.isFinite else { throw InvalidQuery(parameter: name, reason: "expected a finite number") }
            return d
        }
        for (k, v) in query {
            switch k {
            case "metrics", "metric", "metric_name":
                for m in list(v) {
                    guard NameRules.isValidName(m) else { throw InvalidQuery(parameter: k, reason: "invalid metric name") }
                    metrics.insert(m)
                }
            case "servers", "server", "server_id":
                for s in list(v) {
                    guard NameRules.isValidName(s) else { throw InvalidQuery(parameter: k, reason: "invalid server id") }
                    servers.insert(s)
                }
            case "server_prefix", "prefix":
                serverPrefixes.append(contentsOf: list(v))
            case "top": top = try int(k, v, 1...1000)
            case "fleet": fleet = try bool(k, v)
            case "series": series = try bool(k, v)
            case "limit": limit = try int(k, v, 1...100_000)
            case "interval":
                let ms = try int(k, v, 1...60_000)
                every = max(1, (ms + tickMilliseconds - 1) / max(1, tickMilliseconds))
            case "labels", "label":
                for pair in list(v) {
                    guard let eq = pair.firstIndex(of: "="), eq != pair.startIndex, pair.index(after: eq) != pair.endIndex else {
                        throw InvalidQuery(parameter: k, reason: "expected key=value pairs")
                    }
                    labelPairs.append(pair)
                }
            case "focus":
                for s in list(v) {
                    guard NameRules.isValidName(s) else { throw InvalidQuery(parameter: k, reason: "invalid server id") }
                    if !focus.contains(s) { focus.append(s) }
                }
                guard focus.count <= 32 else { throw InvalidQuery(parameter: k, reason: "at most 32 servers") }
            case "heatmap": heatmap = try bool(k, v)
            case "warn": warn = try number(k, v)
            case "crit": crit = try number(k, v)
            case "worst":
                switch v {
                case "high": lowIsWorse = false
                case "low": lowIsWorse = true
                default: throw InvalidQuery(parameter: k, reason: "expected high or low")
                }
            case "stale": staleMilliseconds = try int(k, v, 1...86_400) * 1000
            case "cells": cells = try int(k, v, 1...20_000)
            case "origin":
                switch v {
                case "local": localOnly = true
                case "any": localOnly = false
                default: throw InvalidQuery(parameter: k, reason: "expected local or any")
                }
            case "scale":
                let parts = v.split(separator: ",", omittingEmptySubsequences: false)
                guard parts.count == 2, let lo = Double(parts[0]), let hi = Double(parts[1]), lo.isFinite, hi.isFinite, lo < hi else {
                    throw InvalidQuery(parameter: k, reason: "expected lo,hi with lo < hi")
                }
                scale = lo...hi
            default: continue
            }
        }
    }

    /// Whether the series passes the metric and server filters (not `top`, which needs the fleet).
    @inlinable
    public func matches(_ key: SeriesKey) -> Bool {
        if !metrics.isEmpty && !metrics.contains(key.metricName) { return false }
        if !servers.isEmpty && !servers.contains(key.serverID) { return false }
        if !serverPrefixes.isEmpty && !serverPrefixes.contains(where: { key.serverID.hasPrefix($0) }) { return false }
        if !labelPairs.isEmpty && !matchesLabels(key.labels) { return false }
        return true
    }

    /// Whether a server id passes the server and prefix filters.
    @inlinable
    public func matchesServer(_ id: String) -> Bool {
        if !servers.isEmpty && !servers.contains(id) { return false }
        if !serverPrefixes.isEmpty && !serverPrefixes.contains(where: { id.hasPrefix($0) }) { return false }
        return true
    }

    /// Whether a canonical label string holds every pair of ``labelPairs`` (exact `key=value` items).
    public func matchesLabels(_ labels: String) -> Bool {
        if labelPairs.isEmpty { return true }
        if labels.isEmpty { return false }
        let items = labels.split(separator: ",")
        return labelPairs.allSatisfy { pair in items.contains { $0 == pair } }
    }

    /// Whether a fleet rollup of `metric` is wanted.
    @inlinable
    public func wantsFleet(_ metric: String) -> Bool {
        fleet && (metrics.isEmpty || metrics.contains(metric))
    }
}
