/// Count, sum, min, max and a quantile sketch of one series over one minute.
///
/// Rollups are mergeable: merging two rollups of the same series and minute gives the rollup
/// of all their samples, so late data and several writers combine without double counting
/// as long as each sample is folded into exactly one rollup that reaches the store.
public struct MinuteRollup: Sendable, Equatable {
    /// The series.
    public var key: SeriesKey
    /// Start of the minute, epoch milliseconds (a multiple of 60,000).
    public var minute: Int64
    /// The sketch also carries the exact count, sum, min and max.
    public var sketch: QuantileSketch

    /// Creates an empty rollup.
    public init(key: SeriesKey, minute: Int64, sketch: QuantileSketch = QuantileSketch()) {
        self.key = key
        self.minute = minute
        self.sketch = sketch
    }

    /// Number of samples.
    public var count: UInt64 { sketch.count }
    /// Sum of the values.
    public var sum: Double { sketch.sum }
    /// Smallest value.
    public var min: Double { sketch.min }
    /// Largest value.
    public var max: Double { sketch.max }
    /// Mean of the values (0 when empty).
    public var mean: Double { count == 0 ? 0 : sum / Double(count) }

    /// The minute (epoch ms) that contains `timestamp`.
    @inlinable
    public static func minute(of timestamp: Int64) -> Int64 {
        let m = timestamp / 60_000
        return (timestamp < 0 && timestamp % 60_000 != 0 ? m - 1 : m) * 60_000
    }
}

/// One point of a history answer.
public struct HistoryPoint: Sendable, Equatable, Codable {
    /// Start of the bucket, epoch milliseconds.
    public var timestamp: Int64
    /// Samples in the bucket.
    public var count: UInt64
    /// Mean value.
    public var avg: Double
    /// Smallest value.
    public var min: Double
    /// Largest value.
    public var max: Double
    /// Median (sketch estimate, relative error ≤ α).
    public var p50: Double
    /// 95th percentile (sketch estimate).
    public var p95: Double
    /// 99th percentile (sketch estimate).
    public var p99: Double

    /// Creates a point from a rollup.
    public init(_ rollup: MinuteRollup) {
        timestamp = rollup.minute
        count = rollup.count
        avg = rollup.mean
        min = rollup.min
        max = rollup.max
        p50 = rollup.sketch.quantile(0.5) ?? 0
        p95 = rollup.sketch.quantile(0.95) ?? 0
        p99 = rollup.sketch.quantile(0.99) ?? 0
    }

    /// Creates a point from its fields.
    public init(timestamp: Int64, count: UInt64, avg: Double, min: Double, max: Double, p50: Double, p95: Double, p99: Double) {
        self.timestamp = timestamp
        self.count = count
        self.avg = avg
        self.min = min
        self.max = max
        self.p50 = p50
        self.p95 = p95
        self.p99 = p99
    }
}

/// What `/api/history` asks a store for.
public struct HistoryQuery: Sendable, Equatable {
    /// The server id.
    public var serverID: String
    /// The metric name.
    public var metricName: String
    /// Canonical labels of one series, or `nil` to merge every label set of the server's metric.
    public var labels: String?
    /// Inclusive start, epoch milliseconds.
    public var from: Int64
    /// Exclusive end, epoch milliseconds.
    public var to: Int64
    /// Most points to return; when the range holds more minutes, consecutive minutes are merged
    /// into wider buckets (a whole number of minutes each).
    public var maxPoints: Int
    /// Minutes still open in the live aggregator (not yet sealed into the store) for this
    /// server and metric; stores merge them into the answer so history reaches "now".
    public var openRollups: [MinuteRollup] = []
    /// Whether raw samples may answer the query instead of minute rollups.
    public var raw: RawPolicy

    /// When a store answers with raw samples.
    public enum RawPolicy: String, Sendable, Equatable {
        /// Always minute rollups.
        case never
        /// Raw samples when the range is at most ``HistoryQuery/rawRangeLimit`` and holds at
        /// most `maxPoints` samples (and the store keeps raw samples); else rollups.
        case auto
        /// Raw samples when the range holds at most `maxPoints` of them, whatever its length; else rollups.
        case always
    }

    /// The longest range `auto` answers with raw samples: 30 minutes.
    public static let rawRangeLimit: Int64 = 30 * 60_000

    /// Whether a store that keeps raw samples should try them first.
    public var wantsRaw: Bool {
        switch raw {
        case .never: return false
        case .auto:
            let (length, overflow) = to.subtractingReportingOverflow(from)
            return !overflow && length <= Self.rawRangeLimit
        case .always: return true
        }
    }

    /// Creates a query; `from` and `to` are clamped to ``MetricSample/validTimestamps`` (stores
    /// compute with them: minute numbers, widths, the range's length).
    public init(serverID: String, metricName: String, labels: String? = nil, from: Int64, to: Int64, maxPoints: Int = 1_440,
                raw: RawPolicy = .auto) {
        self.serverID = serverID
        self.metricName = metricName
        self.labels = labels
        self.from = MetricSample.clampedTimestamp(from)
        self.to = MetricSample.clampedTimestamp(to)
        self.maxPoints = maxPoints
        self.raw = raw
    }
}

/// One raw sample in a history answer.
public struct RawPoint: Sendable, Equatable, Codable {
    /// Sample time, epoch milliseconds.
    public var timestamp: Int64
    /// The value.
    public var value: Double
    /// Canonical labels of the sample's series.
    public var labels: String

    /// Creates a raw point.
    public init(timestamp: Int64, value: Double, labels: String = "") {
        self.timestamp = timestamp
        self.value = value
        self.labels = labels
    }
}

/// A history answer: minute-rollup buckets in time order and the bucket width used, or raw samples.
public struct HistoryResult: Sendable, Equatable {
    /// Bucket width in milliseconds (60,000 × n); 0 when the answer is raw samples.
    public var resolution: Int64
    /// Points in ascending time order; empty buckets are omitted. Empty when ``raw`` is set.
    public var points: [HistoryPoint]
    /// Raw samples in ascending time order, when the store answered with them.
    public var raw: [RawPoint]?

    /// Creates a rollup result.
    public init(resolution: Int64, points: [HistoryPoint]) {
        self.resolution = resolution
        self.points = points
        self.raw = nil
    }

    /// Creates a raw result.
    public init(raw: [RawPoint]) {
        self.resolution = 0
        self.points = []
        self.raw = raw
    }

    /// Merges minute rollups (any order, any label sets) into at most `maxPoints` buckets.
    public static func bucketing(_ rollups: [MinuteRollup], from: Int64, to: Int64, maxPoints: Int) -> HistoryResult {
        let from = MetricSample.clampedTimestamp(from), to = MetricSample.clampedTimestamp(to)
        let origin = MinuteRollup.minute(of: from)
        // Count the minutes from `origin` (the minute holding `from`), which is where buckets start:
        // an unaligned `from` touches one more minute than `to - from` suggests.
        let minutes = Swift.max(1, (to - origin + 59_999) / 60_000)
        let perBucket = Swift.max(1, (minutes + Int64(Swift.max(1, maxPoints)) - 1) / Int64(Swift.max(1, maxPoints)))
        let width = perBucket * 60_000
        var buckets: [Int64: QuantileSketch] = [:]
        for r in rollups where r.minute >= origin && r.minute < to {
            let b = origin + (r.minute - origin) / width * width
            buckets[b, default: QuantileSketch(relativeAccuracy: r.sketch.relativeAccuracy)].merge(r.sketch)
        }
        let points = buckets.sorted { $0.key < $1.key }.map { (ts, sk) in
            HistoryPoint(MinuteRollup(key: SeriesKey(serverID: "", metricName: ""), minute: ts, sketch: sk))
        }
        return HistoryResult(resolution: width, points: points)
    }
}
