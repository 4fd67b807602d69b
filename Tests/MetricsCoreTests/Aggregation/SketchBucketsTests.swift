import Testing
@testable import MetricsCore

/// `DenseBuckets` keeps its counts 1, 2 or 4 bytes wide in one copy-on-write block. These tests
/// hold it to the plain `[UInt32]` implementation it replaced (below, `Reference`), through
/// widening, collapsing at the bound in both directions, merges and copies.
@Suite("Sketch buckets")
struct SketchBucketsTests {
    typealias T = CoreTestSupport

    /// The array-based buckets as they were before 2026-12-07, verbatim in behaviour.
    struct Reference: Equatable {
        var offset: Int32 = 0
        var counts: [UInt32] = []

        mutating func increment(_ index: Int32, by n: UInt32, maxBuckets: Int) {
            if counts.isEmpty {
                offset = index
                counts.append(n)
                return
            }
            var i = index
            if i < offset {
                if counts.count + Int(offset - i) > maxBuckets {
                    let lowest = offset + Int32(counts.count) - Int32(maxBuckets)
                    if i < lowest { i = lowest }
                    if i >= offset {
                        counts[Int(i - offset)] &+= n
                        return
                    }
                }
                counts.insert(contentsOf: repeatElement(0, count: Int(offset - i)), at: 0)
                offset = i
            } else if Int(i - offset) >= counts.count {
                let needed = Int(i - offset) + 1
                if needed > maxBuckets {
                    let drop = needed - maxBuckets
                    let folded = counts.prefix(drop).reduce(0, &+)
                    counts.removeFirst(Swift.min(drop, counts.count))
                    offset += Int32(drop)
                    if counts.isEmpty { counts.append(0) }
                    counts[0] &+= folded
                }
                let need = Int(i - offset) + 1
                if need > counts.count { counts.append(contentsOf: repeatElement(0, count: need - counts.count)) }
            }
            counts[Int(i - offset)] &+= n
        }
    }

    static func same(_ b: DenseBuckets, _ r: Reference) -> Bool {
        guard b.count == r.counts.count else { return false }
        guard !r.counts.isEmpty else { return true }
        return b.offset == r.offset && (0..<b.count).allSatisfy { b[$0] == r.counts[$0] }
    }

    @Test("random increments, with counts of every width and a small bound, match the array implementation",
          arguments: [1, 2, 3, 4])
    func matchesReference(seed: UInt64) {
        var rng = T.SeededRNG(seed: seed)
        let maxBuckets = 40
        var b = DenseBuckets()
        var r = Reference()
        var copies: [(DenseBuckets, Reference)] = []
        for step in 0..<20_000 {
            // Mostly near the centre, sometimes far below or above (collapse, window shift).
            let spread: Int32 = rng.next() % 10 == 0 ? 200 : 15
            let index = Int32(truncatingIfNeeded: rng.next() % UInt64(2 * spread)) - spread
            let n: UInt32
            switch rng.next() % 100 {
            case 0: n = UInt32(truncatingIfNeeded: rng.next())      // any, wraps like the reference
            case 1...3: n = 300 + UInt32(rng.next() % 70_000)       // forces 2 then 4 bytes
            default: n = 1 + UInt32(rng.next() % 3)
            }
            b.increment(index, by: n, maxBuckets: maxBuckets)
            r.increment(index, by: n, maxBuckets: maxBuckets)
            #expect(Self.same(b, r), "step \(step)")
            if step % 1_000 == 0 { copies.append((b, r)) }  // copies must not see later changes
            if !Self.same(b, r) { return }
        }
        for (cb, cr) in copies { #expect(Self.same(cb, cr)) }
    }

    @Test("merging equals adding the other's counts one bucket at a time")
    func mergeMatchesReference() {
        var rng = T.SeededRNG(seed: 9)
        for _ in 0..<200 {
            var a = DenseBuckets(), b = DenseBuckets()
            var ra = Reference(), rb = Reference()
            for _ in 0..<Int(rng.next() % 60) {
                let i = Int32(rng.next() % 80) - 40, n = UInt32(1 + rng.next() % 400)
                a.increment(i, by: n, maxBuckets: 64); ra.increment(i, by: n, maxBuckets: 64)
            }
            for _ in 0..<Int(rng.next() % 60) {
                let i = Int32(rng.next() % 80) - 10, n = UInt32(1 + rng.next() % 3)
                b.increment(i, by: n, maxBuckets: 64); rb.increment(i, by: n, maxBuckets: 64)
            }
            let before = a
            a.merge(b, maxBuckets: 64)
            for (k, c) in rb.counts.enumerated() where c > 0 { ra.increment(rb.offset + Int32(k), by: c, maxBuckets: 64) }
            #expect(Self.same(a, ra))
            #expect(before != a || b.isEmpty || (0..<b.count).allSatisfy { b[$0] == 0 })
        }
    }

    @Test("counts widen from 1 to 2 to 4 bytes as they grow, and equality ignores the width")
    func widening() {
        var b = DenseBuckets()
        b.increment(7, by: 200, maxBuckets: 2048)
        #expect(b.storage?.header.width == 1)
        b.increment(7, by: 100, maxBuckets: 2048)
        #expect(b.storage?.header.width == 2)
        #expect(b[0] == 300)
        b.increment(9, by: 70_000, maxBuckets: 2048)
        #expect(b.storage?.header.width == 4)
        #expect(b.count == 3 && b[0] == 300 && b[1] == 0 && b[2] == 70_000)
        let wide = DenseBuckets(offset: 7, counts: [300, 0, 70_000])
        let built = DenseBuckets(offset: 7, counts: [1])
        var narrow = DenseBuckets()
        narrow.increment(7, by: 1, maxBuckets: 2048)
        #expect(b == wide)
        #expect(narrow == built)
        #expect(narrow != wide)
    }

    @Test("a copy shares its block until one side changes (copy on write)")
    func copyOnWrite() {
        var a = QuantileSketch()
        for v in stride(from: 50.0, to: 70.0, by: 0.5) { a.add(v) }
        let b = a
        #expect(a.positive.storage === b.positive.storage)
        a.add(1_000)
        #expect(a.positive.storage !== b.positive.storage)
        #expect(b.count == 40 && a.count == 41)
        #expect(b.quantile(1) == 69.5)
        #expect(a.quantile(1) == 1_000)
        // A unique sketch changes in place: no new block per sample. (An identifier, not a
        // reference: holding the block would make it shared.)
        let block = ObjectIdentifier(a.positive.storage!)
        for v in stride(from: 50.0, to: 70.0, by: 0.25) { a.add(v) }
        #expect(ObjectIdentifier(a.positive.storage!) == block)
    }

    @Test("a minute of a gauge sampled every second takes one small block")
    func gaugeMinuteIsSmall() {
        var s = QuantileSketch()
        for k in 0..<60 { s.add(50 + Double((k * 7919) % 2000) / 100) }  // 50 ... 70, as SeriesMemory feeds
        #expect(s.positive.count <= 20)
        #expect(s.bucketBytes <= 64, "\(s.bucketBytes) bytes")
    }
}
