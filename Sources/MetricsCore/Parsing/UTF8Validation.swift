/// UTF-8 validation and encoding on raw bytes (Swift's `String` would repair, not reject).
enum UTF8Validation {
    /// The length of the well-formed UTF-8 sequence whose lead byte (≥ 0x80) is at `i`, or 0 when
    /// the sequence is ill-formed (stray continuation byte, overlong form, surrogate, > U+10FFFF,
    /// truncated). `end` bounds the readable bytes.
    @inline(__always)
    static func sequenceLength(_ p: LineBytes, at i: Int, end: Int) -> Int {
        let b0 = p[i]
        if b0 < 0xC2 { return 0 }
        if b0 < 0xE0 {
            guard i + 1 < end, p[i + 1] & 0xC0 == 0x80 else { return 0 }
            return 2
        }
        if b0 < 0xF0 {
            guard i + 2 < end else { return 0 }
            let b1 = p[i + 1]
            let lo: UInt8 = b0 == 0xE0 ? 0xA0 : 0x80
            let hi: UInt8 = b0 == 0xED ? 0x9F : 0xBF
            guard b1 >= lo, b1 <= hi, p[i + 2] & 0xC0 == 0x80 else { return 0 }
            return 3
        }
        if b0 < 0xF5 {
            guard i + 3 < end else { return 0 }
            let b1 = p[i + 1]
            let lo: UInt8 = b0 == 0xF0 ? 0x90 : 0x80
            let hi: UInt8 = b0 == 0xF4 ? 0x8F : 0xBF
            guard b1 >= lo, b1 <= hi, p[i + 2] & 0xC0 == 0x80, p[i + 3] & 0xC0 == 0x80 else { return 0 }
            return 4
        }
        return 0
    }

    /// The offset of the first byte of an ill-formed sequence in `p[from...]`, or nil when valid.
    /// ASCII runs are skipped eight bytes at a time.
    static func firstInvalid(_ bytes: UnsafeRawBufferPointer, from: Int = 0) -> Int? {
        let end = bytes.count
        if end == 0 { return nil }
        let p = LineBytes(bytes)
        var i = from
        while i < end {
            if i + 8 <= end, p.loadUnaligned(fromByteOffset: i, as: UInt64.self) & 0x8080_8080_8080_8080 == 0 {
                i += 8
                continue
            }
            if p[i] < 0x80 {
                i += 1
                continue
            }
            let len = sequenceLength(p, at: i, end: end)
            if len == 0 { return i }
            i += len
        }
        return nil
    }

    /// Writes `scalar` as UTF-8 at `out[at...]`; returns the number of bytes (1...4).
    @inline(__always)
    static func encode(_ scalar: UInt32, into out: UnsafeMutableRawBufferPointer, at w: Int) -> Int {
        if scalar < 0x80 {
            out[w] = UInt8(scalar)
            return 1
        } else if scalar < 0x800 {
            out[w] = UInt8(0xC0 | (scalar >> 6))
            out[w + 1] = UInt8(0x80 | (scalar & 0x3F))
            return 2
        } else if scalar < 0x10000 {
            out[w] = UInt8(0xE0 | (scalar >> 12))
            out[w + 1] = UInt8(0x80 | ((scalar >> 6) & 0x3F))
            out[w + 2] = UInt8(0x80 | (scalar & 0x3F))
            return 3
        } else {
            out[w] = UInt8(0xF0 | (scalar >> 18))
            out[w + 1] = UInt8(0x80 | ((scalar >> 12) & 0x3F))
            out[w + 2] = UInt8(0x80 | ((scalar >> 6) & 0x3F))
            out[w + 3] = UInt8(0x80 | (scalar & 0x3F))
            return 4
        }
    }
}
