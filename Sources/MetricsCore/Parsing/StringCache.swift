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

    /// Table sizes: the tables start small and grow (×4, rehashed) while they keep evicting, up
    /// to the largest. One agent repeats a handful of strings; a relay (Telegraf aggregating a
    /// fleet) repeats thousands. Per-stream memory matters at 10,000 agent connections: two
    /// full-size caches were a quarter of an idle agent connection.
    private static let minSmallSlots = 16, maxSmallSlots = 256
    private static let minLargeSlots = 4, maxLargeSlots = 64
    /// Inserts ignored before the tables are allocated: a short stream (a tiny POST of a few
    /// lines) never pays for allocating, clearing and destroying the tables.
    private static let warmup = 24
    private var small: [SmallEntry] = []
    private var largeKeys: [[UInt8]] = []
    private var largeValues: [String] = []
    private var inserts = 0
    /// Current table sizes (0 before the warm-up), for tests.
    var tableSizes: (small: Int, large: Int) { (small.count, largeKeys.count) }
    /// Entries replaced since the tables last grew.
    private var smallEvictions = 0, largeEvictions = 0

    /// The cached string for `bytes`, if any.
    @inline(__always)
    func lookup(_ bytes: UnsafeRawBufferPointer) -> String? {
        if small.isEmpty { return nil }
        let n = bytes.count
        if n <= 15 {
            let (w0, w1) = Self.words(bytes)
            let slot = Self.smallSlot(w0, w1, n, mask: small.count - 1)
            return small.withUnsafeBufferPointer { s in
                // Two-way: the pair of entries slot & ~1, slot | 1.
                let a = s[slot & ~1]
                if a.w0 == w0 && a.w1 == w1 && a.length == n { return a.string }
                let b = s[slot | 1]
                return b.w0 == w0 && b.w1 == w1 && b.length == n ? b.string : nil
            }
        }
        let slot = Self.largeSlot(bytes, mask: largeKeys.count - 1)
        let hit = largeKeys[slot].withUnsafeBytes { k in
            k.count == n && memcmp(k.baseAddress!, bytes.baseAddress!, n) == 0
        }
        return hit ? largeValues[slot] : nil
    }

    /// Remembers `string` as the string for `bytes`, replacing what shared its slot.
    mutating func insert(_ bytes: UnsafeRawBufferPointer, _ string: String) {
        if small.isEmpty {
            inserts += 1
            if inserts <= Self.warmup { return }
            small = [SmallEntry](repeating: SmallEntry(), count: Self.minSmallSlots)
            largeKeys = Array(repeating: [], count: Self.minLargeSlots)
            largeValues = Array(repeating: "", count: Self.minLargeSlots)
        }
        let n = bytes.count
        if n <= 15 {
            let (w0, w1) = Self.words(bytes)
            var slot = Self.smallSlot(w0, w1, n, mask: small.count - 1)
            if small[slot | 1].length >= 0 {
                smallEvictions += 1
                if smallEvictions > 2 * small.count && small.count < Self.maxSmallSlots {
                    growSmall()
                    slot = Self.smallSlot(w0, w1, n, mask: small.count - 1)
                }
            }
            // The newest goes first; the previous first is kept as second (LRU of two).
            small.swapAt(slot & ~1, slot | 1)
            small[slot & ~1] = SmallEntry(w0: w0, w1: w1, length: n, string: string)
            return
        }
        var slot = Self.largeSlot(bytes, mask: largeKeys.count - 1)
        if !largeKeys[slot].isEmpty {
            largeEvictions += 1
            if largeEvictions > 2 * largeKeys.count && largeKeys.count < Self.maxLargeSlots {
                growLarge()
                slot = Self.largeSlot(bytes, mask: largeKeys.count - 1)
            }
        }
        largeKeys[slot].removeAll(keepingCapacity: true)
        largeKeys[slot].append(contentsOf: bytes)
        largeValues[slot] = string
    }

    /// Four times the small table, entries rehashed (most recent first within each pair).
    private mutating func growSmall() {
        let old = small
        small = [SmallEntry](repeating: SmallEntry(), count: old.count * 4)
        smallEvictions = 0
        for pair in stride(from: 0, to: old.count, by: 2) {
            for e in [old[pair + 1], old[pair]] where e.length >= 0 {  // older first, so the newer ends up first
                let slot = Self.smallSlot(e.w0, e.w1, e.length, mask: small.count - 1)
                small.swapAt(slot & ~1, slot | 1)
                small[slot & ~1] = e
            }
        }
    }

    /// Four times the large table, entries rehashed.
    private mutating func growLarge() {
        let oldKeys = largeKeys, oldValues = largeValues
        largeKeys = Array(repeating: [], count: oldKeys.count * 4)
        largeValues = Array(repeating: "", count: oldKeys.count * 4)
        largeEvictions = 0
        for i in oldKeys.indices where !oldKeys[i].isEmpty {
            let slot = oldKeys[i].withUnsafeBytes { Self.largeSlot($0, mask: largeKeys.count - 1) }
            largeKeys[slot] = oldKeys[i]
            largeValues[slot] = oldValues[i]
        }
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

    /// The slot of a short string in a table of `mask + 1` entries (the hash's top byte, masked).
    @inline(__always)
    private static func smallSlot(_ w0: UInt64, _ w1: UInt64, _ n: Int, mask: Int) -> Int {
        let h = (w0 &* 0x9E37_79B9_7F4A_7C15) ^ (w1 &* 0xC2B2_AE3D_27D4_EB4F) ^ UInt64(n)
        return Int(truncatingIfNeeded: ((h ^ (h >> 29)) &* 0xBF58_476D_1CE4_E5B9) >> 56) & mask
    }

    /// Hashes the first and last eight bytes and the length (`b` has more than 15 bytes).
    @inline(__always)
    private static func largeSlot(_ b: UnsafeRawBufferPointer, mask: Int) -> Int {
        let first = b.loadUnaligned(as: UInt64.self)
        let last = b.loadUnaligned(fromByteOffset: b.count - 8, as: UInt64.self)
        let h = (first &* 0x9E37_79B9_7F4A_7C15) ^ (last &* 0xC2B2_AE3D_27D4_EB4F) ^ UInt64(b.count)
        return Int(truncatingIfNeeded: ((h ^ (h >> 29)) &* 0xBF58_476D_1CE4_E5B9) >> 56) & mask
    }
}
