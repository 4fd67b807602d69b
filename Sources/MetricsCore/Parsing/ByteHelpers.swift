#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Byte-level helpers shared by the parsers: UTF-8 validation, string creation and the
/// canonical label builder.
enum UTF8Validation {
    /// The length of the well-formed UTF-8 sequence whose lead byte (≥ 0x80) is at `i`, or 0 when
    /// the sequence is ill-formed (stray continuation byte, overlong form, surrogate, > U+10FFFF,
    /// truncated). `end` bounds the readable bytes.
    @inline(__always)
    static func sequenceLength(_ p: UnsafeRawBufferPointer, at i: Int, end: Int) -> Int {
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
    static func firstInvalid(_ p: UnsafeRawBufferPointer, from: Int = 0) -> Int? {
        let end = p.count
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

extension UnsafeRawBufferPointer {
    /// `self[from..<to]` as a buffer (no copy).
    @inline(__always)
    func slice(_ from: Int, _ to: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: self[from..<to])
    }
}

/// Builds a `String` from bytes already validated as UTF-8. Up to 15 bytes the result is a small
/// (inline, allocation-free) string.
@inline(__always)
func makeString(_ bytes: UnsafeRawBufferPointer) -> String {
    String(decoding: bytes, as: UTF8.self)
}

/// Text for error messages: the bytes, lossily decoded and shortened.
func quoted(_ bytes: UnsafeRawBufferPointer) -> String {
    let limit = 64
    let s = String(decoding: bytes.count > limit ? bytes.slice(0, limit) : bytes, as: UTF8.self)
    return "'" + s + (bytes.count > limit ? "…'" : "'")
}

/// A reusable byte buffer with an explicit fill level. Clearing is O(1) and appends copy
/// in bulk, so hot loops do not go through `Array`'s general-purpose paths for every byte.
struct ScratchBytes {
    private var storage: [UInt8] = Array(repeating: 0, count: 256)
    /// Bytes in use.
    private(set) var count = 0

    var isEmpty: Bool { count == 0 }

    @inline(__always)
    mutating func removeAll() { count = 0 }

    /// Drops bytes past `length`.
    @inline(__always)
    mutating func truncate(to length: Int) { count = min(count, length) }

    @inline(__always)
    private mutating func reserve(_ extra: Int) {
        if count + extra > storage.count {
            storage.append(contentsOf: repeatElement(0, count: max(count + extra - storage.count, storage.count)))
        }
    }

    @inline(__always)
    mutating func append(_ byte: UInt8) {
        reserve(1)
        storage[count] = byte
        count += 1
    }

    /// Appends bytes.
    @inline(__always)
    mutating func append(_ src: UnsafeRawBufferPointer) {
        guard let base = src.baseAddress, src.count > 0 else { return }
        reserve(src.count)
        let at = count
        storage.withUnsafeMutableBytes { $0.baseAddress!.advanced(by: at).copyMemory(from: base, byteCount: src.count) }
        count += src.count
    }

    /// Appends at most `capacity` bytes written by `body`, which returns how many it wrote.
    @inline(__always)
    mutating func append(capacity: Int, _ body: (UnsafeMutableRawBufferPointer) -> Int) {
        reserve(capacity)
        let at = count
        let written = storage.withUnsafeMutableBytes { body(UnsafeMutableRawBufferPointer(rebasing: $0[at..<(at + capacity)])) }
        count += written
    }

    /// Calls `body` with the bytes in use.
    @inline(__always)
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        storage.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
    }

    /// Whether the bytes in use equal `other`.
    func equals(_ other: UnsafeRawBufferPointer) -> Bool {
        count == other.count && withBytes { count == 0 || memcmp($0.baseAddress!, other.baseAddress!, count) == 0 }
    }
}

/// Collects label pairs for one line and builds the canonical label string
/// (the same text as ``Labels/canonical(_:)``) without dictionaries or per-pair strings.
///
/// A pair is built as: ``startPair()``, key bytes, ``endKey()``, value bytes, ``endPair()``.
struct LabelBuilder {
    private struct Entry {
        var keyStart = 0
        var keyEnd = 0
        var valueEnd = 0
    }

    private var bytes = ScratchBytes()
    private var entries = [Entry](repeating: Entry(), count: NameRules.maxLabels)
    private var pendingStart = 0
    private var pendingKeyEnd = 0
    private var order = [Int](repeating: 0, count: NameRules.maxLabels)
    private var out: [UInt8] = Array(repeating: 0, count: 256)
    /// Recent canonical strings, so repeated label sets share one `String`.
    private var strings = StringCache()

    /// Number of complete pairs since the last ``reset()``; at most ``NameRules/maxLabels``.
    private(set) var count = 0

    @inline(__always)
    mutating func reset() {
        bytes.removeAll()
        count = 0
    }

    @inline(__always)
    mutating func startPair() { pendingStart = bytes.count }
    @inline(__always)
    mutating func endKey() { pendingKeyEnd = bytes.count }
    /// Completes the pair. The caller checks ``count`` against ``NameRules/maxLabels`` first.
    @inline(__always)
    mutating func endPair() {
        entries[count] = Entry(keyStart: pendingStart, keyEnd: pendingKeyEnd, valueEnd: bytes.count)
        count += 1
    }
    /// Drops the pair being built.
    @inline(__always)
    mutating func abandonPair() { bytes.truncate(to: pendingStart) }

    /// Length of the key of the pair being built (after ``endKey()``).
    var pendingKeyLength: Int { pendingKeyEnd - pendingStart }
    /// Length of the value of the pair being built so far.
    var pendingValueLength: Int { bytes.count - pendingKeyEnd }

    /// Adds a complete pair. The caller checks ``count`` against ``NameRules/maxLabels`` first.
    @inline(__always)
    mutating func addPair(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        let keyStart = bytes.count
        bytes.append(key)
        let keyEnd = bytes.count
        bytes.append(value)
        entries[count] = Entry(keyStart: keyStart, keyEnd: keyEnd, valueEnd: bytes.count)
        count += 1
    }

    /// Appends bytes to the pair being built.
    @inline(__always)
    mutating func append(_ src: UnsafeRawBufferPointer) { bytes.append(src) }

    /// Appends at most `capacity` bytes written by `body`, which returns how many it wrote.
    @inline(__always)
    mutating func append(capacity: Int, _ body: (UnsafeMutableRawBufferPointer) -> Int) {
        bytes.append(capacity: capacity, body)
    }

    /// Whether the pending key equals `lit`.
    func pendingKeyEquals(_ lit: StaticString) -> Bool {
        pendingKeyLength == lit.utf8CodeUnitCount && bytes.withBytes {
            memcmp($0.baseAddress! + pendingStart, lit.utf8Start, lit.utf8CodeUnitCount) == 0
        }
    }

    /// Whether the pending key is a valid label key.
    func pendingKeyIsValid() -> Bool {
        bytes.withBytes { NameRules.isValidLabelKey($0.slice(pendingStart, pendingKeyEnd)) }
    }

    /// Whether the pending value is a valid label value (UTF-8 is checked separately).
    func pendingValueIsValid() -> Bool {
        bytes.withBytes { NameRules.isValidLabelValue($0.slice(pendingKeyEnd, $0.count)) }
    }

    /// Calls `body` with the pending key (after ``endKey()``).
    func withPendingKey<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        bytes.withBytes { body($0.slice(pendingStart, pendingKeyEnd)) }
    }

    /// The canonical label string: pairs sorted by key (byte order, which equals `String`
    /// order for the ASCII keys ``NameRules`` allows), the last value winning for a repeated key,
    /// `key=value` joined by `,`. Recently built label strings are reused.
    mutating func canonical() -> String {
        let n = count
        if n == 0 { return "" }
        var total = n - 1
        for k in 0..<n { total += entries[k].valueEnd - entries[k].keyStart + 1 }
        if out.count < total { out = Array(repeating: 0, count: max(total, 2 * out.count)) }
        let length = bytes.withBytes { b in
            entries.withUnsafeBufferPointer { e in
                order.withUnsafeMutableBufferPointer { o in
                    out.withUnsafeMutableBytes { dst in
                        Self.build(b, e, o, n, dst)
                    }
                }
            }
        }
        return out.withUnsafeBytes { strings.string($0.slice(0, length)) }
    }

    /// Sorts (stable insertion sort: n ≤ NameRules.maxLabels and usually tiny), keeps the last
    /// of equal keys and writes `k=v,k=v` into `dst`; returns the length.
    private static func build(
        _ b: UnsafeRawBufferPointer, _ e: UnsafeBufferPointer<Entry>, _ o: UnsafeMutableBufferPointer<Int>,
        _ n: Int, _ dst: UnsafeMutableRawBufferPointer
    ) -> Int {
        func key(_ k: Int) -> UnsafeRawBufferPointer { b.slice(e[k].keyStart, e[k].keyEnd) }
        for k in 0..<n { o[k] = k }
        if n > 1 {
            for a in 1..<n {
                let x = o[a]
                var j = a
                while j > 0, less(key(x), key(o[j - 1])) {
                    o[j] = o[j - 1]
                    j -= 1
                }
                o[j] = x
            }
        }
        var w = 0
        var idx = 0
        while idx < n {
            // Equal keys are adjacent and in input order: keep the last.
            while idx + 1 < n, equal(key(o[idx]), key(o[idx + 1])) { idx += 1 }
            let entry = e[o[idx]]
            if w > 0 {
                dst[w] = UInt8(ascii: ",")
                w += 1
            }
            let keyLength = entry.keyEnd - entry.keyStart
            dst.baseAddress!.advanced(by: w).copyMemory(from: b.baseAddress! + entry.keyStart, byteCount: keyLength)
            w += keyLength
            dst[w] = UInt8(ascii: "=")
            w += 1
            let valueLength = entry.valueEnd - entry.keyEnd
            if valueLength > 0 {
                dst.baseAddress!.advanced(by: w).copyMemory(from: b.baseAddress! + entry.keyEnd, byteCount: valueLength)
            }
            w += valueLength
            idx += 1
        }
        return w
    }

    @inline(__always)
    private static func equal(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        a.count == b.count && (a.count == 0 || memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0)
    }

    @inline(__always)
    private static func less(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        let m = min(a.count, b.count)
        if m > 0 {
            let c = memcmp(a.baseAddress!, b.baseAddress!, m)
            if c != 0 { return c < 0 }
        }
        return a.count < b.count
    }
}
