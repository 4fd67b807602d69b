import MetricsCore

/// What a parser produced, in a form two runs can be compared by.
public struct Parsed: Equatable {
    public var samples: [MetricSample] = []
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
    var last = 0
    for x in r.rejections {
        let line = Int(x.split(separator: ":")[0])!
        precondition(line >= last && line >= 1, "rejections out of line order: \(r.rejections)")
        last = line
    }
}
