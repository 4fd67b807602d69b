/// An incremental parser for NDJSON metric streams: one JSON object per line.
///
/// ```
/// {"server_id":"web-01","metric_name":"cpu_usage","value":42.5,"ts":1732838400123,"labels":{"dc":"eu"}}
/// ```
///
/// Feed the body as it arrives with ``parse(_:now:into:)``; chunks may end anywhere (mid-line,
/// mid-UTF-8 sequence, mid-number). Call ``finish(now:into:)`` at the end of the stream so a last
/// line without `\n` is parsed. Every good line yields one ``MetricSample``; every bad line yields
/// one ``LineRejection`` with its line number, and parsing goes on.
///
/// Fields (keys in any order; for a repeated key the last wins; unknown keys and their values,
/// nested up to 64 levels, are skipped):
/// - `server_id`: string, a valid name (``NameRules``). Absent or `null`: the parser's
///   `defaultServerID` (the `x-server-id` header), else ``ParseError/Code/missingField``.
/// - `metric_name`: string, required, a valid name.
/// - `value`: number, required. Strings, booleans and `null` are ``ParseError/Code/invalidValue``;
///   overflow (`1e400`) and the bare tokens `NaN`, `Infinity`, `-Infinity` are
///   ``ParseError/Code/nonFiniteValue``.
/// - `ts`: optional number, epoch milliseconds; a fraction is truncated and the result must be
///   in `1..<10^15`, else ``ParseError/Code/invalidTimestamp``. Absent or `null`: `now`.
/// - `labels`: optional object (or `null`) whose values are strings, numbers or booleans
///   (numbers and booleans keep their JSON text); at most ``NameRules/maxLabels`` entries.
///   Stored as ``Labels/canonical(_:)``.
///
/// Blank lines are ignored; lines whose first byte is `:` are heartbeats. Numbers are
/// converted exactly as `Double(String)` would.
public struct NDJSONParser: Sendable {
    private var splitter: LineSplitter
    private var lines: NDJSONLineParser

    /// Lines completed so far, including blank, heartbeat and rejected lines.
    public var lineCount: Int { splitter.lineCount }

    /// Creates a parser for one stream.
    /// - Parameters:
    ///   - defaultServerID: The server id for lines without `server_id` (the `x-server-id`
    ///     header). If it is not a valid name, lines that need it are rejected with
    ///     ``ParseError/Code/invalidName``.
    ///   - limits: Line length limit.
    public init(defaultServerID: String? = nil, limits: ParseLimits = ParseLimits()) {
        splitter = LineSplitter(maxLineLength: limits.maxLineLength)
        lines = NDJSONLineParser(defaultServerID: defaultServerID)
        lines.limits = limits
    }

    /// Makes the parser ready for a new stream (line numbers restart at 1), keeping its scratch
    /// buffers and name caches: a server reuses one parser per connection across short requests,
    /// so the caches stay warm and nothing is allocated or freed per request.
    public mutating func reset(defaultServerID: String?, limits: ParseLimits = ParseLimits()) {
        splitter.reset()
        splitter.maxLineLength = max(1, limits.maxLineLength)
        lines.setDefaultServerID(defaultServerID)
        lines.limits = limits
    }

    /// Parses one chunk of the stream.
    /// - Parameters:
    ///   - chunk: The next bytes; only read during the call. Complete lines are parsed in place,
    ///     a trailing partial line is copied until its end arrives.
    ///   - now: Epoch milliseconds used for samples without `ts`.
    ///   - output: Receives samples, rejections and heartbeat counts (appended).
    public mutating func parse(_ chunk: UnsafeRawBufferPointer, now: Int64, into output: inout ParseOutput) {
        splitter.feed(chunk, handler: &lines, now: now, into: &output)
    }

    /// Parses one chunk held in an array (convenience for tests and small inputs).
    public mutating func parse(_ chunk: [UInt8], now: Int64, into output: inout ParseOutput) {
        chunk.withUnsafeBytes { parse($0, now: now, into: &output) }
    }

    /// Ends the stream: a final line without a trailing newline is parsed now.
    /// The parser can then be reused for a new stream (line numbers continue).
    public mutating func finish(now: Int64, into output: inout ParseOutput) {
        splitter.finish(handler: &lines, now: now, into: &output)
    }
}

/// Parses single NDJSON lines; keeps reusable scratch buffers.
struct NDJSONLineParser: LineHandler {
    private var defaultServerID: String?
    private var defaultServerIDIsValid: Bool
    /// The request's limits: server-id policy, timestamp window, label count (the line length is
    /// the splitter's).
    var limits = ParseLimits()
    private var labels = LabelBuilder()
    /// Decoded escaped strings (slow path).
    private var scratch: [UInt8] = []
    /// Validated server ids and metric names.
    private var strings = StringCache()

    init(defaultServerID: String?) {
        self.defaultServerID = defaultServerID
        defaultServerIDIsValid = defaultServerID.map { NameRules.isValidName($0) } ?? false
    }

    mutating func setDefaultServerID(_ id: String?) {
        defaultServerID = id
        defaultServerIDIsValid = id.map { NameRules.isValidName($0) } ?? false
    }

    mutating func handleLine(_ line: UnsafeRawBufferPointer, number: Int, now: Int64, into output: inout ParseOutput) {
        if line.isEmpty { return }
        if line[0] == UInt8(ascii: ":") {
            output.heartbeats += 1
            return
        }
        do throws(ParseError) {
            if let sample = try parseLine(line, now: now) {
                output.samples.append(sample)
                output.sampleLines.record(line: number, samples: 1)
            }
        } catch {
            output.rejections.append(LineRejection(line: number, error: error))
        }
    }

    private enum Key { case serverID, metricName, value, ts, labels, other }

    // The field states are plain values (no String payloads): they are copied several times per
    // line, and a String payload made each copy an outlined retain and release.
    private enum NameField {
        case absent
        case string(JSONStringToken)
        case wrongType(StaticString)
    }

    private enum ValueField {
        case absent
        case number(Double)
        case nonFinite
        case wrongType(StaticString)
    }

    private enum TimestampField {
        case absent
        case valid(Int64)
        case outOfRange
        case notFinite
        case wrongType(StaticString)

        var problem: String {
            switch self {
            case .outOfRange: return "ts must be epoch milliseconds with 0 < ts < 1e15"
            case .notFinite: return "ts is not finite"
            case .wrongType(let kind): return "ts must be a number, not \(kind)"
            case .absent, .valid: return ""
            }
        }
    }

    /// True when the cursor is at a JSON number (not at `-Infinity`).
    @inline(__always)
    private static func atNumber(_ c: JSONCursor) -> Bool {
        guard !c.atEnd else { return false }
        let b = c.byte
        return b &- 0x30 <= 9 || (b == UInt8(ascii: "-") && c.i + 1 < c.end && c.p[c.i + 1] != UInt8(ascii: "I"))
    }

    /// Parses one line; nil for a whitespace-only line.
    private mutating func parseLine(_ line: UnsafeRawBufferPointer, now: Int64) throws(ParseError) -> MetricSample? {
        var c = JSONCursor(line)
        c.skipWhitespace()
        if c.atEnd { return nil }
        try c.expect(UInt8(ascii: "{"), "'{' (a JSON object)")

        var serverField = NameField.absent
        var nameField = NameField.absent
        var valueField = ValueField.absent
        var tsField = TimestampField.absent
        var labelsError: ParseError?
        labels.reset()

        c.skipWhitespace()
        if !c.atEnd && c.byte == UInt8(ascii: "}") {
            c.i += 1
        } else {
            while true {
                guard !c.atEnd, c.byte == UInt8(ascii: "\"") else { throw c.fail("expected a string key") }
                let key: Key
                if let known = Self.matchKnownKey(&c) {
                    key = known
                } else {
                    key = try classify(try c.scanString(), c)
                }
                c.skipWhitespace()
                try c.expect(UInt8(ascii: ":"), "':'")
                c.skipWhitespace()
                switch key {
                case .serverID:
                    serverField = !c.atEnd && c.byte == UInt8(ascii: "\"")
                        ? .string(try c.scanString()) : Self.nameField(try c.scanValue())
                case .metricName:
                    nameField = !c.atEnd && c.byte == UInt8(ascii: "\"")
                        ? .string(try c.scanString()) : Self.nameField(try c.scanValue())
                case .value:
                    let start = c.i
                    if Self.atNumber(c) {
                        guard let n = DecimalNumber.scanJSON(c.p, &c.i, end: c.end) else { throw c.fail("invalid number") }
                        let d = n.doubleValue(text: line.slice(start, c.i))
                        valueField = d.isFinite ? .number(d) : .nonFinite
                    } else {
                        let token = try c.scanValue()
                        if case .nonFinite = token { valueField = .nonFinite } else { valueField = .wrongType(token.kind) }
                    }
                case .ts:
                    if Self.atNumber(c) {
                        guard let n = DecimalNumber.scanJSON(c.p, &c.i, end: c.end) else { throw c.fail("invalid number") }
                        tsField = Self.timestampField(n)
                    } else {
                        tsField = Self.timestampField(try c.scanValue())
                    }
                case .labels:
                    labels.reset()
                    labelsError = nil
                    if !c.atEnd && c.byte == UInt8(ascii: "{") {
                        labelsError = try scanLabels(&c)
                    } else {
                        let token = try c.scanValue()
                        if case .null = token {} else {
                            labelsError = ParseError(code: .invalidLabels, message: "labels must be an object, not \(token.kind)")
                        }
                    }
                case .other:
                    _ = try c.scanValue()
                }
                c.skipWhitespace()
                guard !c.atEnd else { throw c.fail("unterminated object: expected ',' or '}'") }
                if c.byte == UInt8(ascii: ",") {
                    c.i += 1
                    c.skipWhitespace()
                } else if c.byte == UInt8(ascii: "}") {
                    c.i += 1
                    break
                } else {
                    throw c.fail("expected ',' or '}'")
                }
            }
        }
        c.skipWhitespace()
        if !c.atEnd { throw c.fail("unexpected data after the object") }

        // Semantics, in field order.
        let serverID: String
        switch serverField {
        case .string(let t):
            serverID = try nameString(t, c, field: "server_id")
        case .wrongType(let kind):
            throw ParseError(code: .invalidName, message: "server_id must be a string, not \(kind)")
        case .absent:
            guard let fallback = defaultServerID else {
                throw ParseError(code: .missingField, message: "server_id is missing and no default server id (x-server-id) is set")
            }
            guard defaultServerIDIsValid else {
                throw ParseError(code: .invalidName, message: "the default server id (x-server-id) is not a valid name")
            }
            serverID = fallback
        }
        try limits.checkServer(serverID, field: "server_id")

        let metricName: String
        switch nameField {
        case .string(let t):
            metricName = try nameString(t, c, field: "metric_name")
        case .wrongType(let kind):
            throw ParseError(code: .invalidName, message: "metric_name must be a string, not \(kind)")
        case .absent:
            throw ParseError(code: .missingField, message: "metric_name is missing")
        }

        let value: Double
        switch valueField {
        case .number(let d): value = d
        case .nonFinite: throw ParseError(code: .nonFiniteValue, message: "value is not finite")
        case .wrongType(let kind): throw ParseError(code: .invalidValue, message: "value must be a number, not \(kind)")
        case .absent: throw ParseError(code: .missingField, message: "value is missing")
        }

        let timestamp: Int64
        switch tsField {
        case .valid(let t):
            timestamp = t
            try limits.checkTimestamp(t, now: now)
        case .absent: timestamp = now
        case .outOfRange, .notFinite, .wrongType: throw ParseError(code: .invalidTimestamp, message: tsField.problem)
        }

        if let labelsError { throw labelsError }
        try limits.checkLabelCount(labels.count)
        return MetricSample(
            serverID: serverID, metricName: metricName, value: value, timestamp: timestamp,
            labels: labels.canonical())
    }

    /// Fast path for the usual case: at an opening quote followed by one of the field names
    /// written plainly and its closing quote, consumes them and returns the field. Anything else
    /// (unknown or escaped keys) returns nil without moving the cursor.
    @inline(__always)
    private static func matchKnownKey(_ c: inout JSONCursor) -> Key? {
        let at = c.i + 1
        guard at < c.end else { return nil }
        let key: Key
        let literal: StaticString
        switch c.p[at] {
        case UInt8(ascii: "s"): (key, literal) = (.serverID, "server_id\"")
        case UInt8(ascii: "m"): (key, literal) = (.metricName, "metric_name\"")
        case UInt8(ascii: "v"): (key, literal) = (.value, "value\"")
        case UInt8(ascii: "t"): (key, literal) = (.ts, "ts\"")
        case UInt8(ascii: "l"): (key, literal) = (.labels, "labels\"")
        default: return nil
        }
        let n = literal.utf8CodeUnitCount
        guard at + n <= c.end, equals(c.p.slice(at, at + n), literal) else { return nil }
        c.i = at + n
        return key
    }

    /// Which known field a key names (escaped keys are decoded first).
    @inline(__always)
    private mutating func classify(_ token: JSONStringToken, _ c: JSONCursor) throws(ParseError) -> Key {
        if !token.escaped { return Self.classify(c.p.slice(token.start, token.end)) }
        let length = try decodeToScratch(token, c)
        return scratch.withUnsafeBytes { Self.classify($0.slice(0, length)) }
    }

    @inline(__always)
    private static func classify(_ k: UnsafeRawBufferPointer) -> Key {
        switch k.count {
        case 2: return equals(k, "ts") ? .ts : .other
        case 5: return equals(k, "value") ? .value : .other
        case 6: return equals(k, "labels") ? .labels : .other
        case 9: return equals(k, "server_id") ? .serverID : .other
        case 11: return equals(k, "metric_name") ? .metricName : .other
        default: return .other
        }
    }

    /// Compares `k` (of the literal's length, 2...16 bytes) with `lit` using two overlapping
    /// word loads instead of a byte loop.
    @inline(__always)
    private static func equals(_ k: UnsafeRawBufferPointer, _ lit: StaticString) -> Bool {
        let a = k.baseAddress!
        let b = UnsafeRawPointer(lit.utf8Start)
        let n = lit.utf8CodeUnitCount
        switch n {
        case 2..<4:
            return a.loadUnaligned(as: UInt16.self) == b.loadUnaligned(as: UInt16.self)
                && a.loadUnaligned(fromByteOffset: n - 2, as: UInt16.self) == b.loadUnaligned(fromByteOffset: n - 2, as: UInt16.self)
        case 4..<8:
            return a.loadUnaligned(as: UInt32.self) == b.loadUnaligned(as: UInt32.self)
                && a.loadUnaligned(fromByteOffset: n - 4, as: UInt32.self) == b.loadUnaligned(fromByteOffset: n - 4, as: UInt32.self)
        default:
            return a.loadUnaligned(as: UInt64.self) == b.loadUnaligned(as: UInt64.self)
                && a.loadUnaligned(fromByteOffset: n - 8, as: UInt64.self) == b.loadUnaligned(fromByteOffset: n - 8, as: UInt64.self)
        }
    }

    /// Decodes an escaped string into ``scratch``; returns its length.
    private mutating func decodeToScratch(_ token: JSONStringToken, _ c: JSONCursor) throws(ParseError) -> Int {
        let needed = token.end - token.start
        if scratch.count < needed { scratch = Array(repeating: 0, count: max(needed, 2 * scratch.count)) }
        let result = scratch.withUnsafeMutableBytes { buffer -> Result<Int, ParseError> in
            do throws(ParseError) {
                return .success(try c.decode(token, into: buffer))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    private static func nameField(_ token: JSONValueToken) -> NameField {
        switch token {
        case .string(let t): return .string(t)
        case .null: return .absent
        default: return .wrongType(token.kind)
        }
    }

    @inline(__always)
    private static func timestampField(_ n: DecimalNumber) -> TimestampField {
        guard !n.negative || n.mantissa == 0, let m = n.truncatedMagnitude(), m >= 1, m < 1_000_000_000_000_000 else {
            return .outOfRange
        }
        return .valid(Int64(m))
    }

    private static func timestampField(_ token: JSONValueToken) -> TimestampField {
        switch token {
        case .number(let n, _, _): return timestampField(n)
        case .null: return .absent
        case .nonFinite: return .notFinite
        default: return .wrongType(token.kind)
        }
    }

    /// A validated server id or metric name.
    @inline(__always)
    private mutating func nameString(_ t: JSONStringToken, _ c: JSONCursor, field: StaticString) throws(ParseError) -> String {
        if !t.escaped {
            let bytes = c.p.slice(t.start, t.end)
            if let cached = strings.lookup(bytes) { return cached }  // only valid names are cached
            guard FastNameRules.isValidName(bytes) else { throw Self.invalidName(field, bytes) }
            let s = makeString(bytes)
            strings.insert(bytes, s)
            return s
        }
        let length = try decodeToScratch(t, c)
        let valid = scratch.withUnsafeBytes { NameRules.isValidName($0.slice(0, length)) }
        guard valid else { throw scratch.withUnsafeBytes { Self.invalidName(field, $0.slice(0, length)) } }
        return scratch.withUnsafeBytes { strings.string($0.slice(0, length)) }
    }

    private static func invalidName(_ field: StaticString, _ bytes: UnsafeRawBufferPointer) -> ParseError {
        ParseError(
            code: .invalidName,
            message: "\(field) \(quoted(bytes)) is not a valid name (1...\(NameRules.maxNameLength) bytes of A-Z a-z 0-9 _ . : - /)")
    }

    /// Scans the `labels` object at the cursor into ``labels``. Structural errors throw; the
    /// first semantic error is returned (the rest of the object is still scanned).
    private mutating func scanLabels(_ c: inout JSONCursor) throws(ParseError) -> ParseError? {
        c.i += 1
        c.skipWhitespace()
        if !c.atEnd && c.byte == UInt8(ascii: "}") {
            c.i += 1
            return nil
        }
        var firstError: ParseError?
        while true {
            guard !c.atEnd, c.byte == UInt8(ascii: "\"") else { throw c.fail("expected a string key") }
            let key = try c.scanString()
            c.skipWhitespace()
            try c.expect(UInt8(ascii: ":"), "':'")
            c.skipWhitespace()
            let valueStart = c.i
            if !c.atEnd && c.byte == UInt8(ascii: "\"") {
                let value = try c.scanString()
                if firstError == nil {
                    if !key.escaped && !value.escaped && labels.count < NameRules.maxLabels {
                        // Fast path: plain string pair, validated in place and copied once.
                        let keyBytes = c.p.slice(key.start, key.end)
                        let valueBytes = c.p.slice(value.start, value.end)
                        if !FastNameRules.isValidLabelKey(keyBytes) {
                            firstError = Self.invalidLabelKey(keyBytes)
                        } else if !FastNameRules.isValidLabelValue(valueBytes) {
                            firstError = Self.invalidLabelValue(keyBytes)
                        } else if valueBytes.count > limits.maxLabelValueLength {
                            firstError = labelValueTooLong(keyBytes, valueBytes.count)
                        } else {
                            labels.addPair(key: keyBytes, value: valueBytes)
                        }
                    } else {
                        firstError = addLabel(key: key, value: .string(value), valueStart: valueStart, c)
                    }
                }
            } else {
                let value = try c.scanValue(depth: 1)
                if firstError == nil {
                    firstError = addLabel(key: key, value: value, valueStart: valueStart, c)
                }
            }
            c.skipWhitespace()
            guard !c.atEnd else { throw c.fail("unterminated labels object: expected ',' or '}'") }
            if c.byte == UInt8(ascii: ",") {
                c.i += 1
                c.skipWhitespace()
            } else if c.byte == UInt8(ascii: "}") {
                c.i += 1
                return firstError
            } else {
                throw c.fail("expected ',' or '}'")
            }
        }
    }

    /// Appends a string's content (decoded when escaped) to the pending label pair.
    @inline(__always)
    private mutating func appendLabelString(_ t: JSONStringToken, _ c: JSONCursor) throws(ParseError) {
        if t.escaped {
            let length = try decodeToScratch(t, c)
            scratch.withUnsafeBytes { labels.append($0.slice(0, length)) }
        } else {
            labels.append(c.p.slice(t.start, t.end))
        }
    }

    /// Adds one label pair, or returns why it is invalid.
    private mutating func addLabel(key: JSONStringToken, value: JSONValueToken, valueStart: Int, _ c: JSONCursor) -> ParseError? {
        if labels.count >= NameRules.maxLabels {
            return ParseError(code: .invalidLabels, message: "more than \(NameRules.maxLabels) labels")
        }
        labels.startPair()
        do throws(ParseError) { try appendLabelString(key, c) } catch { return error }
        labels.endKey()
        guard labels.pendingKeyIsValid() else { return labels.withPendingKey { Self.invalidLabelKey($0) } }
        switch value {
        case .string(let t):
            do throws(ParseError) { try appendLabelString(t, c) } catch { return error }
        case .number(_, let start, let end):
            labels.append(c.p.slice(start, end))
        case .bool:
            labels.append(c.p.slice(valueStart, c.i))
        default:
            return ParseError(
                code: .invalidLabels,
                message: "label \(labels.withPendingKey { quoted($0) }) has \(value.kind) value; expected a string, number or boolean")
        }
        guard labels.pendingValueIsValid() else { return labels.withPendingKey { Self.invalidLabelValue($0) } }
        if labels.pendingValueLength > limits.maxLabelValueLength {
            let n = labels.pendingValueLength
            return labels.withPendingKey { labelValueTooLong($0, n) }
        }
        labels.endPair()
        return nil
    }

    private static func invalidLabelKey(_ key: UnsafeRawBufferPointer) -> ParseError {
        ParseError(
            code: .invalidLabels,
            message: "label key \(quoted(key)) is not valid (1...\(NameRules.maxNameLength) bytes of A-Z a-z 0-9 _ . -)")
    }

    private func labelValueTooLong(_ key: UnsafeRawBufferPointer, _ length: Int) -> ParseError {
        ParseError(code: .invalidLabels, message: "label \(quoted(key)) value is \(length) bytes; at most \(limits.maxLabelValueLength) are accepted")
    }

    private static func invalidLabelValue(_ key: UnsafeRawBufferPointer) -> ParseError {
        ParseError(
            code: .invalidLabels,
            message: "label \(quoted(key)) has an invalid value (at most \(NameRules.maxLabelValueLength) bytes, no spaces, control characters, ',', '=', '\"' or '\\')")
    }
}
