/// One numeric observation from one server.
///
/// `serverID` and `metricName` are validated by ``NameRules`` before a sample is built by
/// the parsers; `value` is always finite; `timestamp` is milliseconds since the Unix epoch.
/// `labels` is the canonical label string (see ``Labels``): sorted `key=value` pairs joined
/// by commas, empty when the sample has no labels. Labels are part of a series' identity
/// (``SeriesKey``), so `cpu_usage{cpu=cpu0}` and `cpu_usage{cpu=cpu1}` are two series.
public struct MetricSample: Sendable, Hashable {
    /// The source of the sample (the agent's host), e.g. `web-01`.
    public var serverID: String
    /// The metric, e.g. `cpu_usage` or (from line protocol) `cpu_usage_user`.
    public var metricName: String
    /// A finite value.
    public var value: Double
    /// Milliseconds since the Unix epoch.
    public var timestamp: Int64
    /// Canonical labels (``Labels/canonical(_:)``), `""` when there are none.
    public var labels: String

    /// The timestamps the parsers accept and the aggregator works with, epoch ms: under 10¹⁵ in
    /// magnitude (about ±31,700 years; NDJSON takes `0 < ts < 10¹⁵`, line protocol also earlier
    /// times). Window and minute arithmetic near `Int64.min`/`max` would overflow; the aggregator
    /// clamps a timestamp outside this range to it, so an embedder's bad sample cannot trap.
    public static let validTimestamps: ClosedRange<Int64> = -999_999_999_999_999...999_999_999_999_999

    /// `timestamp` moved into ``validTimestamps`` if outside it.
    @inlinable
    public static func clampedTimestamp(_ timestamp: Int64) -> Int64 {
        min(max(timestamp, validTimestamps.lowerBound), validTimestamps.upperBound)
    }

    /// Creates a sample. The initializer does not validate; parsers do.
    public init(serverID: String, metricName: String, value: Double, timestamp: Int64, labels: String = "") {
        self.serverID = serverID
        self.metricName = metricName
        self.value = value
        self.timestamp = timestamp
        self.labels = labels
    }

    /// The series this sample belongs to.
    @inlinable
    public var seriesKey: SeriesKey {
        SeriesKey(serverID: serverID, metricName: metricName, labels: labels)
    }
}

/// The identity of a series: server, metric and canonical labels.
public struct SeriesKey: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The server id.
    public var serverID: String
    /// The metric name.
    public var metricName: String
    /// Canonical labels, `""` when none.
    public var labels: String

    /// Creates a series key.
    @inlinable
    public init(serverID: String, metricName: String, labels: String = "") {
        self.serverID = serverID
        self.metricName = metricName
        self.labels = labels
    }

    public static func < (lhs: SeriesKey, rhs: SeriesKey) -> Bool {
        if lhs.serverID != rhs.serverID { return lhs.serverID < rhs.serverID }
        if lhs.metricName != rhs.metricName { return lhs.metricName < rhs.metricName }
        return lhs.labels < rhs.labels
    }

    /// Whether `sample` belongs to this series (no key is built).
    @inlinable
    public func matches(_ sample: MetricSample) -> Bool {
        serverID == sample.serverID && metricName == sample.metricName && labels == sample.labels
    }

    public var description: String {
        labels.isEmpty ? "\(serverID)/\(metricName)" : "\(serverID)/\(metricName){\(labels)}"
    }
}

/// Helpers for the canonical label string used in ``MetricSample/labels``.
public enum Labels {
    /// Builds the canonical form: pairs sorted by key, `key=value` joined by `,`.
    /// Keys are unique; when a key repeats, the last value wins.
    public static func canonical(_ pairs: [(String, String)]) -> String {
        if pairs.isEmpty { return "" }
        var dict: [String: String] = [:]
        dict.reserveCapacity(pairs.count)
        for (k, v) in pairs { dict[k] = v }
        return dict.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
    }

    /// Splits a canonical label string back into pairs (keys and values never contain `,` or
    /// `=` unescaped because ``NameRules`` forbids them).
    public static func pairs(_ canonical: String) -> [(String, String)] {
        if canonical.isEmpty { return [] }
        return canonical.split(separator: ",").map { (part: Substring) -> (String, String) in
            let eq = part.firstIndex(of: "=")!
            return (String(part[..<eq]), String(part[part.index(after: eq)...]))
        }
    }
}
