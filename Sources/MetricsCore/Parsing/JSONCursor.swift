#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// A hand-written JSON scanner rather than a JSON library: this is the ingestion hot path and
// each NDJSON line is one flat object, so we scan it in place, allocation-free, and only
// materialize the few strings a sample needs. Nested values under unknown keys are skipped,
// not built.

/// A JSON string's content range (between the quotes) within the line.
struct JSONStringToken {
    var start: Int
    var end: Int
    /// The raw text contains backslash escapes and must be decoded before use.
    var escaped: Bool
}

/// One scanned JSON value. Objects and arrays are skipped and only reported by kind.
enum JSONValueToken {
    case string(JSONStringToken)
    case number(DecimalNumber, start: Int, end: Int)
    /// The bare tokens `NaN`, `Infinity`, `-Infinity` (not JSON, but agents send them).
    case nonFinite
    case bool(Bool)
    case null
    case object
    case array

    /// The JSON type with an article, for messages: "a string", "an object", "null". A
    /// `StaticString`: the parser's field states hold it, and a `String` payload made every copy
    /// of them a retain and release.
    var kind: StaticString {
        switch self {
        case .string: return "a string"
        case .number, .nonFinite: return "a number"
        case .bool: return "a boolean"
        case .null: return "null"
        case .object: return "an object"
        case .array: return "an array"
        }
    }
}

/// A cursor over one line of JSON. Errors are ``ParseError/Code/invalidJSON`` (structure) or
/// ``ParseError/Code/invalidUTF8`` (string content) and name the 1-based byte column.
struct JSONCursor {
    /// Deepest nesting accepted inside skipped values.
    static let maxDepth = 64

    let p: LineBytes
    let end: Int
    var i = 0

    /// - Precondition: `line` is not empty.
    init(_ line: UnsafeRawBufferPointer) {
        p = LineBytes(line)
        end = line.count
    }

    var atEnd: Bool { i >= end }

    /// The current byte; only valid when not ``atEnd``.
    var byte: UInt8 { p[i] }

    /// An ``ParseError/Code/invalidJSON`` error at the current column.
    func fail(_ what: String) -> ParseError {
        ParseError(code: .invalidJSON, message: "\(what) at column \(i + 1)")
    }

    @inline(__always)
    mutating func skipWhitespace() {
        while i < end {
            let b = p[i]
            guard b == 0x20 || b == 0x09 || b == 0x0D || b == 0x0A else { return }
            i += 1
        }
    }

    /// Consumes `b` or fails with "expected `what`".
    @inline(__always)
    mutating func expect(_ b: UInt8, _ what: String) throws(ParseError) {
        guard i < end, p[i] == b else { throw fail(i < end ? "expected \(what)" : "expected \(what), found end of line") }
        i += 1
    }

    /// Scans a string at an opening quote; on return the cursor is past the closing quote.
    /// Validates escapes syntactically, rejects unescaped control characters and invalid UTF-8.
    @inline(__always)
    mutating func scanString() throws(ParseError) -> JSONStringToken {
        let start = i + 1
        var k = start
        var escaped = false
        while true {
            // Skip plain ASCII eight bytes at a time; the lowest flagged byte is the first
            // quote, backslash, control character or non-ASCII byte.
            while k + 8 <= end {
                let w = p.loadUnaligned(fromByteOffset: k, as: UInt64.self)
                let flags = Self.special(w)
                if flags != 0 {
                    k += flags.trailingZeroBitCount >> 3
                    break
                }
                k += 8
            }
            guard k < end else { break }
            let b = p[k]
            if b == UInt8(ascii: "\"") {
                i = k + 1
                return JSONStringToken(start: start, end: k, escaped: escaped)
            }
            if b >= 0x20 && b < 0x80 && b != UInt8(ascii: "\\") {
                k += 1
            } else if b == UInt8(ascii: "\\") {
                escaped = true
                i = k
                try scanEscape()
                k = i
            } else if b < 0x20 {
                i = k
                throw fail("unescaped control character in string")
            } else {
                let len = UTF8Validation.sequenceLength(p, at: k, end: end)
                if len == 0 {
                    throw ParseError(code: .invalidUTF8, message: "invalid UTF-8 in string at column \(k + 1)")
                }
                k += len
            }
        }
        i = start - 1
        throw fail("unterminated string starting")
    }

    /// High bit set in each byte of `w` that is `"`, `\`, below 0x20 or above 0x7F. Bits above
    /// the lowest flagged byte may be spurious; the lowest one is exact.
    @inline(__always)
    static func special(_ w: UInt64) -> UInt64 {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let high: UInt64 = 0x8080_8080_8080_8080
        let q = w ^ (ones &* 0x22)
        let bs = w ^ (ones &* 0x5C)
        let quote = (q &- ones) & ~q
        let backslash = (bs &- ones) & ~bs
        let control = (w &- ones &* 0x20) & ~w
        return (quote | backslash | control | w) & high
    }

    private mutating func scanEscape() throws(ParseError) {
        guard i + 1 < end else { throw fail("unterminated escape") }
        switch p[i + 1] {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"),
             UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
            i += 2
        case UInt8(ascii: "u"):
            guard i + 5 < end, Self.hex4(p, i + 2) != nil else { throw fail("invalid \\u escape") }
            i += 6
        default:
            throw fail("invalid escape")
        }
    }

    /// The value of four hex digits at `k`, or nil.
    @inline(__always)
    static func hex4(_ p: LineBytes, _ k: Int) -> UInt32? {
        var v: UInt32 = 0
        for j in k..<(k + 4) {
            let b = p[j]
            let d: UInt8
            if b &- 0x30 <= 9 {
                d = b &- 0x30
            } else if (b | 0x20) &- 0x61 <= 5 {
                d = (b | 0x20) &- 0x61 &+ 10
            } else {
                return nil
            }
            v = v << 4 | UInt32(d)
        }
        return v
    }

    /// Writes the decoded content of `token` to `out` and returns its length. Decoding never
    /// lengthens a string, so `out` needs `token.end - token.start` bytes. The escapes were
    /// validated by ``scanString()``; a lone surrogate fails with ``ParseError/Code/invalidUTF8``.
    func decode(_ token: JSONStringToken, into out: UnsafeMutableRawBufferPointer) throws(ParseError) -> Int {
        var k = token.start
        var w = 0
        while k < token.end {
            let b = p[k]
            if b != UInt8(ascii: "\\") {
                out[w] = b
                w += 1
                k += 1
                continue
            }
            let c = p[k + 1]
            k += 2
            switch c {
            case UInt8(ascii: "b"): out[w] = 0x08
            case UInt8(ascii: "f"): out[w] = 0x0C
            case UInt8(ascii: "n"): out[w] = 0x0A
            case UInt8(ascii: "r"): out[w] = 0x0D
            case UInt8(ascii: "t"): out[w] = 0x09
            case UInt8(ascii: "u"):
                var scalar = Self.hex4(p, k)!
                k += 4
                if scalar >= 0xD800 && scalar <= 0xDBFF {
                    guard k + 6 <= token.end, p[k] == UInt8(ascii: "\\"), p[k + 1] == UInt8(ascii: "u"),
                          let low = Self.hex4(p, k + 2), low >= 0xDC00, low <= 0xDFFF
                    else {
                        throw ParseError(code: .invalidUTF8, message: "unpaired surrogate escape at column \(k - 5)")
                    }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    k += 6
                } else if scalar >= 0xDC00 && scalar <= 0xDFFF {
                    throw ParseError(code: .invalidUTF8, message: "unpaired surrogate escape at column \(k - 5)")
                }
                w += UTF8Validation.encode(scalar, into: out, at: w)
                continue
            default:  // \" \\ \/
                out[w] = c
            }
            w += 1
        }
        return w
    }

    /// Consumes the ASCII literal `lit` or fails.
    @inline(__always)
    private mutating func literal(_ lit: StaticString) throws(ParseError) {
        let n = lit.utf8CodeUnitCount
        guard i + n <= end, memcmp(p.base + i, lit.utf8Start, n) == 0 else {
            throw fail("invalid literal")
        }
        i += n
    }

    /// Scans any JSON value (plus the bare `NaN`/`Infinity`/`-Infinity`) at the cursor.
    /// Objects and arrays are skipped, at most ``maxDepth`` deep.
    mutating func scanValue(depth: Int = 0) throws(ParseError) -> JSONValueToken {
        guard i < end else { throw fail("expected a value, found end of line") }
        switch p[i] {
        case UInt8(ascii: "\""):
            return .string(try scanString())
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            if p[i] == UInt8(ascii: "-"), i + 1 < end, p[i + 1] == UInt8(ascii: "I") {
                try literal("-Infinity")
                return .nonFinite
            }
            let start = i
            guard let number = DecimalNumber.scanJSON(p, &i, end: end) else { throw fail("invalid number") }
            return .number(number, start: start, end: i)
        case UInt8(ascii: "t"):
            try literal("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try literal("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try literal("null")
            return .null
        case UInt8(ascii: "N"):
            try literal("NaN")
            return .nonFinite
        case UInt8(ascii: "I"):
            try literal("Infinity")
            return .nonFinite
        case UInt8(ascii: "{"):
            try skipContainer(close: UInt8(ascii: "}"), depth: depth + 1)
            return .object
        case UInt8(ascii: "["):
            try skipContainer(close: UInt8(ascii: "]"), depth: depth + 1)
            return .array
        default:
            throw fail("unexpected character")
        }
    }

    /// Skips an object or array whose opening bracket is at the cursor.
    private mutating func skipContainer(close: UInt8, depth: Int) throws(ParseError) {
        if depth > Self.maxDepth { throw fail("nesting deeper than \(Self.maxDepth)") }
        let isObject = close == UInt8(ascii: "}")
        i += 1
        skipWhitespace()
        if i < end, p[i] == close {
            i += 1
            return
        }
        while true {
            if isObject {
                guard i < end, p[i] == UInt8(ascii: "\"") else { throw fail("expected a string key") }
                _ = try scanString()
                skipWhitespace()
                try expect(UInt8(ascii: ":"), "':'")
                skipWhitespace()
            }
            _ = try scanValue(depth: depth)
            skipWhitespace()
            guard i < end else { throw fail(isObject ? "unterminated object" : "unterminated array") }
            if p[i] == UInt8(ascii: ",") {
                i += 1
                skipWhitespace()
            } else if p[i] == close {
                i += 1
                return
            } else {
                throw fail(isObject ? "expected ',' or '}'" : "expected ',' or ']'")
            }
        }
    }
}
