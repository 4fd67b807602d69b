/// Limits shared by the streaming parsers.
public struct ParseLimits: Sendable {
    /// Longest accepted line in bytes, not counting the terminating `\n` (a `\r` before it counts).
    ///
    /// A longer line is rejected once with ``ParseError/Code/lineTooLong`` and skipped up to the
    /// next `\n` without being buffered, so a parser never holds more than this many bytes of a
    /// partial line.
    public var maxLineLength: Int

    /// Server ids the request may write (the credential's policy); `nil` allows any. Lines for
    /// other ids are rejected with ``ParseError/Code/serverNotAllowed``.
    public var allowedServers: ServerIDPolicy?

    /// How far ahead of the parse clock (`now`) a sample's timestamp may be, ms; `nil`: no bound.
    /// Later ones are rejected with ``ParseError/Code/timestampOutOfRange`` (an agent with a wrong
    /// clock would otherwise park its samples in the future, where no dashboard looks).
    public var maxFutureMilliseconds: Int64?
    /// How far behind the parse clock a sample's timestamp may be, ms; `nil`: no bound. Older ones
    /// are rejected with ``ParseError/Code/timestampOutOfRange``.
    public var maxAgeMilliseconds: Int64?
    /// Most labels (tags) per sample, at most ``NameRules/maxLabels`` (32). A line with more is
    /// rejected with ``ParseError/Code/invalidLabels``.
    public var maxLabels: Int = NameRules.maxLabels
    /// Longest label (tag) value in bytes, at most ``NameRules/maxLabelValueLength`` (256). A line
    /// with a longer value is rejected with ``ParseError/Code/invalidLabels``. Label keys, like
    /// server ids and metric names, are at most ``NameRules/maxNameLength`` (200) bytes.
    public var maxLabelValueLength: Int = NameRules.maxLabelValueLength {
        didSet { maxLabelValueLength = min(max(0, maxLabelValueLength), NameRules.maxLabelValueLength) }
    }

    /// Creates limits.
    /// - Parameters:
    ///   - maxLineLength: Longest accepted line in bytes (default 65,536). Values below 1 are treated as 1.
    ///   - allowedServers: Server ids that may be written; `nil` (default) allows any.
    ///   - maxFutureMilliseconds: Latest accepted timestamp relative to the clock; `nil` (default): no bound.
    ///   - maxAgeMilliseconds: Oldest accepted timestamp relative to the clock; `nil` (default): no bound.
    public init(maxLineLength: Int = 65536, allowedServers: ServerIDPolicy? = nil,
                maxFutureMilliseconds: Int64? = nil, maxAgeMilliseconds: Int64? = nil) {
        self.maxLineLength = max(1, maxLineLength)
        self.allowedServers = allowedServers
        self.maxFutureMilliseconds = maxFutureMilliseconds
        self.maxAgeMilliseconds = maxAgeMilliseconds
    }

    /// Checks a server id against ``allowedServers``; `field` names it in the message.
    @inline(__always)
    func checkServer(_ serverID: String, field: StaticString) throws(ParseError) {
        if let policy = allowedServers, !policy.allows(serverID) {
            throw ParseError(code: .serverNotAllowed, message: "this credential may not write \(field) \(quotedName(serverID))")
        }
    }

    /// Checks the label count against ``maxLabels``.
    @inline(__always)
    func checkLabelCount(_ n: Int) throws(ParseError) {
        if n > maxLabels { throw ParseError(code: .invalidLabels, message: "\(n) labels; at most \(maxLabels) are accepted") }
    }

    /// Checks a timestamp against the window around `now`.
    @inline(__always)
    func checkTimestamp(_ ts: Int64, now: Int64) throws(ParseError) {
        guard MetricSample.validTimestamps.contains(ts) else {
            throw ParseError(code: .timestampOutOfRange, message: "timestamp \(ts) ms is out of range (its magnitude must be under 10^15 ms)")
        }
        if let f = maxFutureMilliseconds, ts > now &+ f {
            throw ParseError(code: .timestampOutOfRange, message: "timestamp \(ts) is \(Self.span(ts - now)) ahead of the server clock (limit \(Self.span(f)))")
        }
        if let a = maxAgeMilliseconds, ts < now &- a {
            throw ParseError(code: .timestampOutOfRange, message: "timestamp \(ts) is \(Self.span(now - ts)) behind the server clock (limit \(Self.span(a)))")
        }
    }

    static func span(_ ms: Int64) -> String {
        if ms < 120_000 { return "\(ms / 1000) s" }
        if ms < 7_200_000 { return "\(ms / 60_000) min" }
        if ms < 172_800_000 { return "\(ms / 3_600_000) h" }
        return "\(ms / 86_400_000) d"
    }
}

/// Why a line was rejected.
///
/// ``code`` is stable and machine-readable (it is used as a metrics label and in JSON replies);
/// ``message`` is for humans and may change between versions.
public struct ParseError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The machine-readable reason.
    public var code: Code
    /// A human-readable explanation, usually naming the field and the 1-based byte column.
    public var message: String

    /// Stable reasons for rejecting a line. The raw values never change.
    public enum Code: String, Sendable, Hashable, CaseIterable {
        /// The line is longer than ``ParseLimits/maxLineLength``.
        case lineTooLong = "line_too_long"
        /// NDJSON: the line is not one well-formed JSON object.
        case invalidJSON = "invalid_json"
        /// Line protocol: the line's structure is broken (no fields, missing `=`, unterminated string, …).
        case invalidSyntax = "invalid_syntax"
        /// A required field is absent.
        case missingField = "missing_field"
        /// A server id or metric name breaks ``NameRules``.
        case invalidName = "invalid_name"
        /// The value is not a number.
        case invalidValue = "invalid_value"
        /// The value is NaN or infinite (including overflow such as `1e400`).
        case nonFiniteValue = "non_finite_value"
        /// The timestamp is malformed or out of range.
        case invalidTimestamp = "invalid_timestamp"
        /// The labels are malformed, too many, or break ``NameRules``.
        case invalidLabels = "invalid_labels"
        /// A string is not valid UTF-8 (including lone surrogate escapes).
        case invalidUTF8 = "invalid_utf8"
        /// Line protocol: no `host` tag and no default server id.
        case missingHost = "missing_host"
        /// The request's credential may not write this server id (``ParseLimits/allowedServers``).
        case serverNotAllowed = "server_not_allowed"
        /// The timestamp is valid but too far ahead of or behind the server clock
        /// (``ParseLimits/maxFutureMilliseconds``, ``ParseLimits/maxAgeMilliseconds``).
        case timestampOutOfRange = "timestamp_out_of_range"
        /// The sample would start a new series, and the live series cap
        /// (``Aggregator/Configuration/maxSeries``) is reached. Samples of existing series are
        /// unaffected. Decided when the batch holding the line is folded, so it is reported with
        /// the acknowledgement rather than at parse time.
        case tooManySeries = "too_many_series"
    }

    /// Creates an error.
    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    /// The ``Code/tooManySeries`` rejection of a line whose `sample` (and `moreFields` more
    /// fields of the same line) would have started a series beyond the cap `maxSeries`.
    public static func tooManySeries(_ sample: MetricSample, moreFields: Int = 0, maxSeries: Int) -> ParseError {
        var what = quotedName(sample.metricName)
        if !sample.labels.isEmpty { what += " {" + quotedName(sample.labels) + "}" }
        let more = moreFields > 0 ? " (and \(moreFields) more field\(moreFields > 1 ? "s" : "") of this line)" : ""
        return ParseError(code: .tooManySeries, message:
            "new series \(what) of server \(quotedName(sample.serverID))\(more) refused: the live series limit (\(maxSeries)) is reached; samples of existing series are still accepted")
    }

    /// `code: message`.
    public var description: String { "\(code.rawValue): \(message)" }
}

/// One rejected line of a stream.
public struct LineRejection: Sendable, Hashable {
    /// 1-based line number within the stream (every line counts: blank, heartbeat, comment, rejected).
    public var line: Int
    /// Why it was rejected.
    public var error: ParseError

    /// Creates a rejection.
    public init(line: Int, error: ParseError) {
        self.line = line
        self.error = error
    }
}

/// Accumulates parser output.
///
/// Parsers only append. Callers typically keep one instance per connection, hand the samples on
/// after each chunk and call ``removeAll(keepingCapacity:)`` so the arrays' storage is reused.
public struct ParseOutput: Sendable {
    /// Accepted samples, in line order (and field order within a line-protocol line).
    public var samples: [MetricSample]
    /// The 1-based line number of each sample in ``samples`` (``SampleLines/line(of:)``): what a
    /// refusal that happens after parsing (such as the series cap, ``ParseError/Code/tooManySeries``)
    /// names. Callers that move ``samples`` out must move these with them.
    public var sampleLines: SampleLines
    /// Rejected lines, in line order.
    public var rejections: [LineRejection]
    /// NDJSON heartbeat lines (lines whose first byte is `:`).
    public var heartbeats: Int
    /// Line-protocol string fields: not numeric, so counted here instead of producing samples.
    /// Only fields of accepted lines are counted.
    public var skippedFields: Int

    /// Creates an empty output.
    public init() {
        samples = []
        sampleLines = SampleLines()
        rejections = []
        heartbeats = 0
        skippedFields = 0
    }

    /// Clears everything; by default the arrays keep their capacity for the next chunk.
    public mutating func removeAll(keepingCapacity: Bool = true) {
        samples.removeAll(keepingCapacity: keepingCapacity)
        sampleLines.removeAll()
        rejections.removeAll(keepingCapacity: keepingCapacity)
        heartbeats = 0
        skippedFields = 0
    }
}

/// The line number of every sample of a ``ParseOutput``, kept as runs: a run says that from sample
/// `first` on, each line holds `perLine` samples, starting at line `line`. A stream of good NDJSON
/// lines is one run whatever its length, and Telegraf's line protocol (the same fields on every
/// line of a measurement) a few; a new run starts where lines were skipped (rejected, blank,
/// heartbeat) or the field count changes. Recording costs the parsers a comparison per line
/// instead of a store per sample.
public struct SampleLines: Sendable {
    struct Run: Sendable, Equatable {
        var first: Int
        var line: Int
        var perLine: Int
    }
    private(set) var runs: [Run] = []
    /// Samples covered.
    public private(set) var count = 0

    /// An empty list.
    public init() {}

    /// The line and samples per line that continue the last run.
    private var nextLine = Int.min
    private var nextPerLine = 0

    /// Records that `samples` samples starting at sample index ``count`` came from line `line`.
    @inline(__always)
    public mutating func record(line: Int, samples: Int) {
        if line != nextLine || samples != nextPerLine {
            runs.append(Run(first: count, line: line, perLine: samples))
            nextPerLine = samples
        }
        nextLine = line &+ 1
        count &+= samples
    }

    /// The line of sample `index` (`0..<count`).
    public func line(of index: Int) -> Int {
        precondition(index >= 0 && index < count, "sample \(index) of \(count)")
        var lo = 0, hi = runs.count - 1
        while lo < hi {  // the last run with first <= index
            let mid = (lo + hi + 1) / 2
            if runs[mid].first <= index { lo = mid } else { hi = mid - 1 }
        }
        let r = runs[lo]
        return r.line + (index - r.first) / r.perLine
    }

    /// Every sample's line, in order (for tests and diagnostics).
    public var all: [Int] { (0..<count).map(line(of:)) }

    /// Forgets everything.
    public mutating func removeAll() {
        runs.removeAll(keepingCapacity: true)
        count = 0
        nextLine = .min
        nextPerLine = 0
    }
}
