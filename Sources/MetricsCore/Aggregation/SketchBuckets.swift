/// Contiguous bucket counts of one sign of a ``QuantileSketch``, starting at bucket `offset`.
///
/// Counts are stored as narrow as they fit — 1, 2 or 4 bytes each, widened when a count outgrows
/// its width — in one heap block holding the range too (``BucketStorage``), or no block at all
/// while empty. A live series keeps two sketches (its current and previous minute), and in a
/// minute of a series sampled every few seconds no bucket holds more than 255 values: a
/// `[UInt32]` of 20 buckets took 112 bytes (array header, counts, growth), this takes ~52 (a
/// 64-byte allocation), and a wide-ranging gauge's 150 buckets ~190 bytes instead of ~640.
///
/// A value type with copy-on-write, like `Array`: copies share the block until one of them is
/// changed. Equality compares the counts, not their width or the block's capacity.
///
/// `@unchecked Sendable` on the terms `Array`'s buffer has (`ManagedBuffer` is not `Sendable`):
/// a block is written only through the one `DenseBuckets` holding the only reference to it
/// (`isKnownUniquelyReferenced`), so a block reachable from two values, or two threads, is never
/// written.
@usableFromInline
struct DenseBuckets: @unchecked Sendable, Equatable {
    @usableFromInline var storage: BucketStorage?

    @usableFromInline init() {}

    /// Buckets built from counts (the decoder's path); `counts` empty gives no buckets.
    init(offset: Int32, counts: [UInt32]) {
        guard !counts.isEmpty else { return }
        let widest = counts.max() ?? 0
        let s = BucketStorage.make(capacity: counts.count, width: BucketStorage.width(for: widest), offset: offset, count: counts.count)
        for (k, c) in counts.enumerated() { s.set(k, c) }
        storage = s
    }

    /// Index of the first bucket (0 when empty).
    var offset: Int32 { storage?.head.pointee.offset ?? 0 }
    /// Number of buckets in the range (some may hold 0).
    var count: Int { storage.map { Int($0.head.pointee.count) } ?? 0 }
    var isEmpty: Bool { count == 0 }

    /// The count of the `k`-th bucket of the range (`0 ..< count`).
    subscript(k: Int) -> UInt32 { storage!.counts[k] }

    /// Bytes of heap held (the block's allocation, header included).
    var allocatedBytes: Int { storage?.allocatedBytes ?? 0 }

    @usableFromInline
    static func == (a: DenseBuckets, b: DenseBuckets) -> Bool {
        let n = a.count
        guard n == b.count else { return false }
        guard n > 0 else { return true }
        guard a.offset == b.offset else { return false }
        if a.storage === b.storage { return true }
        for k in 0..<n where a[k] != b[k] { return false }
        return true
    }

    /// Adds `n` to the bucket `index`, extending the range; when the range would exceed
    /// `maxBuckets`, the lowest buckets are collapsed into the lowest one kept (the bounded
    /// DDSketch's strategy: only the lowest quantiles lose accuracy).
    ///
    /// (No local reference to the block is held across the calls below that change it: one would
    /// make `isKnownUniquelyReferenced` false and every change a copy.)
    mutating func increment(_ index: Int32, by n: UInt32, maxBuckets: Int) {
        // The per-sample case: a bucket inside the range of an unshared block, the sum fits.
        if isKnownUniquelyReferenced(&storage), storage.unsafelyUnwrapped.addInRange(index, n) { return }
        let count = self.count
        guard count > 0 else {
            let s = BucketStorage.make(capacity: 1, width: BucketStorage.width(for: n), offset: index, count: 1)
            s.set(0, n)
            storage = s
            return
        }
        let offset = self.offset
        var i = index
        if i < offset {
            let grow = Int(offset - i)
            if count + grow > maxBuckets {
                // Collapse: the lowest index the bounded range allows absorbs everything below it.
                let lowest = offset + Int32(count) - Int32(maxBuckets)
                if i < lowest { i = lowest }
                if i >= offset {
                    add(Int(i - offset), n)
                    return
                }
            }
            extendDown(to: i)
        } else if Int(i - offset) >= count {
            let needed = Int(i - offset) + 1
            if needed > maxBuckets {
                // Shift the window up: fold the lowest buckets into the new lowest one.
                let drop = needed - maxBuckets
                var folded: UInt32 = 0
                for k in 0..<Swift.min(drop, count) { folded &+= self[k] }
                dropLow(drop)
                add(0, folded)
            }
            extendUp(to: i)
        }
        add(Int(i - self.offset), n)
    }

    /// Merges another sign's buckets into these (as if its values had been added here).
    mutating func merge(_ other: DenseBuckets, maxBuckets: Int) {
        let n = other.count
        guard n > 0 else { return }
        let base = other.offset
        for k in 0..<n {
            let c = other[k]
            if c > 0 { increment(base + Int32(k), by: c, maxBuckets: maxBuckets) }
        }
    }

    // MARK: - Changing the block (always a uniquely referenced one)

    /// Adds `n` to bucket `k` of the range, widening the counts when the sum needs it. Sums wrap
    /// at 2³², as the 4-byte counts always did.
    private mutating func add(_ k: Int, _ n: UInt32) {
        let s = unique(capacity: count)
        let sum = s.counts[k] &+ n
        guard sum > s.maxValue else {
            s.set(k, sum)
            return
        }
        let wider = s.copy(capacity: count, width: BucketStorage.width(for: sum))
        wider.set(k, sum)
        storage = wider
    }

    /// Extends the range down to start at `index` (new buckets 0).
    private mutating func extendDown(to index: Int32) {
        let isUnique = isKnownUniquelyReferenced(&storage)
        let old = storage!
        let shift = Int(old.head.pointee.offset - index), count = Int(old.head.pointee.count)
        let n = count + shift
        if isUnique && old.countCapacity >= n {
            old.moveUp(count: count, by: shift)
            old.head.pointee.offset = index
            old.head.pointee.count = Int32(n)
            return
        }
        let s = BucketStorage.make(capacity: Self.grown(n), width: old.head.pointee.width, offset: index, count: n)
        s.copy(from: old, range: 0..<count, to: shift)
        storage = s
    }

    /// Extends the range up to include `index` (new buckets 0).
    private mutating func extendUp(to index: Int32) {
        let n = Int(index - offset) + 1
        guard n > count else { return }
        let s = unique(capacity: n)
        s.zero(from: Int(s.head.pointee.count), to: n)
        s.head.pointee.count = Int32(n)
    }

    /// Drops the lowest `drop` buckets (all of them if fewer), keeping at least one (0).
    private mutating func dropLow(_ drop: Int) {
        let old = storage!, count = Int(old.head.pointee.count)
        let kept = Swift.max(count - drop, 0)
        let s = BucketStorage.make(capacity: Swift.max(kept, 1), width: old.head.pointee.width,
                                   offset: old.head.pointee.offset + Int32(drop), count: Swift.max(kept, 1))
        if kept > 0 { s.copy(from: old, range: drop..<count, to: 0) }
        storage = s
    }

    /// The block, uniquely referenced and with room for `capacity` counts (copied into a new
    /// block when shared or too small).
    private mutating func unique(capacity: Int) -> BucketStorage {
        let isUnique = isKnownUniquelyReferenced(&storage)
        let old = storage!
        if isUnique && old.countCapacity >= capacity { return old }
        let s = old.copy(capacity: old.countCapacity >= capacity ? capacity : Self.grown(capacity), width: old.head.pointee.width)
        storage = s
        return s
    }

    /// Room for `n` buckets and a quarter more, not the doubling `append` would do: a series
    /// keeps two of these live, and a gauge's range rarely grows once its first minutes are seen.
    private static func grown(_ n: Int) -> Int { n + n / 4 + 2 }

    // MARK: - Reading

    /// Whether the union of two bucket ranges spans at most `maxBuckets` (so merging would not collapse).
    static func unionFits(_ a: DenseBuckets, _ b: DenseBuckets, _ maxBuckets: Int) -> Bool {
        if a.isEmpty || b.isEmpty { return true }
        let lo = Swift.min(Int(a.offset), Int(b.offset))
        let hi = Swift.max(Int(a.offset) + a.count, Int(b.offset) + b.count)
        return hi - lo <= maxBuckets
    }

    /// The counts as a read-only view: a raw pointer, the width and the range (see ``counts``).
    /// The one place counts are read; the block's own accessors cost the quantile walk 3×.
    struct Counts {
        let base: UnsafeRawPointer?
        let width: UInt8
        let offset: Int
        let count: Int

        static var empty: Counts { Counts(base: nil, width: 4, offset: 0, count: 0) }

        /// The count at bucket index `i` (0 outside the range).
        @inline(__always)
        func at(index i: Int) -> UInt32 {
            let k = i &- offset
            return k >= 0 && k < count ? self[k] : 0
        }

        /// The bucket indices covered by `a` or `b`.
        @inline(__always)
        static func union(_ a: Counts, _ b: Counts) -> Range<Int> {
            if a.count == 0 { return b.offset..<(b.offset + b.count) }
            if b.count == 0 { return a.offset..<(a.offset + a.count) }
            return Swift.min(a.offset, b.offset)..<Swift.max(a.offset + a.count, b.offset + b.count)
        }

        @inline(__always)
        subscript(k: Int) -> UInt32 {
            switch width {
            case 1: return UInt32(base.unsafelyUnwrapped.load(fromByteOffset: k, as: UInt8.self))
            case 2: return UInt32(base.unsafelyUnwrapped.load(fromByteOffset: 2 * k, as: UInt16.self))
            default: return base.unsafelyUnwrapped.load(fromByteOffset: 4 * k, as: UInt32.self)
            }
        }
    }

    /// The counts' view. The pointer stays valid while this value (or another holding the same
    /// block) is alive and unchanged: read it only within a function that has the buckets as a
    /// parameter or local, and change nothing meanwhile. (Not `withUnsafeMutablePointers`
    /// closures: nested in the quantile walk's closures they left its captured counters to
    /// dynamic exclusivity checks, and the tick's collect took 3× as long.)
    var counts: Counts { storage?.counts ?? .empty }

    /// Calls `body` with each index holding a count and its count, ascending, until it returns false.
    func forEachAscending(_ body: (Int32, UInt32) -> Bool) {
        let c = counts
        for k in 0..<c.count {
            let v = c[k]
            if v > 0 && !body(Int32(c.offset + k), v) { return }
        }
    }

    /// Calls `body` with each index holding a count and its count, descending, until it returns false.
    func forEachDescending(_ body: (Int32, UInt32) -> Bool) {
        let c = counts
        var k = c.count - 1
        while k >= 0 {
            let v = c[k]
            if v > 0 && !body(Int32(c.offset + k), v) { return }
            k -= 1
        }
    }
}

/// The heap block of a ``DenseBuckets``: its range (first bucket index, number of buckets) and
/// count width in the header, then the counts, `width` bytes each (the elements are 4-byte
/// words only so that every width is aligned).
@usableFromInline
final class BucketStorage: ManagedBuffer<BucketStorage.Header, UInt32> {
    @usableFromInline
    struct Header {
        var offset: Int32
        var count: Int32
        /// 4-byte words of room for counts (kept here: `ManagedBuffer.capacity` asks the allocator).
        var words: Int32
        /// Bytes per count: 1, 2 or 4.
        var width: UInt8
    }

    /// The header's address. (Not `header`: that is a class property, and every read of it was
    /// checked for exclusive access at run time, which cost the quantile walk more than its work.)
    @inline(__always)
    var head: UnsafeMutablePointer<Header> { withUnsafeMutablePointerToHeader { $0 } }

    /// A block with room for `capacity` counts of `width` bytes, its range `offset ..<
    /// offset + count` holding zeros.
    static func make(capacity: Int, width: UInt8, offset: Int32, count: Int) -> BucketStorage {
        let words = Swift.max((Swift.max(capacity, count) * Int(width) + 3) / 4, 1)
        let b = BucketStorage.create(minimumCapacity: words) { _ in
            Header(offset: offset, count: Int32(count), words: Int32(words), width: width)
        }
        let s = unsafeDowncast(b, to: BucketStorage.self)
        s.zero(from: 0, to: count)
        return s
    }

    /// A new block with this one's range and counts, room for `capacity` counts of `width`
    /// bytes (at least this one's width, so the counts fit).
    func copy(capacity: Int, width: UInt8) -> BucketStorage {
        let count = Int(head.pointee.count)
        let s = BucketStorage.make(capacity: capacity, width: width, offset: head.pointee.offset, count: count)
        s.copy(from: self, range: 0..<count, to: 0)
        return s
    }

    /// The counts' view (``DenseBuckets/Counts``), valid while this block is alive and unchanged.
    var counts: DenseBuckets.Counts {
        let (h, e) = withUnsafeMutablePointers { ($0, $1) }
        return DenseBuckets.Counts(base: UnsafeRawPointer(e), width: h.pointee.width, offset: Int(h.pointee.offset),
                                   count: Int(h.pointee.count))
    }

    /// Adds `n` to bucket `index` if it is in the range and the sum fits the width; false
    /// (nothing changed) otherwise. The caller made sure the block is not shared.
    @inline(__always)
    func addInRange(_ index: Int32, _ n: UInt32) -> Bool {
        withUnsafeMutablePointers { h, e in
            let k = Int(index) &- Int(h.pointee.offset)
            guard k >= 0 && k < Int(h.pointee.count) else { return false }
            let raw = UnsafeMutableRawPointer(e)
            switch h.pointee.width {
            case 1:
                let (sum, over) = UInt8(truncatingIfNeeded: n).addingReportingOverflow(raw.load(fromByteOffset: k, as: UInt8.self))
                guard n <= 0xFF && !over else { return false }
                raw.storeBytes(of: sum, toByteOffset: k, as: UInt8.self)
            case 2:
                let (sum, over) = UInt16(truncatingIfNeeded: n).addingReportingOverflow(raw.load(fromByteOffset: 2 * k, as: UInt16.self))
                guard n <= 0xFFFF && !over else { return false }
                raw.storeBytes(of: sum, toByteOffset: 2 * k, as: UInt16.self)
            default:
                raw.storeBytes(of: raw.load(fromByteOffset: 4 * k, as: UInt32.self) &+ n, toByteOffset: 4 * k, as: UInt32.self)
            }
            return true
        }
    }

    /// The narrowest width holding `value`.
    static func width(for value: UInt32) -> UInt8 { value <= 0xFF ? 1 : value <= 0xFFFF ? 2 : 4 }

    /// How many counts of the current width fit.
    var countCapacity: Int { withUnsafeMutablePointers { h, _ in Int(h.pointee.words) * 4 / Int(h.pointee.width) } }

    var maxValue: UInt32 {
        switch head.pointee.width {
        case 1: return 0xFF
        case 2: return 0xFFFF
        default: return .max
        }
    }

    /// Bytes of the allocation: object header, range header, counts.
    var allocatedBytes: Int { 16 + MemoryLayout<Header>.stride + Int(head.pointee.words) * 4 }

    /// Stores `value` at `k`; the caller made sure the width holds it.
    @inline(__always)
    func set(_ k: Int, _ value: UInt32) {
        withUnsafeMutablePointers { h, e in
            let raw = UnsafeMutableRawPointer(e)
            switch h.pointee.width {
            case 1: raw.storeBytes(of: UInt8(truncatingIfNeeded: value), toByteOffset: k, as: UInt8.self)
            case 2: raw.storeBytes(of: UInt16(truncatingIfNeeded: value), toByteOffset: 2 * k, as: UInt16.self)
            default: raw.storeBytes(of: value, toByteOffset: 4 * k, as: UInt32.self)
            }
        }
    }

    /// Sets counts `from ..< to` to 0.
    func zero(from: Int, to: Int) {
        guard to > from else { return }
        withUnsafeMutablePointers { h, e in
            let w = Int(h.pointee.width)
            (UnsafeMutableRawPointer(e) + from * w).initializeMemory(as: UInt8.self, repeating: 0, count: (to - from) * w)
        }
    }

    /// Moves the first `count` counts up by `shift` places and zeroes the places they left.
    func moveUp(count: Int, by shift: Int) {
        withUnsafeMutablePointers { h, e in
            let w = Int(h.pointee.width)
            let raw = UnsafeMutableRawPointer(e)
            (raw + shift * w).copyMemory(from: raw, byteCount: count * w)  // memmove: overlapping is fine
        }
        zero(from: 0, to: shift)
    }

    /// Copies `other`'s counts in `range` to places `at ..<` of this block's (zeroed) range, of
    /// any width as long as the counts fit this one's.
    func copy(from other: BucketStorage, range: Range<Int>, to at: Int) {
        if other.head.pointee.width == head.pointee.width {
            let w = Int(head.pointee.width)
            other.withUnsafeMutablePointers { _, src in
                withUnsafeMutablePointers { _, dst in
                    (UnsafeMutableRawPointer(dst) + at * w).copyMemory(from: UnsafeRawPointer(src) + range.lowerBound * w,
                                                                       byteCount: range.count * w)
                }
            }
        } else {
            let source = other.counts
            for k in range { set(at + k - range.lowerBound, source[k]) }
        }
    }
}
