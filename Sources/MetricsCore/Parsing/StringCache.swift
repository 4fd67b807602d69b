#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A tiny direct-mapped cache from bytes to `String`, so names longer than 15 bytes (which
/// would otherwise cost a heap allocation per sample, e.g. `mem_available_percent`) are built
/// once per stream and then shared. Strings of up to 15 bytes are inline small strings and are
/// simply created.
struct StringCache {
    private static let slots = 64
    private var keys: [[UInt8]] = Array(repeating: [], count: StringCache.slots)
    private var values: [String] = Array(repeating: "", count: StringCache.slots)

    /// The string for `bytes`, which must be valid UTF-8.
    @inline(__always)
    mutating func string(_ bytes: UnsafeRawBufferPointer) -> String {
        if bytes.count <= 15 { return makeString(bytes) }
        return cachedString(bytes)
    }

    private mutating func cachedString(_ bytes: UnsafeRawBufferPointer) -> String {
        var h: UInt32 = 2_166_136_261
        for b in bytes { h = (h ^ UInt32(b)) &* 16_777_619 }
        let slot = Int(h ^ (h >> 16)) & (Self.slots - 1)
        let hit = keys[slot].withUnsafeBytes { k in
            k.count == bytes.count && memcmp(k.baseAddress!, bytes.baseAddress!, k.count) == 0
        }
        if hit { return values[slot] }
        keys[slot].removeAll(keepingCapacity: true)
        keys[slot].append(contentsOf: bytes)
        let s = makeString(bytes)
        values[slot] = s
        return s
    }
}
