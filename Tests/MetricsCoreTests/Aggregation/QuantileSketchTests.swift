import Testing
import Foundation
@testable import MetricsCore

@Suite("QuantileSketch")
struct QuantileSketchTests {
    typealias T = CoreTestSupport

    static let probes: [Double] = [0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999]

    enum Distribution: String, CaseIterable, Sendable {
        case lognormal, pareto, exponential
    }

    static func values(_ d: Distribution, count: Int, seed: UInt64) -> [Double] {
        var rng = T.SeededRNG(seed: seed)
        return (0..<count).map { _ in
            switch d {
            case .lognormal: rng.lognormal(mu: 1, sigma: 2)
            case .pareto: rng.pareto(scale: 3, shape: 1.2)
            case .exponential: rng.exponential(rate: 0.05)
            }
        }
    }

    /// Checks every probe: the estimate is within α of the exact value at the sketch's rank
    /// (`floor(q·(n−1))` of the sorted values), and q = 0 / 1 give the exact min / max.
    static func expectAccurate(_ sketch: QuantileSketch, _ values: [Double], alpha: Double,
                               probes: [Double] = probes, sourceLocation: SourceLocation = #_sourceLocation) {
        let sorted = values.sorted()
        for q in probes {
            let exact = T.exactQuantile(sorted, q)
            guard let est = sketch.quantile(q) else {
                Issue.record("quantile(\(q)) is nil", sourceLocation: sourceLocation)
                continue
            }
            #expect(T.withinRelative(est, exact, alpha), "q=\(q): estimate \(est) vs exact \(exact)",
                    sourceLocation: sourceLocation)
        }
        #expect(sketch.quantile(0) == sorted.first, sourceLocation: sourceLocation)
        #expect(sketch.quantile(1) == sorted.last, sourceLocation: sourceLocation)
    }

    @Test("quantiles of 100k skewed values are within the 1% relative accuracy of the exact rank value",
          arguments: Distribution.allCases)
    func quantilesWithinRelativeAccuracyOnSkewedData(_ d: Distribution) {
        let values = Self.values(d, count: 100_000, seed: 0xC0FFEE &+ UInt64(d.rawValue.count))
        var sketch = QuantileSketch(relativeAccuracy: 0.01)
        for v in values { sketch.add(v) }
        #expect(sketch.count == 100_000)
        #expect(sketch.min == values.min())
        #expect(sketch.max == values.max())
        #expect(T.sumsAgree(sketch.sum, values.reduce(0, +), scale: values.reduce(0) { $0 + abs($1) }))
        Self.expectAccurate(sketch, values, alpha: 0.01)
        // A much finer grid of ranks, so a systematic off-by-one in the rank walk cannot hide.
        Self.expectAccurate(sketch, values, alpha: 0.01, probes: stride(from: 0.005, to: 1, by: 0.01).map { $0 })
    }

    @Test("a coarser relative accuracy is honoured too (α = 5%)")
    func coarserAccuracyIsHonoured() {
        let values = Self.values(.lognormal, count: 50_000, seed: 7)
        var sketch = QuantileSketch(relativeAccuracy: 0.05)
        for v in values { sketch.add(v) }
        Self.expectAccurate(sketch, values, alpha: 0.05)
    }

    @Test("negative values, zeros and positive values are ranked across signs within α")
    func negativeValuesAndZerosAreRankedCorrectly() {
        var rng = T.SeededRNG(seed: 42)
        var values: [Double] = []
        for _ in 0..<60_000 {
            let r = rng.unit()
            if r < 0.35 {
                values.append(-rng.lognormal(mu: 2, sigma: 1.5))
            } else if r < 0.45 {
                values.append(0)
            } else {
                values.append(rng.pareto(scale: 0.5, shape: 1.5))
            }
        }
        var sketch = QuantileSketch()
        for v in values { sketch.add(v) }
        Self.expectAccurate(sketch, values, alpha: 0.01,
                            probes: Self.probes + [0.3, 0.34, 0.36, 0.4, 0.44, 0.46])
        // The ranks that fall on the zeros must answer exactly 0.
        #expect(sketch.quantile(0.4) == 0)
        #expect(sketch.min < 0)
    }

    @Test("all-negative data: the median is negative and within α")
    func allNegativeData() {
        let values = Self.values(.exponential, count: 20_001, seed: 3).map { -$0 }
        var sketch = QuantileSketch()
        for v in values { sketch.add(v) }
        Self.expectAccurate(sketch, values, alpha: 0.01)
        #expect((sketch.quantile(0.5) ?? 0) < 0)
    }

    @Test("all zeros: every quantile is 0")
    func allZeros() {
        var sketch = QuantileSketch()
        for _ in 0..<100 { sketch.add(0) }
        for q in [0, 0.1, 0.5, 0.99, 1] { #expect(sketch.quantile(q) == 0) }
        #expect(sketch.count == 100)
        #expect(sketch.sum == 0)
    }

    @Test("merge(a, b) equals one sketch fed both inputs: quantiles, count, sum, min, max")
    func mergeEqualsSketchOfUnion() {
        var rng = T.SeededRNG(seed: 99)
        let a = (0..<30_000).map { _ in rng.lognormal(mu: 0, sigma: 1.5) }
        let b = (0..<20_000).map { _ in rng.chance(0.2) ? -rng.exponential(rate: 1) : rng.pareto(scale: 10, shape: 2) }
        var sa = QuantileSketch(), sb = QuantileSketch(), both = QuantileSketch()
        for v in a { sa.add(v); both.add(v) }
        for v in b { sb.add(v); both.add(v) }
        var merged = sa
        merged.merge(sb)
        #expect(merged.count == both.count)
        #expect(merged.min == both.min)
        #expect(merged.max == both.max)
        #expect(T.sumsAgree(merged.sum, both.sum, scale: 1e6))
        for q in stride(from: 0.0, through: 1.0, by: 0.0125) {
            #expect(merged.quantile(q) == both.quantile(q), "q=\(q)")
        }
        #expect(merged.positive == both.positive)
        #expect(merged.negative == both.negative)
        #expect(merged.zeroCount == both.zeroCount)
        // Merge is symmetric.
        var reversed = sb
        reversed.merge(sa)
        for q in [0.01, 0.5, 0.99] { #expect(reversed.quantile(q) == both.quantile(q)) }
        Self.expectAccurate(merged, a + b, alpha: 0.01)
    }

    @Test("merging an empty sketch changes nothing; merging into an empty sketch copies")
    func mergeWithEmpty() {
        var s = QuantileSketch()
        for v in [1.0, 2, 3] { s.add(v) }
        var t = s
        t.merge(QuantileSketch())
        #expect(t == s)
        var e = QuantileSketch()
        e.merge(s)
        #expect(e.count == 3 && e.min == 1 && e.max == 3 && e.sum == 6)
        #expect(e.quantile(0.5) == s.quantile(0.5))
    }

    @Test("collapsing to a small maxBuckets keeps count, sum, min, max exact and the high quantiles accurate",
          arguments: [false, true])
    func collapsingKeepsCountExactAndHighQuantilesAccurate(descending: Bool) {
        var rng = T.SeededRNG(seed: 1234)
        // lognormal(0, 1): p90...max spans a factor < γ^200 (~55), the whole range needs ~450 buckets.
        var values = (0..<50_000).map { _ in rng.lognormal(mu: 0, sigma: 1) }
        values.sort()
        if descending { values.reverse() }  // exercise both collapse paths of DenseBuckets
        var sketch = QuantileSketch(relativeAccuracy: 0.01, maxBuckets: 200)
        for v in values { sketch.add(v) }
        #expect(sketch.positive.count <= 200)
        #expect(sketch.count == 50_000)
        #expect((0..<sketch.positive.count).reduce(0) { $0 + UInt64(sketch.positive[$1]) } == 50_000)
        #expect(sketch.min == values.min())
        #expect(sketch.max == values.max())
        Self.expectAccurate(sketch, values, alpha: 0.01, probes: [0.9, 0.95, 0.99, 0.999])
        // The range really was wider than the bound (otherwise this test proves nothing).
        let span = log(values.max()! / values.min()!) / log((1.01) / (0.99))
        #expect(span > 400)

        // Merging two collapsed sketches keeps the same guarantees.
        var other = QuantileSketch(relativeAccuracy: 0.01, maxBuckets: 200)
        let more = (0..<20_000).map { _ in rng.lognormal(mu: 0, sigma: 1) }
        for v in more { other.add(v) }
        var merged = sketch
        merged.merge(other)
        #expect(merged.count == 70_000)
        #expect(merged.positive.count <= 200)
        Self.expectAccurate(merged, values + more, alpha: 0.01, probes: [0.9, 0.99])
    }

    @Test("an empty sketch returns nil for every quantile")
    func emptySketchReturnsNil() {
        let s = QuantileSketch()
        #expect(s.isEmpty)
        #expect(s.count == 0)
        for q in [0.0, 0.5, 0.99, 1.0] { #expect(s.quantile(q) == nil) }
    }

    @Test("a single value is returned exactly for every quantile")
    func singleValueIsExact() {
        var s = QuantileSketch()
        s.add(123.456)
        for q in [0.0, 0.01, 0.5, 0.99, 1.0] { #expect(s.quantile(q) == 123.456) }
    }

    @Test("quantiles over two sketches in one walk equal those of the merged sketch, bit for bit")
    func oneWalkQuantilesEqualMergedQuantiles() {
        var rng = T.SeededRNG(seed: 99)
        let probeSets: [(Double, Double, Double)] = [(0.5, 0.95, 0.99), (0, 0.5, 1), (0.01, 0.02, 0.03), (0.999, 1, 1)]
        for round in 0..<300 {
            let bound = round % 3 == 0 ? 64 : 2048  // small bounds exercise the collapse fallback
            var a = QuantileSketch(relativeAccuracy: 0.01, maxBuckets: bound)
            var b = QuantileSketch(relativeAccuracy: 0.01, maxBuckets: bound)
            func value() -> Double {
                switch rng.int(0...5) {
                case 0: 0
                case 1: -rng.lognormal(mu: 1, sigma: 2)
                case 2: rng.pareto(scale: 3, shape: 1.2)
                default: 50 + rng.normal() * Double(rng.int(1...20))
                }
            }
            for _ in 0..<rng.int(0...40) { a.add(value()) }
            for _ in 0..<rng.int(0...40) { b.add(value()) }
            var merged = a
            merged.merge(b)
            for probes in probeSets {
                let walked = a.quantiles(probes, mergedWith: round % 7 == 0 ? nil : b)
                let reference = round % 7 == 0 ? a : merged
                if reference.isEmpty {
                    #expect(walked == nil)
                    continue
                }
                let expected = (reference.quantile(probes.0)!, reference.quantile(probes.1)!, reference.quantile(probes.2)!)
                #expect(walked.map { $0 == expected } == true, "round \(round) probes \(probes): \(String(describing: walked)) vs \(expected)")
            }
        }
    }
}
