#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A small direct-mapped cache from bytes to the `String` built from them.
///
/// A stream repeats the same few server ids, metric names and label sets on every line, so
/// looking them up is cheaper than building them: a hit skips UTF-8 validation, name
/// validation (callers insert only validated strings) and, for strings over 15 bytes, a heap
/// allocation per sample. Strings of up to 15 bytes are compared as two machine words and are
/// inline small strings, so a hit copies 16 bytes and touches no reference count.
struct StringCache {
    private struct SmallEntry {
        var w0: UInt64 = 0
        var w1: UInt64 = 0
        var length = -1
        var string = ""
    }

    private static let smallSlots = 256
    private static let largeSlots = 64
    private var small = [SmallEntry](repeating: SmallEntry(), count: StringCache.smallSlots)
    private var largeKeys: [[UInt8]] = Array(repeating: [], count: StringCache.largeSlots)
    private var largeValues: [String] = Array(repeating: "", count: StringCache.largeSlots)

    /// The cached string for `bytes`, if any.
    @inline(__always)
    func lookup(_ bytes: UnsafeRawBufferPointer) -> String? {
        let n = bytes.count
        if n <= 15 {
            let (w0, w1) = Self.words(bytes)
            let slot = Self.smallSlot(w0, w1, n)
            return small.withUnsafeBufferPointer { s in
                let e = s[slot]
                return e.w0 == w0 && e.w1 == w1 && e.length == n ? e.string : nil
            }
        }
        let slot = Self.largeSlot(bytes)
        let hit = largeKeys[slot].withUnsafeBytes { k in
            k.count == n && memcmp(k.baseAddress!, bytes.baseAddress!, n) == 0
        }
        return hit ? largeValues[slot] : nil
    }

    /// Remembers `string` as the string for `bytes`, replacing what shared its slot.
    mutating func insert(_ bytes: UnsafeRawBufferPointer, _ string: String) {
        let n = bytes.count
        if n <= 15 {
            let (w0, w1) = Self.words(bytes)
            small[Self.smallSlot(w0, w1, n)] = SmallEntry(w0: w0, w1: w1, length: n, string: string)
            return
        }
        let slot = Self.largeSlot(bytes)
        largeKeys[slot].removeAll(keepingCapacity: true)
        largeKeys[slot].append(contentsOf: bytes)
        largeValues[slot] = string
    }

    /// The string for `bytes` (valid UTF-8), from the cache or built and cached.
    @inline(__always)
    mutating func string(_ bytes: UnsafeRawBufferPointer) -> String {
        if let s = lookup(bytes) { return s }
        let s = makeString(bytes)
        insert(bytes, s)
        return s
    }

    /// Packs up to 15 bytes into two words (little-endian order, zero padded) without reading
    /// outside `bytes`.
    @inline(__always)
    private static func words(_ b: UnsafeRawBufferPointer) -> (UInt64, UInt64) {
        let n = b.count
        if n >= 8 {
            let w0 = UInt64(littleEndian: b.loadUnaligned(as: UInt64.self))
            if n == 8 { return (w0, 0) }
            let tail = UInt64(littleEndian: b.loadUnaligned(fromByteOffset: n - 8, as: UInt64.self))
            return (w0, tail >> UInt64((16 - n) * 8))
        }
        if n >= 4 {
            let lo = UInt64(UInt32(littleEndian: b.loadUnaligned(as: UInt32.self)))
            let hi = UInt64(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: n - 4, as: UInt32.self)))
            return (lo | hi << UInt64((n - 4) * 8), 0)
        }
        var w: UInt64 = 0
        for k in 0..<n { w |= UInt64(b[k]) << UInt64(k * 8) }
        return (w, 0)
    }

    @inline(__always)
    private static func smallSlot(_ w0: UInt64, _ w1: UInt64, _ n: Int) -> Int {
        let h = (w0 &* 0x9E37_79B9_7F4A_7C15) ^ (w1 &* 0xC2B2_AE3D_27D4_EB4F) ^ UInt64(n)
        return Int(truncatingIfNeeded: ((h ^ (h >> 29)) &* 0xBF58_476D_1CE4_E5B9) >> 56) & (smallSlots - 1)
    }

    @inline(__always)
    private static func largeSlot(_ b: UnsafeRawBufferPointer) -> Int {
        var h: UInt32 = 2_166_136_261
        for x in b { h = (h ^ UInt32(x)) &* 16_777_619 }
        return Int(h ^ (h >> 16)) & (largeSlots - 1)
    }
}
