/// Appends JSON text to a byte array.
///
/// Hand-written because the broadcaster encodes tens of thousands of small objects per tick and
/// `JSONEncoder` would cost an allocation-heavy `Encodable` walk for each; this writes bytes directly.
public struct JSONWriter: Sendable {
    /// The bytes written so far.
    public var bytes: [UInt8]

    /// Creates a writer with an initial capacity.
    public init(capacity: Int = 256) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    /// Appends raw bytes (already valid JSON).
    @inlinable public mutating func raw(_ s: String) {
        // Native strings (literals included) are contiguous UTF-8: one memcpy instead of a
        // byte-by-byte walk of the UTF-8 view.
        var s = s
        s.withUTF8 { bytes.append(contentsOf: $0) }
    }
    /// Appends raw bytes (already valid JSON).
    @inlinable public mutating func raw(_ b: [UInt8]) { bytes.append(contentsOf: b) }
    /// Appends one byte.
    @inlinable public mutating func byte(_ b: UInt8) { bytes.append(b) }

    /// Appends a quoted, escaped string.
    public mutating func string(_ s: String) {
        bytes.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): bytes.append(contentsOf: [0x5C, 0x22])
            case UInt8(ascii: "\\"): bytes.append(contentsOf: [0x5C, 0x5C])
            case 0x0A: bytes.append(contentsOf: [0x5C, UInt8(ascii: "n")])
            case 0x0D: bytes.append(contentsOf: [0x5C, UInt8(ascii: "r")])
            case 0x09: bytes.append(contentsOf: [0x5C, UInt8(ascii: "t")])
            case 0..<0x20:
                let hex: [UInt8] = Array("0123456789abcdef".utf8)
                bytes.append(contentsOf: [0x5C, UInt8(ascii: "u"), 0x30, 0x30, hex[Int(b >> 4)], hex[Int(b & 15)]])
            default: bytes.append(b)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    /// Appends `"key":`.
    @inlinable public mutating func key(_ k: String) {
        string(k)
        bytes.append(UInt8(ascii: ":"))
    }

    /// Appends a number; non-finite values become `null` (JSON has no NaN).
    ///
    /// Integers and values with at most six decimals (most metric values: `42.5`, `0.125`) are
    /// written digit by digit; the general shortest-representation algorithm (`description`) is
    /// used only for the rest. Either way the text parses back to exactly `d`: the fast path is
    /// taken only when `(d × 10⁶).rounded() / 10⁶ == d`, and the decimal it prints is that quotient.
    public mutating func number(_ d: Double) {
        guard d.isFinite else { raw("null"); return }
        if d == d.rounded(.towardZero) && abs(d) < 1e15 {
            integer(Int64(d))
            return
        }
        let scaled = (d * 1_000_000).rounded()
        if abs(scaled) < 1e15 && scaled / 1_000_000 == d {
            var n = Int64(scaled)
            if n < 0 { bytes.append(UInt8(ascii: "-")); n = -n }
            integer(n / 1_000_000)
            var fraction = n % 1_000_000
            var digits = 6
            while fraction % 10 == 0 { fraction /= 10; digits -= 1 }  // fraction > 0: d is not an integer
            bytes.append(UInt8(ascii: "."))
            var divisor: Int64 = 1
            for _ in 1..<digits { divisor *= 10 }
            while divisor > 0 {
                bytes.append(UInt8(ascii: "0") + UInt8(fraction / divisor % 10))
                divisor /= 10
            }
            return
        }
        raw(d.description)
    }

    /// Appends an integer.
    @inlinable public mutating func number<I: BinaryInteger>(_ i: I) {
        if let v = Int64(exactly: i) { integer(v) } else { raw(String(i)) }
    }

    /// Appends a 64-bit integer (no intermediate `String`).
    public mutating func integer(_ value: Int64) {
        Self.withDecimalDigits(value) { bytes.append(contentsOf: $0) }
    }

    /// Calls `body` with `value` in decimal ASCII (with a leading `-` when negative), formatted in
    /// a stack buffer: one definition of integer text for every writer that must not allocate
    /// (this one, and the transport's per-request summary line, laid out on the stack).
    public static func withDecimalDigits<R>(_ value: Int64, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: 19 digits and a sign fit
        return try withUnsafeMutableBytes(of: &digits) { raw in
            var v = value.magnitude
            var i = raw.count
            repeat {
                i -= 1
                raw[i] = UInt8(ascii: "0") + UInt8(v % 10)
                v /= 10
            } while v > 0
            if value < 0 { i -= 1; raw[i] = UInt8(ascii: "-") }
            return try body(UnsafeRawBufferPointer(rebasing: raw[i...]))
        }
    }

    /// Appends a number or `null`.
    public mutating func number(_ d: Double?) {
        if let d { number(d) } else { raw("null") }
    }

    /// Appends bytes as a quoted base64 string (RFC 4648, with padding).
    public mutating func base64(_ data: [UInt8]) {
        let table: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        bytes.reserveCapacity(bytes.count + (data.count + 2) / 3 * 4 + 2)
        bytes.append(UInt8(ascii: "\""))
        var i = 0
        while i + 2 < data.count {
            let n = UInt32(data[i]) << 16 | UInt32(data[i + 1]) << 8 | UInt32(data[i + 2])
            bytes.append(table[Int(n >> 18 & 63)]); bytes.append(table[Int(n >> 12 & 63)])
            bytes.append(table[Int(n >> 6 & 63)]); bytes.append(table[Int(n & 63)])
            i += 3
        }
        let rest = data.count - i
        if rest > 0 {
            let n = UInt32(data[i]) << 16 | (rest == 2 ? UInt32(data[i + 1]) << 8 : 0)
            bytes.append(table[Int(n >> 18 & 63)]); bytes.append(table[Int(n >> 12 & 63)])
            bytes.append(rest == 2 ? table[Int(n >> 6 & 63)] : UInt8(ascii: "="))
            bytes.append(UInt8(ascii: "="))
        }
        bytes.append(UInt8(ascii: "\""))
    }
}
