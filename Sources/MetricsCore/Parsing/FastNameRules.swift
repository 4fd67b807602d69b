/// ``NameRules``' byte sets as pairs of 64-bit masks over ASCII, so the hot paths test a byte
/// with a shift instead of going through the shared table (a lazily initialized global array).
/// Bytes ≥ 0x80 are never in names or label keys and always in label values. A test checks
/// these masks against ``NameRules`` byte for byte.
enum FastNameRules {
    static let nameLow: UInt64 = 0x07FF_E000_0000_0000
    static let nameHigh: UInt64 = 0x07FF_FFFE_87FF_FFFE
    static let labelKeyLow: UInt64 = 0x03FF_6000_0000_0000
    static let labelKeyHigh: UInt64 = 0x07FF_FFFE_87FF_FFFE
    static let labelValueLow: UInt64 = 0xDFFF_EFFA_0000_0000
    static let labelValueHigh: UInt64 = 0x7FFF_FFFF_EFFF_FFFF

    @inline(__always)
    static func contains(_ b: UInt8, _ low: UInt64, _ high: UInt64, nonASCII: Bool) -> Bool {
        if b >= 0x80 { return nonASCII }
        return ((b < 64 ? low : high) >> UInt64(b & 63)) & 1 != 0
    }

    @inline(__always)
    static func all(_ p: UnsafeRawBufferPointer, _ low: UInt64, _ high: UInt64, nonASCII: Bool) -> Bool {
        for b in p where !contains(b, low, high, nonASCII: nonASCII) { return false }
        return true
    }

    /// Same as ``NameRules/isValidName(_:)-(UnsafeRawBufferPointer)``.
    @inline(__always)
    static func isValidName(_ p: UnsafeRawBufferPointer) -> Bool {
        p.count >= 1 && p.count <= NameRules.maxNameLength && all(p, nameLow, nameHigh, nonASCII: false)
    }

    /// Same as ``NameRules/isValidLabelKey(_:)``.
    @inline(__always)
    static func isValidLabelKey(_ p: UnsafeRawBufferPointer) -> Bool {
        p.count >= 1 && p.count <= NameRules.maxNameLength && all(p, labelKeyLow, labelKeyHigh, nonASCII: false)
    }

    /// Same as ``NameRules/isValidLabelValue(_:)``.
    @inline(__always)
    static func isValidLabelValue(_ p: UnsafeRawBufferPointer) -> Bool {
        p.count <= NameRules.maxLabelValueLength && all(p, labelValueLow, labelValueHigh, nonASCII: true)
    }
}
