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
    @inlinable public mutating func raw(_ s: String) { bytes.append(contentsOf: s.utf8) }
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
    public mutating func number(_ d: Double) {
        guard d.isFinite else { raw("null"); return }
        if d == d.rounded(.towardZero) && abs(d) < 1e15 {
            raw(String(Int64(d)))
        } else {
            raw(d.description)
        }
    }

    /// Appends an integer.
    @inlinable public mutating func number<I: BinaryInteger>(_ i: I) { raw(String(i)) }

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
