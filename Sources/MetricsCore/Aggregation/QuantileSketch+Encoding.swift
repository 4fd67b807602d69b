/// A compact, versioned binary form of ``QuantileSketch`` for storage backends (e.g. a BLOB column)
/// and for exchanging aggregates between instances.
///
/// Layout (little-endian), version 1:
/// ```
/// u8 version=1 | f64 α | u32 maxBuckets | u64 count | f64 sum | f64 min | f64 max | varint zeroCount
/// | positive buckets | negative buckets
/// buckets: zigzag-varint offset | varint n | n × varint count
/// ```
/// A typical minute of a steady series encodes in 60–120 bytes.
extension QuantileSketch {
    /// Errors decoding a serialized sketch.
    public struct DecodingError: Error, CustomStringConvertible, Sendable {
        /// What was wrong.
        public var description: String
    }

    /// The current encoding version.
    public static let encodingVersion: UInt8 = 1

    /// The sketch in its binary form.
    public func serialized() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(64 + 2 * (positive.count + negative.count))
        out.append(Self.encodingVersion)
        Self.putFixed(relativeAccuracy.bitPattern, 8, &out)
        Self.putFixed(UInt64(UInt32(clamping: maxBuckets)), 4, &out)
        Self.putFixed(count, 8, &out)
        Self.putFixed(sum.bitPattern, 8, &out)
        Self.putFixed(min.bitPattern, 8, &out)
        Self.putFixed(max.bitPattern, 8, &out)
        Self.putVarint(zeroCount, &out)
        for buckets in [positive, negative] {
            // Trim zero counts at both ends so the encoding is canonical.
            var lo = 0, hi = buckets.count
            while lo < hi && buckets[lo] == 0 { lo += 1 }
            while hi > lo && buckets[hi - 1] == 0 { hi -= 1 }
            let offset = Int64(buckets.offset) + Int64(lo)
            Self.putVarint(UInt64(bitPattern: (offset << 1) ^ (offset >> 63)), &out)
            Self.putVarint(UInt64(hi - lo), &out)
            for k in lo..<hi { Self.putVarint(UInt64(buckets[k]), &out) }
        }
        return out
    }

    /// Decodes a sketch written by ``serialized()``.
    /// - Throws: ``DecodingError`` when the bytes are not a valid sketch.
    public init(serialized bytes: some Collection<UInt8>) throws {
        var reader = ByteReader(bytes: Array(bytes))
        guard let version = reader.byte(), version == Self.encodingVersion else {
            throw DecodingError(description: "unsupported sketch encoding version")
        }
        let alpha = Double(bitPattern: try reader.fixed(8))
        let maxBuckets = Int(try reader.fixed(4))
        guard alpha > 0 && alpha < 1, maxBuckets > 0 && maxBuckets <= 1 << 20 else {
            throw DecodingError(description: "invalid sketch parameters")
        }
        self.init(relativeAccuracy: alpha, maxBuckets: maxBuckets)
        count = try reader.fixed(8)
        sum = Double(bitPattern: try reader.fixed(8))
        min = Double(bitPattern: try reader.fixed(8))
        max = Double(bitPattern: try reader.fixed(8))
        zeroCount = try reader.varint()
        var total = zeroCount
        for sign in 0..<2 {
            let z = try reader.varint()
            let offset = Int64(bitPattern: (z >> 1) ^ (0 &- (z & 1)))
            let n = try reader.varint()
            guard n <= UInt64(maxBuckets), offset >= Int64(Int32.min), offset <= Int64(Int32.max), offset + Int64(n) <= Int64(Int32.max) else {
                throw DecodingError(description: "invalid sketch bucket range")
            }
            var counts: [UInt32] = []
            counts.reserveCapacity(Int(n))
            for _ in 0..<n {
                let c = try reader.varint()
                guard c <= UInt64(UInt32.max) else { throw DecodingError(description: "sketch bucket count overflow") }
                counts.append(UInt32(c))
                total &+= c
            }
            let b = DenseBuckets(offset: Int32(offset), counts: counts)
            if sign == 0 { positive = b } else { negative = b }
        }
        guard reader.atEnd else { throw DecodingError(description: "trailing bytes after sketch") }
        guard total == count else { throw DecodingError(description: "sketch bucket counts do not add up to its count") }
    }

    private static func putFixed(_ v: UInt64, _ n: Int, _ out: inout [UInt8]) {
        for i in 0..<n { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) }
    }

    private static func putVarint(_ v: UInt64, _ out: inout [UInt8]) {
        var v = v
        while v >= 0x80 {
            out.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
    }
}

private struct ByteReader {
    let bytes: [UInt8]
    var index = 0

    var atEnd: Bool { index == bytes.count }

    mutating func byte() -> UInt8? {
        guard index < bytes.count else { return nil }
        defer { index += 1 }
        return bytes[index]
    }

    mutating func fixed(_ n: Int) throws -> UInt64 {
        guard bytes.count - index >= n else { throw QuantileSketch.DecodingError(description: "truncated sketch") }
        var v: UInt64 = 0
        for i in 0..<n { v |= UInt64(bytes[index + i]) << (8 * UInt64(i)) }
        index += n
        return v
    }

    mutating func varint() throws -> UInt64 {
        var v: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard let b = byte() else { throw QuantileSketch.DecodingError(description: "truncated sketch") }
            guard shift < 64 else { throw QuantileSketch.DecodingError(description: "varint too long") }
            v |= UInt64(b & 0x7F) << shift
            if b < 0x80 { return v }
            shift += 7
        }
    }
}
