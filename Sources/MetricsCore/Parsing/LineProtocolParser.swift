#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An incremental parser for the InfluxDB line protocol as Telegraf's `influxdb` output sends it.
///
/// ```
/// measurement[,tag=value...] field=value[,field=value...] [timestamp]
/// cpu,cpu=cpu-total,host=web-01 usage_user=1.5,usage_system=0.5 1700000000000000000
/// ```
///
/// Each numeric field becomes one ``MetricSample`` named `measurement_field`. Field values may be
/// floats (`1`, `-1.5`, `1e3`), integers (`12i`), unsigned integers (`12u`) or booleans
/// (`t`, `true`, `F`, `FALSE`, … → 1 or 0). String fields (`"…"`) produce no sample and are
/// counted in ``ParseOutput/skippedFields``. The `host` tag is the server id (falling back to
/// `defaultServerID`, else ``ParseError/Code/missingHost``); other tags become labels.
///
/// Names are sanitized rather than rejected so Telegraf works unchanged: in the measurement,
/// field keys and tag keys every byte that ``NameRules`` does not allow becomes `_`, and so does
/// every disallowed byte of tag values. A line is accepted or rejected as a whole; a field key
/// repeated within a line yields one sample per occurrence.
///
/// Blank lines and lines starting with `#` are ignored. Chunks may end anywhere; call
/// ``finish(now:into:)`` at the end of the body.
public struct LineProtocolParser: Sendable {
    private var splitter: LineSplitter
    private var lines: LineProtocolLineParser

    /// Lines completed so far, including blank, comment and rejected lines.
    public var lineCount: Int { splitter.lineCount }

    /// Creates a parser for one request body.
    /// - Parameters:
    ///   - precision: The unit of the timestamps (the `precision` query parameter; default ns).
    ///   - defaultServerID: The server id for lines without a `host` tag. If it is not a valid
    ///     name, lines that need it are rejected with ``ParseError/Code/invalidName``.
    ///   - limits: Line length limit.
    public init(precision: TimestampPrecision = .nanoseconds, defaultServerID: String? = nil, limits: ParseLimits = ParseLimits()) {
        splitter = LineSplitter(maxLineLength: limits.maxLineLength)
        lines = LineProtocolLineParser(precision: precision, defaultServerID: defaultServerID)
        lines.limits = limits
    }

    /// Parses one chunk of the body.
    /// - Parameters:
    ///   - chunk: The next bytes; only read during the call.
    ///   - now: Epoch milliseconds used for lines without a timestamp.
    ///   - output: Receives samples, rejections and skipped string fields (appended).
    public mutating func parse(_ chunk: UnsafeRawBufferPointer, now: Int64, into output: inout ParseOutput) {
        splitter.feed(chunk, handler: &lines, now: now, into: &output)
    }

    /// Parses one chunk held in an array (convenience for tests and small inputs).
    public mutating func parse(_ chunk: [UInt8], now: Int64, into output: inout ParseOutput) {
        chunk.withUnsafeBytes { parse($0, now: now, into: &output) }
    }

    /// Ends the body: a final line without a trailing newline is parsed now.
    public mutating func finish(now: Int64, into output: inout ParseOutput) {
        splitter.finish(handler: &lines, now: now, into: &output)
    }
}

/// Parses single line-protocol lines; keeps reusable scratch buffers.
struct LineProtocolLineParser: LineHandler {
    private struct Field {
        var keyStart: Int
        var keyEnd: Int
        var value: Double
    }

    private static let nameMask: UInt8 = 1
    private static let labelKeyMask: UInt8 = 2
    private static let labelValueMask: UInt8 = 4
    private static let underscore = UInt8(ascii: "_")
    private static let space = UInt8(ascii: " ")
    private static let comma = UInt8(ascii: ",")
    private static let equals = UInt8(ascii: "=")
    private static let backslash = UInt8(ascii: "\\")
    private static let quote = UInt8(ascii: "\"")

    private let precision: TimestampPrecision
    private let defaultServerID: String?
    private let defaultServerIDIsValid: Bool
    /// The request's limits: server-id policy, timestamp window, label count (the line length is
    /// the splitter's).
    var limits = ParseLimits()

    /// Sanitized measurement followed by `_`, then the field key: the metric name being built.
    private var name = ScratchBytes()
    private var host = ScratchBytes()
    private var fieldKeys = ScratchBytes()
    private var fields: [Field] = []
    private var fieldCount = 0
    private var labels = LabelBuilder()
    private var strings = StringCache()
    /// The previous line's shape (measurement and field keys) and the metric names built for it.
    /// Telegraf repeats one shape per measurement line after line: when the next line has the
    /// same bytes, its names are reused instead of built and looked up one field at a time.
    private var shapePrefix: [UInt8] = []
    private var shapeKeys: [UInt8] = []
    private var shapeEnds: [Int] = []
    private var shapeNames: [String] = []

    init(precision: TimestampPrecision, defaultServerID: String?) {
        self.precision = precision
        self.defaultServerID = defaultServerID
        defaultServerIDIsValid = defaultServerID.map { NameRules.isValidName($0) } ?? false
    }

    mutating func handleLine(_ line: UnsafeRawBufferPointer, number: Int, now: Int64, into output: inout ParseOutput) {
        Self.actions.withUnsafeBufferPointer { actions in
            do throws(ParseError) {
                let before = output.samples.count
                try parseLine(line, now: now, actions: actions.baseAddress!, into: &output)
                let added = output.samples.count - before
                if added > 0 { output.sampleLines.record(line: number, samples: added) }
            } catch {
                output.rejections.append(LineRejection(line: number, error: error))
            }
        }
    }

    private static func syntax(_ what: String, _ i: Int) -> ParseError {
        ParseError(code: .invalidSyntax, message: "\(what) at column \(i + 1)")
    }

    /// The kinds of token `copyToken` handles; the raw value is the kind's offset in ``actions``.
    private enum TokenKind: Int {
        case measurement = 0
        case tagKey = 256
        case tagValue = 512
        case hostValue = 768
        case fieldKey = 1024
    }

    private static let copy: UInt8 = 0, replace: UInt8 = 1, stop: UInt8 = 2, escape: UInt8 = 3

    /// For each ``TokenKind``, what to do with each byte: copy it, replace it by `_` (not allowed
    /// by ``NameRules`` for that kind), stop (an unescaped delimiter) or treat it as an escape.
    /// Built once from ``NameRules``' table; one lookup per byte replaces several comparisons.
    private static let actions: [UInt8] = {
        var t = [UInt8](repeating: 0, count: 1280)
        let kinds: [(TokenKind, UInt8, stopAtEquals: Bool)] = [
            (.measurement, nameMask, false), (.tagKey, labelKeyMask, true), (.tagValue, labelValueMask, false),
            (.hostValue, nameMask, false), (.fieldKey, nameMask, true),
        ]
        for (kind, mask, stopAtEquals) in kinds {
            for b in 0..<256 {
                var action = NameRules.table[b] & mask != 0 ? copy : replace
                if b == Int(comma) || b == Int(space) || (stopAtEquals && b == Int(equals)) { action = stop }
                if b == Int(backslash) { action = escape }
                t[kind.rawValue + b] = action
            }
        }
        return t
    }()

    /// Copies the token at `p[i...]` into `dst`, unescaping and sanitizing, and advances `i` to
    /// the first unescaped `,` or space (or `=` for keys), or the end of the line.
    ///
    /// A backslash escapes `,` and space, and also `=` except in the measurement; any other
    /// backslash is literal. Escaped delimiters and backslashes are never allowed in names or
    /// label values, so both become `_`, like every other byte the kind does not allow.
    /// - Returns: The number of bytes written (at most `n - i`).
    @inline(__always)
    private static func copyToken(
        _ p: LineBytes, _ i: inout Int, _ n: Int, into dst: UnsafeMutableRawBufferPointer,
        _ kind: TokenKind, _ actions: UnsafePointer<UInt8>
    ) -> Int {
        let act = actions + kind.rawValue
        let out = dst.baseAddress!
        var w = 0
        var k = i
        while k < n {
            let b = p[k]
            let a = act[Int(b)]
            if a == copy {
                out.storeBytes(of: b, toByteOffset: w, as: UInt8.self)
            } else if a == replace {
                out.storeBytes(of: underscore, toByteOffset: w, as: UInt8.self)
            } else if a == stop {
                break
            } else {
                out.storeBytes(of: underscore, toByteOffset: w, as: UInt8.self)
                if k + 1 < n {
                    let next = p[k + 1]
                    if next == comma || next == space || (kind != .measurement && next == equals) { k += 1 }
                }
            }
            w += 1
            k += 1
        }
        i = k
        return w
    }

    private mutating func parseLine(
        _ line: UnsafeRawBufferPointer, now: Int64, actions: UnsafePointer<UInt8>, into output: inout ParseOutput
    ) throws(ParseError) {
        let n = line.count
        if n == 0 { return }
        let p = LineBytes(line)
        var i = 0
        while i < n, p[i] == Self.space || p[i] == 0x09 { i += 1 }
        if i == n || p[i] == UInt8(ascii: "#") { return }
        if let bad = UTF8Validation.firstInvalid(line, from: i) {
            throw ParseError(code: .invalidUTF8, message: "invalid UTF-8 at column \(bad + 1)")
        }

        // Measurement: `\,` and `\ ` are escapes.
        name.removeAll()
        name.append(capacity: n - i + 1) { dst in
            Self.copyToken(p, &i, n, into: dst, .measurement, actions)
        }
        if name.isEmpty { throw Self.syntax("missing measurement", i) }
        name.append(Self.underscore)
        let prefixLength = name.count

        // Tags: `host` is the server id, the others are labels.
        labels.reset()
        var hasHost = false
        while i < n, p[i] == Self.comma {
            i += 1
            let keyStart = i
            labels.startPair()
            labels.append(capacity: n - i) { dst in
                Self.copyToken(p, &i, n, into: dst, .tagKey, actions)
            }
            labels.endKey()
            if i == n || p[i] != Self.equals { throw Self.syntax("tag key without '='", i) }
            if labels.pendingKeyLength == 0 { throw Self.syntax("empty tag key", keyStart) }
            i += 1  // '='
            let valueStart = i
            if labels.pendingKeyEquals("host") {
                labels.abandonPair()
                hasHost = true
                host.removeAll()
                host.append(capacity: n - i) { dst in
                    Self.copyToken(p, &i, n, into: dst, .hostValue, actions)
                }
                if host.isEmpty { throw Self.syntax("empty tag value", valueStart) }
                continue
            }
            if labels.count >= NameRules.maxLabels {
                throw ParseError(code: .invalidLabels, message: "more than \(NameRules.maxLabels) tags besides host")
            }
            if labels.pendingKeyLength > NameRules.maxNameLength {
                throw ParseError(code: .invalidLabels, message: "tag key longer than \(NameRules.maxNameLength) bytes at column \(keyStart + 1)")
            }
            labels.append(capacity: n - i) { dst in
                Self.copyToken(p, &i, n, into: dst, .tagValue, actions)
            }
            if labels.pendingValueLength == 0 { throw Self.syntax("empty tag value", valueStart) }
            if labels.pendingValueLength > limits.maxLabelValueLength {
                throw ParseError(code: .invalidLabels, message: "tag value longer than \(limits.maxLabelValueLength) bytes at column \(valueStart + 1)")
            }
            labels.endPair()
        }

        // Fields.
        if i == n { throw Self.syntax("missing fields", i) }
        while i < n, p[i] == Self.space { i += 1 }
        if i == n { throw Self.syntax("missing fields", i) }
        fieldKeys.removeAll()
        fieldCount = 0
        var stringFields = 0
        while true {
            let keyStart = i
            let keyOffset = fieldKeys.count
            fieldKeys.append(capacity: n - i) { dst in
                Self.copyToken(p, &i, n, into: dst, .fieldKey, actions)
            }
            if i == n || p[i] != Self.equals { throw Self.syntax("field without '='", keyStart) }
            if fieldKeys.count == keyOffset { throw Self.syntax("empty field key", keyStart) }
            i += 1  // '='
            if i < n, p[i] == Self.quote {
                let open = i
                i += 1
                var closed = false
                while i < n {
                    let b = p[i]
                    if b == Self.backslash && i + 1 < n {
                        i += 2
                    } else if b == Self.quote {
                        i += 1
                        closed = true
                        break
                    } else {
                        i += 1
                    }
                }
                if !closed { throw Self.syntax("unterminated string field value starting", open) }
                stringFields += 1
                fieldKeys.truncate(to: keyOffset)
            } else {
                let valueStart = i
                while i < n, p[i] != Self.comma, p[i] != Self.space { i += 1 }
                let value = try fieldValue(p, valueStart, i, keyOffset: keyOffset)
                let field = Field(keyStart: keyOffset, keyEnd: fieldKeys.count, value: value)
                if fieldCount < fields.count { fields[fieldCount] = field } else { fields.append(field) }
                fieldCount += 1
            }
            if i < n, p[i] == Self.comma {
                i += 1
                continue
            }
            break
        }
        if i < n, p[i] != Self.space { throw Self.syntax("expected ',' or ' ' after field value", i) }

        // Timestamp.
        while i < n, p[i] == Self.space { i += 1 }
        var timestamp = now
        if i < n {
            let start = i
            while i < n, p[i] != Self.space { i += 1 }
            guard let raw = Self.parseInt64(p, start, i), let ms = precision.milliseconds(raw) else {
                throw ParseError(code: .invalidTimestamp, message: "invalid timestamp \(quoted(p.slice(start, i))) at column \(start + 1)")
            }
            timestamp = ms
            try limits.checkTimestamp(ms, now: now)
            while i < n, p[i] == Self.space { i += 1 }
            if i < n { throw Self.syntax("unexpected data after the timestamp", i) }
        }

        // Server id.
        let serverID: String
        if hasHost {
            if host.count > NameRules.maxNameLength {
                throw ParseError(code: .invalidName, message: "host tag longer than \(NameRules.maxNameLength) bytes")
            }
            serverID = host.withBytes { strings.string($0) }
        } else if let fallback = defaultServerID {
            guard defaultServerIDIsValid else {
                throw ParseError(code: .invalidName, message: "the default server id is not a valid name")
            }
            serverID = fallback
        } else {
            throw ParseError(code: .missingHost, message: "no host tag and no default server id")
        }
        try limits.checkServer(serverID, field: "host")

        // Names: all checked before any sample is emitted (a line is accepted or rejected whole).
        for k in 0..<fieldCount where prefixLength + (fields[k].keyEnd - fields[k].keyStart) > NameRules.maxNameLength {
            throw ParseError(
                code: .invalidName,
                message: "metric name (measurement_field) longer than \(NameRules.maxNameLength) bytes")
        }
        try limits.checkLabelCount(labels.count)
        output.skippedFields += stringFields
        if fieldCount == 0 { return }
        let labelString = labels.canonical()
        if !sameShape(prefixLength: prefixLength) { rememberShape(prefixLength: prefixLength) }
        for k in 0..<fieldCount {
            output.samples.append(MetricSample(
                serverID: serverID, metricName: shapeNames[k], value: fields[k].value, timestamp: timestamp, labels: labelString))
        }
    }

    /// Whether this line's measurement and field keys are the previous line's, byte for byte.
    private func sameShape(prefixLength: Int) -> Bool {
        guard fieldCount == shapeEnds.count, prefixLength == shapePrefix.count, fieldKeys.count == shapeKeys.count else { return false }
        for k in 0..<fieldCount where fields[k].keyEnd != shapeEnds[k] { return false }
        let prefixSame = name.withBytes { b in shapePrefix.withUnsafeBytes { memcmp(b.baseAddress!, $0.baseAddress!, prefixLength) == 0 } }
        guard prefixSame else { return false }
        if shapeKeys.isEmpty { return true }
        return fieldKeys.withBytes { b in shapeKeys.withUnsafeBytes { memcmp(b.baseAddress!, $0.baseAddress!, shapeKeys.count) == 0 } }
    }

    /// Builds this line's metric names (measurement_field, through the string cache) and keeps
    /// them with the shape for the next line.
    private mutating func rememberShape(prefixLength: Int) {
        shapePrefix = name.withBytes { Array($0.prefix(prefixLength)) }
        shapeKeys = fieldKeys.withBytes { Array($0) }
        shapeEnds.removeAll(keepingCapacity: true)
        shapeNames.removeAll(keepingCapacity: true)
        for k in 0..<fieldCount {
            let f = fields[k]
            name.truncate(to: prefixLength)
            fieldKeys.withBytes { name.append($0.slice(f.keyStart, f.keyEnd)) }
            shapeEnds.append(f.keyEnd)
            shapeNames.append(name.withBytes { strings.string($0) })
        }
    }

    /// The numeric value of a field's text `p[start..<end]`.
    private func fieldValue(_ p: LineBytes, _ start: Int, _ end: Int, keyOffset: Int) throws(ParseError) -> Double {
        guard start < end else {
            throw ParseError(code: .invalidValue, message: "missing value for field \(fieldKey(keyOffset)) at column \(start + 1)")
        }
        let last = p[end - 1]
        let first = p[start]
        if last == UInt8(ascii: "i") {
            if let v = Self.parseInt64(p, start, end - 1) { return Double(v) }
        } else if last == UInt8(ascii: "u") {
            if let v = Self.parseUInt64(p, start, end - 1) { return Double(v) }
        } else if first | 0x20 == UInt8(ascii: "t") || first | 0x20 == UInt8(ascii: "f") {
            if let b = Self.parseBool(p.slice(start, end)) { return b ? 1 : 0 }
        } else if let number = DecimalNumber.scanLenient(p, from: start, end: end) {
            let d = number.doubleValue(text: p.slice(start, end))
            guard d.isFinite else {
                throw ParseError(code: .nonFiniteValue, message: "value \(quoted(p.slice(start, end))) of field \(fieldKey(keyOffset)) is not finite at column \(start + 1)")
            }
            return d
        } else if Self.isNonFiniteWord(p.slice(start, end)) {
            throw ParseError(code: .nonFiniteValue, message: "value \(quoted(p.slice(start, end))) of field \(fieldKey(keyOffset)) is not finite at column \(start + 1)")
        }
        throw ParseError(code: .invalidValue, message: "invalid value \(quoted(p.slice(start, end))) for field \(fieldKey(keyOffset)) at column \(start + 1)")
    }

    /// The (sanitized) key of the field being parsed, for messages.
    private func fieldKey(_ keyOffset: Int) -> String {
        fieldKeys.withBytes { quoted($0.slice(keyOffset, $0.count)) }
    }

    /// `[+-]?[0-9]+` as Int64; nil when malformed or out of range.
    static func parseInt64(_ p: LineBytes, _ start: Int, _ end: Int) -> Int64? {
        var i = start
        var negative = false
        if i < end, p[i] == UInt8(ascii: "-") || p[i] == UInt8(ascii: "+") {
            negative = p[i] == UInt8(ascii: "-")
            i += 1
        }
        guard let magnitude = parseUInt64(p, i, end) else { return nil }
        if negative {
            if magnitude > UInt64(Int64.max) + 1 { return nil }
            return magnitude == UInt64(Int64.max) + 1 ? Int64.min : -Int64(magnitude)
        }
        return magnitude > UInt64(Int64.max) ? nil : Int64(magnitude)
    }

    /// `[0-9]+` as UInt64; nil when malformed or out of range.
    static func parseUInt64(_ p: LineBytes, _ start: Int, _ end: Int) -> UInt64? {
        guard start < end else { return nil }
        var k = start
        DecimalNumber.skipDigits(p, &k, end: end)
        guard k == end else { return nil }
        if end - start <= 19 {
            // Up to 19 digits: at most 10^19 - 1 < 2^64, no overflow possible.
            return DecimalNumber.digitsValue(p, start, end, initial: 0)
        }
        var v: UInt64 = 0
        for i in start..<end {
            let d = p[i] &- 0x30
            if d > 9 { return nil }
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (s, o2) = m.addingReportingOverflow(UInt64(d))
            if o1 || o2 { return nil }
            v = s
        }
        return v
    }

    /// `t T true True TRUE f F false False FALSE`.
    private static func parseBool(_ s: UnsafeRawBufferPointer) -> Bool? {
        switch s.count {
        case 1:
            switch s[0] {
            case UInt8(ascii: "t"), UInt8(ascii: "T"): return true
            case UInt8(ascii: "f"), UInt8(ascii: "F"): return false
            default: return nil
            }
        case 4:
            return matches(s, "true") || matches(s, "True") || matches(s, "TRUE") ? true : nil
        case 5:
            return matches(s, "false") || matches(s, "False") || matches(s, "FALSE") ? false : nil
        default:
            return nil
        }
    }

    /// `[+-]?(nan|inf|infinity)`, any case.
    private static func isNonFiniteWord(_ s: UnsafeRawBufferPointer) -> Bool {
        var word = s
        if let first = word.first, first == UInt8(ascii: "+") || first == UInt8(ascii: "-") {
            word = word.slice(1, word.count)
        }
        let lower = word.map { $0 | 0x20 }
        return lower == Array("nan".utf8) || lower == Array("inf".utf8) || lower == Array("infinity".utf8)
    }

    private static func matches(_ s: UnsafeRawBufferPointer, _ lit: StaticString) -> Bool {
        guard s.count == lit.utf8CodeUnitCount else { return false }
        for k in 0..<s.count where s[k] != lit.utf8Start[k] { return false }
        return true
    }
}
