import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A mergeable quantile sketch with a guaranteed relative error (DDSketch, Masson et al., VLDB 2019).
///
/// Every value `v` is counted in the bucket `ceil(log_γ |v|)` with `γ = (1 + α) / (1 − α)`;
/// a quantile query returns the bucket's representative `2 γ^i / (γ + 1)`, which is within
/// a relative error of `α` of *some* value whose rank is the requested rank, as long as no
/// bucket was collapsed. With the default `α = 0.01` (1 %) a value range of 1e-9 ... 1e12 needs
/// about 2,400 buckets; when more than ``maxBuckets`` are used the lowest buckets are collapsed
/// (so only the lowest quantiles lose accuracy), the strategy of the paper's bounded variant.
///
/// Sketches with the same `α` merge exactly: merging the sketches of two sets gives the sketch
/// of their union. This is what lets minute rollups, shards and instances combine without raw data.
///
/// Storage is a dense count array per sign with an index offset, each count as narrow as it fits
/// (``DenseBuckets``), so a minute of a series whose values stay within ±20 % uses about 20
/// buckets in one block of ~52 bytes (a 64-byte allocation).
public struct QuantileSketch: Sendable, Equatable {
    /// The bucket mapping: α, γ and the bucket bound, shared by every sketch with the same
    /// parameters (one reference instead of 32 bytes of constants in each of a series' sketches).
    public let mapping: SketchMapping
    /// The relative accuracy α.
    @inlinable public var relativeAccuracy: Double { mapping.relativeAccuracy }
    /// The largest number of buckets per sign kept before the lowest are collapsed.
    @inlinable public var maxBuckets: Int { mapping.maxBuckets }

    @usableFromInline var positive = DenseBuckets()
    @usableFromInline var negative = DenseBuckets()
    /// Values whose magnitude is below ``minIndexableValue`` count as zero.
    @usableFromInline var zeroCount: UInt64 = 0
    /// Number of values added.
    public internal(set) var count: UInt64 = 0
    /// Exact smallest value added (`+inf` when empty).
    public internal(set) var min: Double = .infinity
    /// Exact largest value added (`-inf` when empty).
    public internal(set) var max: Double = -.infinity
    /// Exact sum of the values added.
    public internal(set) var sum: Double = 0

    /// Magnitudes below this are counted in the zero bucket.
    public static let minIndexableValue = 1e-9

    /// Creates an empty sketch.
    /// - Parameters:
    ///   - relativeAccuracy: α in (0, 1); default 0.01.
    ///   - maxBuckets: bound on buckets per sign; default 2048.
    public init(relativeAccuracy: Double = 0.01, maxBuckets: Int = 2048) {
        self.init(mapping: SketchMapping.shared(relativeAccuracy: relativeAccuracy, maxBuckets: maxBuckets))
    }

    /// Creates an empty sketch with the mapping of another (no lookup: how the aggregator starts
    /// each minute's sketch).
    public init(mapping: SketchMapping) {
        self.mapping = mapping
    }

    public static func == (a: QuantileSketch, b: QuantileSketch) -> Bool {
        a.mapping == b.mapping && a.positive == b.positive && a.negative == b.negative && a.zeroCount == b.zeroCount
            && a.count == b.count && a.min == b.min && a.max == b.max && a.sum == b.sum
    }

    /// Whether nothing was added.
    @inlinable public var isEmpty: Bool { count == 0 }

    /// Adds a finite value.
    public mutating func add(_ value: Double) {
        count &+= 1
        sum += value
        if value < min { min = value }
        if value > max { max = value }
        if value > Self.minIndexableValue {
            positive.increment(index(value), by: 1, maxBuckets: maxBuckets)
        } else if value < -Self.minIndexableValue {
            negative.increment(index(-value), by: 1, maxBuckets: maxBuckets)
        } else {
            zeroCount &+= 1
        }
    }

    @inlinable
    func index(_ magnitude: Double) -> Int32 {
        Int32((log(magnitude) * mapping.inverseLogGamma).rounded(.up))
    }

    @inlinable
    func value(at index: Int32) -> Double {
        // exp of a product rather than pow: the same value to ~1e-13 relative (far inside the
        // sketch's α), at about a third of the cost; a tick computes three per changed series.
        2 * exp(Double(index) * mapping.logGamma) / (mapping.gamma + 1)
    }

    /// Merges another sketch with the same relative accuracy into this one.
    public mutating func merge(_ other: QuantileSketch) {
        precondition(other.mapping == mapping, "sketches must share relativeAccuracy and maxBuckets")
        guard other.count > 0 else { return }
        count &+= other.count
        sum += other.sum
        min = Swift.min(min, other.min)
        max = Swift.max(max, other.max)
        zeroCount &+= other.zeroCount
        positive.merge(other.positive, maxBuckets: maxBuckets)
        negative.merge(other.negative, maxBuckets: maxBuckets)
    }

    /// The value at quantile `q` in [0, 1], or `nil` when empty. Results are clamped to the
    /// exact min/max, so `quantile(0)` and `quantile(1)` are exact.
    public func quantile(_ q: Double) -> Double? {
        guard count > 0 else { return nil }
        if q <= 0 { return min }
        if q >= 1 { return max }
        let rank = UInt64((q * Double(count - 1)).rounded(.down))
        var seen: UInt64 = 0
        // Negative values, from the most negative (largest magnitude index) upwards.
        var result: Double? = nil
        negative.forEachDescending { idx, c in
            seen &+= UInt64(c)
            if seen > rank { result = -value(at: idx); return false }
            return true
        }
        if result == nil {
            seen &+= zeroCount
            if seen > rank { result = 0 }
        }
        if result == nil {
            positive.forEachAscending { idx, c in
                seen &+= UInt64(c)
                if seen > rank { result = value(at: idx); return false }
                return true
            }
        }
        let r = result ?? max
        return Swift.min(Swift.max(r, min), max)
    }

    /// The quantiles `probes` (ascending, each in (0, 1)) of this sketch merged with `other`,
    /// exactly as `merged.quantile(q)` would give them, in one walk over both bucket arrays and
    /// without building the merged sketch: the aggregator asks this of every changed series every
    /// tick, and a merge costs an allocation and a pass per series. Falls back to merging when the
    /// union of the two bucket ranges is wider than ``maxBuckets`` (a merge would collapse buckets).
    /// `nil` when both are empty.
    func quantiles(_ probes: (Double, Double, Double), mergedWith other: QuantileSketch?) -> (Double, Double, Double)? {
        guard let other, other.count > 0 else {
            guard count > 0 else { return nil }
            return Self.walk(self, nil, probes)
        }
        precondition(other.mapping == mapping, "sketches must share relativeAccuracy and maxBuckets")
        if !DenseBuckets.unionFits(positive, other.positive, maxBuckets) || !DenseBuckets.unionFits(negative, other.negative, maxBuckets) {
            var merged = self
            merged.merge(other)
            return Self.walk(merged, nil, probes)
        }
        return Self.walk(self, other, probes)
    }

    /// One ascending walk of `a` (plus `b`'s counts, index by index) answering three ranks.
    private static func walk(_ a: QuantileSketch, _ b: QuantileSketch?, _ probes: (Double, Double, Double)) -> (Double, Double, Double)? {
        let count = a.count &+ (b?.count ?? 0)
        guard count > 0 else { return nil }
        let lo = Swift.min(a.min, b?.min ?? .infinity), hi = Swift.max(a.max, b?.max ?? -.infinity)
        // SIMD3 values rather than arrays: no heap allocation per call.
        let qs = SIMD3<Double>(probes.0, probes.1, probes.2)
        var ranks = SIMD3<UInt64>(repeating: 0)
        var out = SIMD3<Double>(repeating: hi)
        var pending = 0  // the first probe without an answer
        for k in 0..<3 {
            if qs[k] <= 0 { out[k] = lo; pending = k + 1 } else { ranks[k] = UInt64((qs[k] * Double(count - 1)).rounded(.down)) }
        }
        var seen: UInt64 = 0
        @inline(__always) func take(_ c: UInt64, _ v: @autoclosure () -> Double) -> Bool {
            guard c > 0 else { return true }
            seen &+= c
            while pending < 3 && qs[pending] < 1 && seen > ranks[pending] {
                out[pending] = v()
                pending += 1
            }
            return pending < 3 && qs[pending] < 1
        }
        var going = pending < 3 && qs[pending] < 1
        // Plain loops over the two count views rather than a union walk taking a closure: a
        // closure capturing these counters, passed to a function not inlined, puts them in boxes
        // checked for exclusive access on every bucket (it tripled the tick's collect).
        if going {
            let x = a.negative.counts, y = b?.negative.counts ?? .empty
            let range = DenseBuckets.Counts.union(x, y)
            var i = range.upperBound - 1
            while going && i >= range.lowerBound {
                let c = x.at(index: i) &+ y.at(index: i)
                if c > 0 { going = take(UInt64(c), -a.value(at: Int32(i))) }
                i -= 1
            }
        }
        if going { going = take(a.zeroCount &+ (b?.zeroCount ?? 0), 0) }
        if going {
            let x = a.positive.counts, y = b?.positive.counts ?? .empty
            let range = DenseBuckets.Counts.union(x, y)
            var i = range.lowerBound
            while going && i < range.upperBound {
                let c = x.at(index: i) &+ y.at(index: i)
                if c > 0 { going = take(UInt64(c), a.value(at: Int32(i))) }
                i += 1
            }
        }
        // Probes ≥ 1 (and any left unanswered) keep `hi`; everything is clamped to the exact range.
        for k in 0..<3 { out[k] = Swift.min(Swift.max(out[k], lo), hi) }
        return (out[0], out[1], out[2])
    }

    /// Approximate bytes of heap used by the bucket arrays.
    public var bucketBytes: Int { positive.allocatedBytes + negative.allocatedBytes }
}

/// The bucket mapping of a ``QuantileSketch``: immutable, shared by reference.
public final class SketchMapping: Sendable, Equatable {
    /// The relative accuracy α.
    public let relativeAccuracy: Double
    /// The largest number of buckets per sign kept before the lowest are collapsed.
    public let maxBuckets: Int
    @usableFromInline let gamma: Double
    @usableFromInline let inverseLogGamma: Double
    @usableFromInline let logGamma: Double

    init(relativeAccuracy: Double, maxBuckets: Int) {
        precondition(relativeAccuracy > 0 && relativeAccuracy < 1, "relativeAccuracy must be in (0, 1)")
        precondition(maxBuckets > 0, "maxBuckets must be positive")
        self.relativeAccuracy = relativeAccuracy
        self.maxBuckets = maxBuckets
        self.gamma = (1 + relativeAccuracy) / (1 - relativeAccuracy)
        self.logGamma = log(gamma)
        self.inverseLogGamma = 1 / logGamma
    }

    /// The default mapping (α = 0.01, 2048 buckets per sign).
    public static let standard = SketchMapping(relativeAccuracy: 0.01, maxBuckets: 2048)

    private static let others = Mutex<[Key: SketchMapping]>([:])
    private struct Key: Hashable {
        var relativeAccuracy: Double
        var maxBuckets: Int
    }

    /// The one mapping with these parameters (created on first use; a handful exist per process).
    public static func shared(relativeAccuracy: Double, maxBuckets: Int) -> SketchMapping {
        if relativeAccuracy == standard.relativeAccuracy && maxBuckets == standard.maxBuckets { return standard }
        let key = Key(relativeAccuracy: relativeAccuracy, maxBuckets: maxBuckets)
        return others.withLock { m in
            if let found = m[key] { return found }
            let made = SketchMapping(relativeAccuracy: relativeAccuracy, maxBuckets: maxBuckets)
            // Bounded: parameters decoded from storage must not grow the table without end.
            if m.count < 64 { m[key] = made }
            return made
        }
    }

    public static func == (a: SketchMapping, b: SketchMapping) -> Bool {
        a === b || (a.relativeAccuracy == b.relativeAccuracy && a.maxBuckets == b.maxBuckets)
    }
}
