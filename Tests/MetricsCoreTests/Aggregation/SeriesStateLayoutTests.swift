import Testing
@testable import MetricsCore

/// The per-series structures' sizes, pinned: at a million series each byte is a megabyte, and a
/// field added carelessly (an inline optional sketch, an array per series) is easy to miss in review.
/// `Benchmarks/Sources/SeriesMemory` measures the whole cost including heap blocks.
@Suite("Series state layout")
struct SeriesStateLayoutTests {
    @Test("inline sizes stay within their budgets")
    func sizes() {
        print("SeriesState \(MemoryLayout<SeriesState>.stride) B, QuantileSketch \(MemoryLayout<QuantileSketch>.stride) B, "
              + "CompactStats \(MemoryLayout<CompactStats>.stride) B, broadcaster entry \(MemoryLayout<SeriesTable.Entry>.stride) B, "
              + "SeriesSnapshot \(MemoryLayout<SeriesSnapshot>.stride) B")
        #expect(MemoryLayout<CompactStats>.stride == 32)
        #expect(MemoryLayout<SlotRing>.stride == 6 * 32)
        #expect(MemoryLayout<MinuteRing>.stride == 4 * 32)
        #expect(MemoryLayout<QuantileSketch>.stride <= 64)
        #expect(MemoryLayout<SeriesState>.stride <= 592)
        #expect(MemoryLayout<SeriesTable.Entry>.stride <= 208)
    }

    @Test("sketches share one mapping per parameter set")
    func sharedMapping() {
        let a = QuantileSketch(), b = QuantileSketch(relativeAccuracy: 0.01)
        #expect(a.mapping === b.mapping)
        let c = QuantileSketch(relativeAccuracy: 0.02), d = QuantileSketch(relativeAccuracy: 0.02)
        #expect(c.mapping === d.mapping)
        #expect(c.mapping != a.mapping)
        #expect(QuantileSketch(mapping: c.mapping).relativeAccuracy == 0.02)
    }
}
