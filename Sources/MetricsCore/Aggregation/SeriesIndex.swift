/// The shard's index from series key to series number: open addressing over 8-byte entries.
///
/// Hand-written instead of `[SeriesKey: Int]` because this lookup is the aggregator's hot spot: a
/// `Dictionary` stores the 48-byte keys in its buckets (a 2.8 MB table at 50k series) and hashes
/// three strings with SipHash per sample; profiling showed the bucket load's cache misses alone
/// costing a quarter to a third of fold time. Here a bucket holds 32 bits of the key's hash and the
/// series number (8 bytes, eight to a cache line), the full key is verified in the series state
/// the fold touches next anyway, and the hash reads the key's UTF-8 a word at a time. The table
/// is at most three quarters full: with eight entries per cache line a probe sequence rarely
/// leaves its first line, and a series costs 11–21 bytes here (32–64 with 16-byte entries at half).
///
/// The hash is seeded per process, so series names cannot be precomputed to collide; a flood of
/// colliding names still only degrades to linear probing within the (bounded) series cap.
struct SeriesIndex {
    private struct Entry {
        /// The high 32 bits of the key's hash with bit 0 set (0 = empty). Probing starts from it,
        /// so the table can grow without the keys.
        var tag: UInt32 = 0
        var id: Int32 = -1
    }

    private var entries = [Entry](repeating: Entry(), count: 1024)
    private var mask = 1023
    private(set) var count = 0

    /// Per-process random seed.
    static let seed: UInt64 = {
        var rng = SystemRandomNumberGenerator()
        return rng.next() | 1
    }()

    /// The 64-bit hash of a series key (never 0).
    @inline(__always)
    static func hash(serverID: String, metricName: String, labels: String) -> UInt64 {
        var h = seed
        mix(&h, serverID)
        mix(&h, metricName)
        mix(&h, labels)
        // fmix64 (MurmurHash3 finalizer) for avalanche.
        h ^= h >> 33
        h &*= 0xff51_afd7_ed55_8ccd
        h ^= h >> 33
        h &*= 0xc4ce_b9fe_1a85_ec53
        h ^= h >> 33
        return h | 1
    }

    @inline(__always)
    private static func mix(_ h: inout UInt64, _ s: String) {
        var s = s
        s.withUTF8 { bytes in
            var p = UnsafeRawPointer(bytes.baseAddress ?? UnsafePointer(bitPattern: 8)!)
            var n = bytes.count
            while n >= 8 {
                h = (h ^ p.loadUnaligned(as: UInt64.self)) &* 0x9E37_79B9_7F4A_7C15
                h ^= h >> 29
                p += 8
                n -= 8
            }
            var tail: UInt64 = UInt64(truncatingIfNeeded: bytes.count) << 56  // length separates the fields
            for k in 0..<n { tail |= UInt64(p.load(fromByteOffset: k, as: UInt8.self)) << (8 * UInt64(k)) }
            h = (h ^ tail) &* 0x9E37_79B9_7F4A_7C15
            h ^= h >> 29
        }
    }

    /// A hash's stored part (never 0).
    @inline(__always)
    private static func tag(_ hash: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: hash >> 32) | 1 }

    /// The slot a tag starts probing at. Bit 0 is skipped: tags always have it set.
    @inline(__always)
    private func home(_ tag: UInt32) -> Int { Int(tag >> 1) & mask }

    /// The series number stored for `hash` whose key satisfies `matches`, if any.
    @inline(__always)
    func find(hash: UInt64, matches: (Int32) -> Bool) -> Int32? {
        let tag = Self.tag(hash)
        return entries.withUnsafeBufferPointer { e in
            var i = home(tag)
            while true {
                let entry = e[i]
                if entry.tag == 0 { return nil }
                if entry.tag == tag && matches(entry.id) { return entry.id }
                i = (i + 1) & mask
            }
        }
    }

    /// Adds a series number for `hash` (the caller checked it is absent).
    mutating func insert(hash: UInt64, id: Int32) {
        if (count + 1) * 4 > entries.count * 3 { grow() }
        place(tag: Self.tag(hash), id: id)
        count += 1
    }

    /// Removes the entry for `hash` holding `id` (backward-shift deletion, so probe chains stay
    /// unbroken without tombstones).
    mutating func remove(hash: UInt64, id: Int32) {
        guard var hole = slot(hash: hash, id: id) else { return }
        entries[hole] = Entry()
        count -= 1
        var j = hole
        while true {
            j = (j + 1) & mask
            let e = entries[j]
            if e.tag == 0 { return }
            let home = home(e.tag)
            // The entry may move back into the hole unless its home lies cyclically in (hole, j].
            let stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j)
            if stays { continue }
            entries[hole] = e
            entries[j] = Entry()
            hole = j
        }
    }

    /// Renumbers the entry for `hash` holding `id` (a series moved to another position).
    mutating func renumber(hash: UInt64, id: Int32, to newID: Int32) {
        if let at = slot(hash: hash, id: id) { entries[at].id = newID }
    }

    private func slot(hash: UInt64, id: Int32) -> Int? {
        let tag = Self.tag(hash)
        var i = home(tag)
        while true {
            let e = entries[i]
            if e.tag == 0 { return nil }
            if e.tag == tag && e.id == id { return i }
            i = (i + 1) & mask
        }
    }

    private mutating func place(tag: UInt32, id: Int32) {
        var i = home(tag)
        while entries[i].tag != 0 { i = (i + 1) & mask }
        entries[i] = Entry(tag: tag, id: id)
    }

    private mutating func grow() {
        let old = entries
        entries = [Entry](repeating: Entry(), count: old.count * 2)
        mask = entries.count - 1
        for e in old where e.tag != 0 { place(tag: e.tag, id: e.id) }
    }
}
