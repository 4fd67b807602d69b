@testable import MetricsCore

/// A small deterministic generator so randomized tests are reproducible.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The clock value tests pass as `now`.
let testNow: Int64 = 1_700_000_000_000

/// Everything a parser produced for one stream, comparable as a whole.
struct ParseResult: Equatable, CustomStringConvertible {
    var samples: [MetricSample] = []
    var rejections: [LineRejection] = []
    var heartbeats = 0
    var skippedFields = 0
    var lineCount = 0

    mutating func absorb(_ output: inout ParseOutput) {
        samples += output.samples
        rejections += output.rejections
        heartbeats += output.heartbeats
        skippedFields += output.skippedFields
        output.removeAll()
    }

    /// (line, code) of each rejection.
    var codes: [(Int, ParseError.Code)] { rejections.map { ($0.line, $0.error.code) } }

    var description: String {
        "samples: \(samples.map(\.seriesKey.description)) rejections: \(rejections.map { "\($0.line): \($0.error)" }) heartbeats: \(heartbeats) skipped: \(skippedFields) lines: \(lineCount)"
    }
}

/// Splits `bytes` at `cuts` (sorted offsets) into separately allocated chunks.
func chunks(_ bytes: [UInt8], cuts: [Int]) -> [[UInt8]] {
    var result: [[UInt8]] = []
    var start = 0
    for cut in cuts + [bytes.count] where cut >= start {
        result.append(Array(bytes[start..<cut]))
        start = cut
    }
    return result
}

/// Random cut points giving chunks of 1...maxChunk bytes.
func randomCuts(count: Int, maxChunk: Int, using rng: inout SplitMix64) -> [Int] {
    var cuts: [Int] = []
    var at = 0
    while true {
        at += Int.random(in: 1...maxChunk, using: &rng)
        if at >= count { return cuts }
        cuts.append(at)
    }
}

/// Parses an NDJSON stream delivered as `chunks`, then finishes it.
func parseNDJSON(
    chunks: [[UInt8]], defaultServerID: String? = nil, limits: ParseLimits = ParseLimits(), now: Int64 = testNow
) -> ParseResult {
    var parser = NDJSONParser(defaultServerID: defaultServerID, limits: limits)
    var output = ParseOutput()
    var result = ParseResult()
    for chunk in chunks {
        chunk.withUnsafeBytes { parser.parse($0, now: now, into: &output) }
        result.absorb(&output)
    }
    parser.finish(now: now, into: &output)
    result.absorb(&output)
    result.lineCount = parser.lineCount
    return result
}

/// Parses NDJSON text in one chunk.
func parseNDJSON(_ text: String, defaultServerID: String? = nil, limits: ParseLimits = ParseLimits()) -> ParseResult {
    parseNDJSON(chunks: [Array(text.utf8)], defaultServerID: defaultServerID, limits: limits)
}

/// Parses a line-protocol body delivered as `chunks`, then finishes it.
func parseLineProtocol(
    chunks: [[UInt8]], precision: TimestampPrecision = .nanoseconds, defaultServerID: String? = nil,
    limits: ParseLimits = ParseLimits(), now: Int64 = testNow
) -> ParseResult {
    var parser = LineProtocolParser(precision: precision, defaultServerID: defaultServerID, limits: limits)
    var output = ParseOutput()
    var result = ParseResult()
    for chunk in chunks {
        parser.parse(chunk, now: now, into: &output)
        result.absorb(&output)
    }
    parser.finish(now: now, into: &output)
    result.absorb(&output)
    result.lineCount = parser.lineCount
    return result
}

/// Parses line-protocol text in one chunk.
func parseLineProtocol(
    _ text: String, precision: TimestampPrecision = .nanoseconds, defaultServerID: String? = nil,
    limits: ParseLimits = ParseLimits()
) -> ParseResult {
    parseLineProtocol(chunks: [Array(text.utf8)], precision: precision, defaultServerID: defaultServerID, limits: limits)
}

/// A sample with test defaults.
func sample(
    _ server: String, _ metric: String, _ value: Double, _ ts: Int64 = testNow, _ labels: String = ""
) -> MetricSample {
    MetricSample(serverID: server, metricName: metric, value: value, timestamp: ts, labels: labels)
}
