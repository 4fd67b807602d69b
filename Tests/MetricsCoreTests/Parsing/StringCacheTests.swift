import Testing
@testable import MetricsCore

@Suite("StringCache")
struct StringCacheTests {
    static func cached(_ cache: inout StringCache, _ s: String) -> String {
        var bytes = Array(s.utf8)
        return bytes.withUnsafeMutableBytes { cache.string(UnsafeRawBufferPointer($0)) }
    }

    @Test("answers are always the string of the bytes, while the tables grow and evict")
    func answersAreExact() {
        var rng = CoreTestSupport.SeededRNG(seed: 5)
        var cache = StringCache()
        // Working sets that grow: short (inline) and long strings, with repeats.
        for round in 0..<20_000 {
            let width = round < 5_000 ? 8 : round < 10_000 ? 200 : 3_000
            let n = rng.int(0...width)
            let s = n % 3 == 0 ? "host-\(n)-with-a-long-suffix" : "m\(n)"
            #expect(Self.cached(&cache, s) == s)
        }
        #expect(cache.tableSizes.small == 256 && cache.tableSizes.large == 64, "a wide working set grows the tables to their bound")
    }

    @Test("a stream repeating a few strings keeps small tables")
    func fewStringsStaySmall() {
        var cache = StringCache()
        let strings = ["web-01", "cpu_usage", "memory_usage", "disk_io", "network_rx", "network_tx", "dc=eu-west-1,rack=r12"]
        for _ in 0..<10_000 { for s in strings { #expect(Self.cached(&cache, s) == s) } }
        #expect(cache.tableSizes.small == 16 && cache.tableSizes.large == 4)
    }
}
