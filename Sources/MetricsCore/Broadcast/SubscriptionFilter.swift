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
    /// `interval=ms` (1...60,000 ms, rounded up to whole ticks; needs `tickMilliseconds`).
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
        return true
    }

    /// Whether a fleet rollup of `metric` is wanted.
    @inlinable
    public func wantsFleet(_ metric: String) -> Bool {
        fleet && (metrics.isEmpty || metrics.contains(metric))
    }
}
