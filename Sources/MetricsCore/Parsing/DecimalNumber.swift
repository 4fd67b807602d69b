#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A decimal number as scanned from text: `±mantissa × 10^exponent`.
///
/// The mantissa keeps the first 19 significant digits; ``exact`` is false when a dropped digit
/// was not zero. Conversion to `Double` takes Clinger's fast path when it is provably exact
/// and otherwise hands the original text to `strtod`, so results always equal `Double(String)`.
struct DecimalNumber {
    var mantissa: UInt64 = 0
    var exponent = 0
    var negative = false
    /// No non-zero significant digit was dropped.
    var exact = true
    /// The text had neither a fraction nor an exponent.
    var isInteger = true
    /// Significant digits kept in ``mantissa``.
    private var digits = 0

    @inline(__always)
    mutating func addIntegerDigit(_ d: UInt8) {
        if mantissa == 0 && d == 0 { return }  // leading zero
        if digits < 19 {
            mantissa = mantissa &* 10 &+ UInt64(d)
            digits += 1
        } else {
            exponent += 1
            if d != 0 { exact = false }
        }
    }

    @inline(__always)
    mutating func addFractionDigit(_ d: UInt8) {
        if mantissa == 0 && d == 0 {
            exponent -= 1  // leading zero after the point
        } else if digits < 19 {
            mantissa = mantissa &* 10 &+ UInt64(d)
            digits += 1
            exponent -= 1
        } else if d != 0 {
            exact = false
        }
    }

    /// Parses `[+-]?[0-9]+` at `i` (just after `e` or `E`); nil when there is no digit.
    /// The magnitude saturates at 1,000,000, far beyond any finite or non-zero double.
    @inline(__always)
    private static func scanExponent(_ p: LineBytes, _ i: inout Int, end: Int) -> Int? {
        var negativeExponent = false
        if i < end, p[i] == UInt8(ascii: "+") || p[i] == UInt8(ascii: "-") {
            negativeExponent = p[i] == UInt8(ascii: "-")
            i &+= 1
        }
        let start = i
        var e = 0
        while i < end {
            let d = p[i] &- 0x30
            if d > 9 { break }
            if e < 1_000_000 { e = e &* 10 &+ Int(d) }
            i &+= 1
        }
        if i == start { return nil }
        return negativeExponent ? -e : e
    }

    /// Sets the mantissa and exponent from the digits `p[intStart..<intEnd]` and
    /// `p[fracStart..<fracEnd]` and the explicit exponent `e`.
    @inline(__always)
    private mutating func accumulate(
        _ p: LineBytes, _ intStart: Int, _ intEnd: Int, _ fracStart: Int, _ fracEnd: Int, exponent e: Int
    ) {
        let fractionDigits = fracEnd - fracStart
        if (intEnd - intStart) + fractionDigits <= 19 {
            // Common case: every digit fits in the mantissa, which cannot overflow.
            mantissa = Self.digitsValue(p, fracStart, fracEnd, initial: Self.digitsValue(p, intStart, intEnd, initial: 0))
            exponent = e - fractionDigits
            return
        }
        for k in intStart..<intEnd { addIntegerDigit(p[k] &- 0x30) }
        for k in fracStart..<fracEnd { addFractionDigit(p[k] &- 0x30) }
        exponent += e
    }

    /// `initial` followed by the decimal digits `p[start..<end]` (known to be digits), eight at a
    /// time where possible. The caller guarantees the result fits (at most 19 digits in all).
    @inline(__always)
    static func digitsValue(_ p: LineBytes, _ start: Int, _ end: Int, initial: UInt64) -> UInt64 {
        var m = initial
        var k = start
        while end - k >= 8 {
            m = m &* 100_000_000 &+ eightDigits(p.loadUnaligned(fromByteOffset: k, as: UInt64.self))
            k &+= 8
        }
        while k < end {
            m = m &* 10 &+ UInt64(p[k] &- 0x30)
            k &+= 1
        }
        return m
    }

    /// The value of eight ASCII digits loaded as a little-endian word (first digit in the low byte).
    @inline(__always)
    static func eightDigits(_ word: UInt64) -> UInt64 {
        var v = UInt64(littleEndian: word) &- 0x3030_3030_3030_3030
        v = (v &* 10 &+ (v >> 8)) & 0x00FF_00FF_00FF_00FF
        v = (v &* 100 &+ (v >> 16)) & 0x0000_FFFF_0000_FFFF
        return (v &* 10_000 &+ (v >> 32)) & 0xFFFF_FFFF
    }

    /// Advances `k` past the ASCII digits at `p[k..<end]`, eight at a time where possible.
    @inline(__always)
    static func skipDigits(_ p: LineBytes, _ k: inout Int, end: Int) {
        while end - k >= 8 {
            let w = UInt64(littleEndian: p.loadUnaligned(fromByteOffset: k, as: UInt64.self))
            // High bit set in each byte that is below '0' or above '9'; the lowest one is exact.
            let nonDigit = ((w &+ 0x4646_4646_4646_4646) | (w &- 0x3030_3030_3030_3030)) & 0x8080_8080_8080_8080
            if nonDigit != 0 {
                k &+= nonDigit.trailingZeroBitCount >> 3
                return
            }
            k &+= 8
        }
        while k < end, p[k] &- 0x30 <= 9 { k &+= 1 }
    }

    private static let powersOfTen: [Double] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
        1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ]

    private static let integerPowersOfTen: [UInt64] = [
        1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000, 1_000_000_000,
        10_000_000_000, 100_000_000_000, 1_000_000_000_000, 10_000_000_000_000,
        100_000_000_000_000, 1_000_000_000_000_000, 10_000_000_000_000_000,
        100_000_000_000_000_000, 1_000_000_000_000_000_000, 10_000_000_000_000_000_000,
    ]

    /// The correctly rounded `Double` (±infinity on overflow).
    /// - Parameter text: The number's exact text, used by the slow path.
    @inline(__always)
    func doubleValue(text: UnsafeRawBufferPointer) -> Double {
        if mantissa == 0 { return negative ? -0.0 : 0.0 }
        if exact && mantissa <= 1 << 53 {
            // Clinger: an exact integer below 2^53 times or divided by an exact power of ten is
            // one correctly rounded IEEE operation.
            var result: Double?
            if exponent == 0 {
                result = Double(mantissa)
            } else if exponent > 0 && exponent <= 22 {
                result = Double(mantissa) * Self.powersOfTen[exponent]
            } else if exponent < 0 && exponent >= -22 {
                result = Double(mantissa) / Self.powersOfTen[-exponent]
            } else if exponent > 22 && exponent <= 22 + 15 {
                // Move the excess power into the mantissa while it stays exact (e.g. 5e30).
                var m = mantissa
                var k = exponent - 22
                while k > 0 && m <= (1 << 53) / 10 {
                    m *= 10
                    k -= 1
                }
                if k == 0 { result = Double(m) * 1e22 }
            }
            if let r = result { return negative ? -r : r }
        }
        return Self.strtodValue(text)
    }

    /// The value truncated toward zero, or nil when its magnitude is 10^18 or more.
    func truncatedMagnitude() -> UInt64? {
        if mantissa == 0 { return 0 }
        if exponent == 0 { return mantissa < 1_000_000_000_000_000_000 ? mantissa : nil }
        if exponent >= 0 {
            if exponent > 18 { return nil }
            let (v, overflow) = mantissa.multipliedReportingOverflow(by: Self.integerPowersOfTen[exponent])
            return overflow || v >= 1_000_000_000_000_000_000 ? nil : v
        }
        let k = -exponent
        if k > 19 { return 0 }
        return mantissa / Self.integerPowersOfTen[k]
    }

    /// Slow path: `strtod` on a null-terminated copy of the text.
    static func strtodValue(_ text: UnsafeRawBufferPointer) -> Double {
        let len = text.count
        guard let src = text.baseAddress, len > 0 else { return .nan }
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: len + 1) { buf -> Double in
            let base = buf.baseAddress!
            UnsafeMutableRawPointer(base).copyMemory(from: src, byteCount: len)
            base[len] = 0
            var endPointer: UnsafeMutablePointer<CChar>?
            let value = strtod(base, &endPointer)
            if endPointer == base + len { return value }
            // Only reachable under a process locale whose decimal point is not '.'.
            return Double(String(decoding: text, as: UTF8.self)) ?? .nan
        }
    }

    // MARK: - Scanning

    /// Scans a number with the strict JSON grammar `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    /// starting at `i`. On success `i` is just past the number; on failure returns nil with `i`
    /// near the offending byte.
    @inline(__always)
    static func scanJSON(_ p: LineBytes, _ i: inout Int, end: Int) -> DecimalNumber? {
        var n = DecimalNumber()
        var k = i
        if k < end, p[k] == UInt8(ascii: "-") {
            n.negative = true
            k &+= 1
        }
        let intStart = k
        skipDigits(p, &k, end: end)
        let intEnd = k
        i = k
        if intEnd == intStart { return nil }
        if p[intStart] == UInt8(ascii: "0") && intEnd - intStart > 1 {
            i = intStart + 1  // leading zero
            return nil
        }
        var fracStart = k
        var fracEnd = k
        if k < end, p[k] == UInt8(ascii: ".") {
            k &+= 1
            fracStart = k
            skipDigits(p, &k, end: end)
            fracEnd = k
            i = k
            if fracEnd == fracStart { return nil }
            n.isInteger = false
        }
        var e = 0
        if k < end, p[k] | 0x20 == UInt8(ascii: "e") {
            k &+= 1
            n.isInteger = false
            guard let exponent = scanExponent(p, &k, end: end) else {
                i = k
                return nil
            }
            e = exponent
        }
        i = k
        n.accumulate(p, intStart, intEnd, fracStart, fracEnd, exponent: e)
        return n
    }

    /// Scans all of `p[from..<end]` as a line-protocol float: `[+-]?[0-9]*(\.[0-9]*)?([eE][+-]?[0-9]+)?`
    /// with at least one mantissa digit (so `1`, `-1.5`, `1.`, `.5`, `1e3`, `1.5E-3`). Nil when malformed.
    static func scanLenient(_ p: LineBytes, from: Int, end: Int) -> DecimalNumber? {
        var n = DecimalNumber()
        var k = from
        if k < end, p[k] == UInt8(ascii: "-") || p[k] == UInt8(ascii: "+") {
            n.negative = p[k] == UInt8(ascii: "-")
            k &+= 1
        }
        let intStart = k
        skipDigits(p, &k, end: end)
        let intEnd = k
        var fracStart = k
        var fracEnd = k
        if k < end, p[k] == UInt8(ascii: ".") {
            k &+= 1
            fracStart = k
            skipDigits(p, &k, end: end)
            fracEnd = k
            n.isInteger = false
        }
        guard intEnd > intStart || fracEnd > fracStart else { return nil }
        var e = 0
        if k < end, p[k] | 0x20 == UInt8(ascii: "e") {
            k &+= 1
            n.isInteger = false
            guard let exponent = scanExponent(p, &k, end: end) else { return nil }
            e = exponent
        }
        guard k == end else { return nil }
        n.accumulate(p, intStart, intEnd, fracStart, fracEnd, exponent: e)
        return n
    }
}
