import Testing
@testable import MetricsCore

@Suite struct LabelBuilderTests {
    @Test func canonicalMatchesLabelsCanonicalOnRandomPairs() {
        var rng = SplitMix64(seed: 5)
        var builder = LabelBuilder()
        let keyAlphabet = Array("abAB09_.-")
        let valueAlphabet = Array("xyz09:/é😀")
        for _ in 0..<3000 {
            var pairs: [(String, String)] = []
            let count = Int.random(in: 0...NameRules.maxLabels, using: &rng)
            for _ in 0..<count {
                let key = String((0..<Int.random(in: 1...3, using: &rng)).map { _ in keyAlphabet.randomElement(using: &rng)! })
                let value = String((0..<Int.random(in: 0...4, using: &rng)).map { _ in valueAlphabet.randomElement(using: &rng)! })
                pairs.append((key, value))
            }
            builder.reset()
            for (k, v) in pairs {
                Array(k.utf8).withUnsafeBytes { kb in
                    Array(v.utf8).withUnsafeBytes { vb in builder.addPair(key: kb, value: vb) }
                }
            }
            let built = builder.canonical()
            #expect(built == Labels.canonical(pairs), "\(pairs)")
        }
    }

    @Test func stringCacheReturnsTheRightStringForEveryLength() {
        var cache = StringCache()
        var rng = SplitMix64(seed: 8)
        var strings: [String] = []
        for length in 0...40 {
            for _ in 0..<20 {
                strings.append(String((0..<length).map { _ in Character(UnicodeScalar(UInt8.random(in: 97...100, using: &rng))) }))
            }
        }
        for _ in 0..<20_000 {
            let s = strings.randomElement(using: &rng)!
            let got = Array(s.utf8).withUnsafeBytes { cache.string($0) }
            #expect(got == s)
            if got != s { return }
        }
    }
}
