/// A read-only view of one series' live aggregates, as the dashboard shows it.
public struct SeriesSnapshot: Sendable, Equatable {
    /// The series.
    public var key: SeriesKey
    /// Latest value (by sample timestamp).
    public var last: Double
    /// Timestamp of the latest value, epoch ms.
    public var lastTimestamp: Int64
    /// Everything since the series appeared on this instance.
    public var total: WindowStats
    /// The last minute (10 s resolution).
    public var window1m: WindowStats
    /// The last five minutes (1 min resolution).
    public var window5m: WindowStats
    /// Median over the current and previous minute (sketch estimate), if any samples.
    public var p50: Double?
    /// 95th percentile over the current and previous minute.
    public var p95: Double?
    /// 99th percentile over the current and previous minute.
    public var p99: Double?
    /// Tick sequence number of the last change.
    public var changedSeq: UInt64

    /// Creates a snapshot from its fields.
    public init(key: SeriesKey, last: Double, lastTimestamp: Int64, total: WindowStats, window1m: WindowStats,
                window5m: WindowStats, p50: Double?, p95: Double?, p99: Double?, changedSeq: UInt64) {
        self.key = key
        self.last = last
        self.lastTimestamp = lastTimestamp
        self.total = total
        self.window1m = window1m
        self.window5m = window5m
        self.p50 = p50
        self.p95 = p95
        self.p99 = p99
        self.changedSeq = changedSeq
    }
}

/// Fleet-wide statistics of one metric across every series that reports it.
public struct FleetRollup: Sendable, Equatable {
    /// The metric.
    public var metricName: String
    /// Series reporting the metric.
    public var series: Int
    /// Distinct servers reporting the metric.
    public var servers: Int
    /// Mean of the series' latest values.
    public var mean: Double
    /// Median of the latest values (exact).
    public var p50: Double
    /// 95th percentile of the latest values (exact, nearest rank).
    public var p95: Double
    /// 99th percentile of the latest values (exact, nearest rank).
    public var p99: Double
    /// Smallest latest value.
    public var min: Double
    /// Largest latest value.
    public var max: Double
    /// The series with the highest latest values, highest first.
    public var top: [(key: SeriesKey, value: Double)]

    public static func == (a: FleetRollup, b: FleetRollup) -> Bool {
        a.metricName == b.metricName && a.series == b.series && a.servers == b.servers && a.mean == b.mean
            && a.p50 == b.p50 && a.p95 == b.p95 && a.p99 == b.p99 && a.min == b.min && a.max == b.max
            && a.top.map(\.key) == b.top.map(\.key) && a.top.map(\.value) == b.top.map(\.value)
    }

    /// Computes the rollup of one metric from its series' latest values.
    /// - Parameters:
    ///   - metricName: the metric.
    ///   - values: latest value per series.
    ///   - topN: how many of the highest series to list.
    public static func compute(metricName: String, values: [(key: SeriesKey, value: Double)], topN: Int) -> FleetRollup {
        var sorted = values.map(\.value)
        sorted.sort()
        func rank(_ q: Double) -> Double {
            guard !sorted.isEmpty else { return 0 }
            let i = Swift.max(0, Swift.min(sorted.count - 1, Int((q * Double(sorted.count)).rounded(.up)) - 1))
            return sorted[i]
        }
        let mean = sorted.isEmpty ? 0 : sorted.reduce(0, +) / Double(sorted.count)
        var servers = Set<String>()
        for v in values { servers.insert(v.key.serverID) }
        let top = topN <= 0 ? [] : Array(values.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.prefix(topN))
        return FleetRollup(metricName: metricName, series: values.count, servers: servers.count, mean: mean,
                           p50: rank(0.5), p95: rank(0.95), p99: rank(0.99),
                           min: sorted.first ?? 0, max: sorted.last ?? 0, top: top)
    }
}
