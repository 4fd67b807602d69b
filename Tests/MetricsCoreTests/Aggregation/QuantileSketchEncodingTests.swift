import Foundation
import Testing
@testable import MetricsCore

@Suite("QuantileSketch encoding")
struct QuantileSketchEncodingTests {
    @Test("a sketch survives serialization: counts, extremes, sum, every quantile and later merges")
    func roundTrip() throws {
        var rng = CoreTestSupport.SeededRNG(seed: 0x5EED_0001)
        for shape in 0..<6 {
            var sk = QuantileSketch()
            let n = [0, 1, 10, 1_000, 5_000, 300][shape]
            for _ in 0..<n {
                let v: Double
                switch shape {
                case 3: v = Double(rng.next() % 10_000) / 7 - 700          // negative, zero and positive
                case 4: v = pow(10, Double(rng.next() % 24) - 12)           // 24 decades: many buckets
                case 5: v = 0
                default: v = Double(rng.next() % 100) + 0.5
                }
                sk.add(v)
            }
            let bytes = sk.serialized()
            let back = try QuantileSketch(serialized: bytes)
            #expect(back.count == sk.count)
            #expect(back.sum == sk.sum)
            #expect(back.min == sk.min || (back.min.isInfinite && sk.min.isInfinite))
            #expect(back.max == sk.max || (back.max.isInfinite && sk.max.isInfinite))
            for q in [0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1] {
                #expect(back.quantile(q) == sk.quantile(q), "shape \(shape) q \(q)")
            }
            #expect(back.serialized() == bytes, "the encoding is canonical")
            var a = sk, b = back
            a.merge(sk)
            b.merge(back)
            #expect(a.quantile(0.5) == b.quantile(0.5))
            #expect(a.count == b.count)
        }
    }

    @Test("a steady minute encodes small")
    func compact() {
        var sk = QuantileSketch()
        for i in 0..<60 { sk.add(40 + Double(i % 10)) }
        #expect(sk.serialized().count < 120)
    }

    @Test("corrupt input is rejected, never crashes", arguments: [0, 1, 7, 20, 40, 57])
    func corrupt(cut: Int) throws {
        var sk = QuantileSketch()
        for i in 0..<100 { sk.add(Double(i)) }
        let bytes = sk.serialized()
        #expect(throws: QuantileSketch.DecodingError.self) { try QuantileSketch(serialized: bytes.prefix(cut)) }
        var flipped = bytes
        flipped[min(cut, bytes.count - 1)] ^= 0xFF
        // A flipped byte either decodes to *some* consistent sketch or throws; both are fine,
        // but it must never trap. Count consistency is checked by the decoder.
        if let s = try? QuantileSketch(serialized: flipped) { _ = s.quantile(0.5) }
        #expect(throws: QuantileSketch.DecodingError.self) { try QuantileSketch(serialized: bytes + [0]) }
        #expect(throws: QuantileSketch.DecodingError.self) { try QuantileSketch(serialized: [2] + bytes.dropFirst()) }
    }

    @Test("a bucket offset near Int64.max is rejected, not an overflow trap")
    func hugeOffsetIsRejected() {
        // version, α, maxBuckets, count 1, sum, min, max, zeroCount 0, then the positive buckets:
        // offset zigzag 0xFFFF_FFFF_FFFF_FFFE (= Int64.max), n = 1, count 1.
        var bytes: [UInt8] = [1]
        func fixed(_ v: UInt64, _ n: Int) { for i in 0..<n { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) } }
        fixed(0.01.bitPattern, 8); fixed(2048, 4); fixed(1, 8)
        fixed(1.0.bitPattern, 8); fixed(1.0.bitPattern, 8); fixed(1.0.bitPattern, 8)
        bytes.append(0)
        bytes += [0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]  // varint of 0xFFFF_FFFF_FFFF_FFFE
        bytes += [1, 1]
        bytes += [0, 0]  // negative: empty
        #expect(throws: QuantileSketch.DecodingError.self) { try QuantileSketch(serialized: bytes) }
    }
}
