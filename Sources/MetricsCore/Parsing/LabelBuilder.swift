#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Collects label pairs for one line and builds the canonical label string
/// (the same text as ``Labels/canonical(_:)``) without dictionaries or per-pair strings.
///
/// A pair is built as: ``startPair()``, key bytes, ``endKey()``, value bytes, ``endPair()``.
struct LabelBuilder {
    /// A pair stored as `key=value` in ``bytes``: the key is `keyStart..<keyEnd`, `=` is at
    /// `keyEnd`, the value is `keyEnd + 1..<valueEnd`.
    private struct Entry {
        var keyStart = 0
        var keyEnd = 0
        var valueEnd = 0
    }

    private var bytes = ScratchBytes()
    // Allocated on the first label, so streams without labels never pay for them.
    private var entries: [Entry] = []
    private var pendingStart = 0
    private var pendingKeyEnd = 0
    private var order: [Int] = []
    private var out: [UInt8] = []
    /// Recent canonical strings, so repeated label sets share one `String`.
    private var strings = StringCache()

    private mutating func allocate() {
        entries = [Entry](repeating: Entry(), count: NameRules.maxLabels)
        order = [Int](repeating: 0, count: NameRules.maxLabels)
        out = Array(repeating: 0, count: 256)
    }

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
    mutating func endKey() {
        pendingKeyEnd = bytes.count
        bytes.append(UInt8(ascii: "="))
    }
    /// Completes the pair. The caller checks ``count`` against ``NameRules/maxLabels`` first.
    @inline(__always)
    mutating func endPair() {
        if entries.isEmpty { allocate() }
        entries[count] = Entry(keyStart: pendingStart, keyEnd: pendingKeyEnd, valueEnd: bytes.count)
        count += 1
    }
    /// Drops the pair being built.
    @inline(__always)
    mutating func abandonPair() { bytes.truncate(to: pendingStart) }

    /// Length of the key of the pair being built (after ``endKey()``).
    var pendingKeyLength: Int { pendingKeyEnd - pendingStart }
    /// Length of the value of the pair being built so far.
    var pendingValueLength: Int { bytes.count - pendingKeyEnd - 1 }

    /// Adds a complete pair. The caller checks ``count`` against ``NameRules/maxLabels`` first.
    @inline(__always)
    mutating func addPair(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        let keyStart = bytes.count
        bytes.append(key)
        let keyEnd = bytes.count
        bytes.append(UInt8(ascii: "="))
        bytes.append(value)
        if entries.isEmpty { allocate() }
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
        bytes.withBytes { NameRules.isValidLabelValue($0.slice(pendingKeyEnd + 1, $0.count)) }
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
        if n == 1 {
            // Already stored as `key=value`.
            let e = entries[0]
            return bytes.withBytes { strings.string($0.slice(e.keyStart, e.valueEnd)) }
        }
        var total = n - 1
        for k in 0..<n { total += entries[k].valueEnd - entries[k].keyStart }
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
            let pairLength = entry.valueEnd - entry.keyStart  // `key=value`
            dst.baseAddress!.advanced(by: w).copyMemory(from: b.baseAddress! + entry.keyStart, byteCount: pairLength)
            w += pairLength
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
