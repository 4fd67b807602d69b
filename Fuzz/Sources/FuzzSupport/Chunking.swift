import MetricsCore

/// What a parser produced, in a form two runs can be compared by.
public struct Parsed: Equatable {
    public var samples: [MetricSample] = []
    public var sampleLines: [Int] = []
    public var rejections: [String] = []
    public var heartbeats = 0
    public var skippedFields = 0
}

/// Splits `body` into chunks at positions derived from `seed` (the fuzzer controls both), so one
/// input exercises one whole-body parse and one arbitrarily split parse.
public func chunks(_ body: ArraySlice<UInt8>, seed: UInt8) -> [ArraySlice<UInt8>] {
    var out: [ArraySlice<UInt8>] = []
    var i = body.startIndex
    var state = UInt32(seed) &* 2_654_435_761 | 1
    while i < body.endIndex {
        state ^= state << 13; state ^= state >> 17; state ^= state << 5
        let n = Int(state % 97) + (seed & 1 == 0 ? 1 : 0)
        let end = min(body.endIndex, i + max(1, n))
        out.append(body[i..<end])
        i = end
    }
    return out
}

/// Parses `parts` with `parse`/`finish` closures and collects everything the parser emitted.
public func collect(_ parts: [ArraySlice<UInt8>], parse: (UnsafeRawBufferPointer, inout ParseOutput) -> Void,
                    finish: (inout ParseOutput) -> Void) -> Parsed {
    var out = ParseOutput()
    for p in parts { p.withUnsafeBytes { parse($0, &out) } }
    finish(&out)
    var r = Parsed()
    r.samples = out.samples
    r.sampleLines = out.sampleLines.all
    r.rejections = out.rejections.map { "\($0.line):\($0.error.code.rawValue)" }
    r.heartbeats = out.heartbeats
    r.skippedFields = out.skippedFields
    return r
}

/// The properties every parse must have, whatever the input.
public func checkInvariants(_ r: Parsed, lineLimit: Int) {
    for s in r.samples {
        precondition(s.value.isFinite, "non-finite value accepted: \(s)")
        precondition(NameRules.isValidName(s.serverID) && NameRules.isValidName(s.metricName), "invalid name accepted: \(s)")
        precondition(s.serverID.utf8.count <= NameRules.maxNameLength, "over-long server id accepted")
    }
    precondition(r.sampleLines.count == r.samples.count, "\(r.samples.count) samples but \(r.sampleLines.count) line numbers")
    for (a, b) in zip(r.sampleLines, r.sampleLines.dropFirst()) { precondition(a >= 1 && a <= b, "sample lines out of order: \(r.sampleLines)") }
    var last = 0
    for x in r.rejections {
        let line = Int(x.split(separator: ":")[0])!
        precondition(line >= last && line >= 1, "rejections out of line order: \(r.rejections)")
        last = line
    }
}

/// One parser input as the parser targets decode it: byte 0 seeds the chunking; byte 1 picks the
/// line limit (bits 0–1), a default server id (bit 2), a server-id policy (bit 3), the timestamp
/// precision for line protocol (bits 4–5), a ±10-minute timestamp window (bit 6) and an 8-byte
/// label value limit (bit 7); the rest is the stream.
public struct ParserCase {
    public let seed: UInt8
    public let body: ArraySlice<UInt8>
    public let limits: ParseLimits
    public let defaultServerID: String?
    public let precision: TimestampPrecision
    public static let now: Int64 = 1_700_000_000_000

    public init?(_ data: UnsafePointer<UInt8>?, _ size: Int) {
        guard let data, size >= 2 else { return nil }
        let bytes = Array(UnsafeBufferPointer(start: data, count: size))
        let mode = bytes[1]
        seed = bytes[0]
        body = bytes[2...]
        let policy: ServerIDPolicy? = mode & 8 != 0 ? try! ServerIDPolicy(patterns: ["web-*", "db-01"]) : nil
        let window: Int64? = mode & 0x40 != 0 ? 600_000 : nil
        var limits = ParseLimits(maxLineLength: [64, 256, 4096, 65_536][Int(mode & 3)], allowedServers: policy,
                                 maxFutureMilliseconds: window, maxAgeMilliseconds: window)
        if mode & 0x80 != 0 { limits.maxLabelValueLength = 8 }
        self.limits = limits
        defaultServerID = mode & 4 != 0 ? "web-default" : nil
        precision = [.nanoseconds, .microseconds, .milliseconds, .seconds][Int((mode >> 4) & 3)]
    }

    /// The oracle: `run` parses the parts it is given; the whole body and an arbitrarily split body
    /// must give the same result, and that result must keep every invariant.
    public func check(_ run: ([ArraySlice<UInt8>]) -> Parsed) {
        let whole = run([body])
        checkInvariants(whole, lineLimit: limits.maxLineLength)
        if let policy = limits.allowedServers {
            for s in whole.samples { precondition(policy.allows(s.serverID), "policy bypassed: \(s.serverID)") }
        }
        if let w = limits.maxFutureMilliseconds {
            for s in whole.samples { precondition(abs(s.timestamp - Self.now) <= w, "window bypassed: \(s.timestamp)") }
        }
        if limits.maxLabelValueLength < NameRules.maxLabelValueLength {
            for s in whole.samples {
                for pair in s.labels.split(separator: ",", omittingEmptySubsequences: true) {
                    let value = pair.split(separator: "=", maxSplits: 1).dropFirst().first ?? ""
                    precondition(value.utf8.count <= limits.maxLabelValueLength, "label value limit bypassed: \(s.labels)")
                }
            }
        }
        let split = run(chunks(body, seed: seed))
        precondition(whole == split, "chunking changed the result:\nwhole \(whole)\nsplit \(split)")
    }
}
