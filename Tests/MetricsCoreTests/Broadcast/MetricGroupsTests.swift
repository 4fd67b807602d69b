import Testing
@testable import MetricsCore

@Suite("MetricGroups: positions by metric name without hashing each name")
struct MetricGroupsTests {
    @Test("Groups equal a dictionary's, in first-appearance order, with few and with many metrics",
          arguments: [3, 16, 17, 40])
    func groupsEqualADictionary(metrics: Int) {
        var rng = CoreTestSupport.SeededRNG(seed: UInt64(metrics))
        var groups = MetricGroups()
        var expected: [String: [Int]] = [:]
        var order: [String] = []
        for i in 0..<2_000 {
            // Runs of one metric, metrics in turn, and random ones.
            let m = "m\(i % 7 == 0 ? rng.int(0...(metrics - 1)) : (i / 3) % metrics)"
            groups.add(i, metric: m)
            if expected[m] == nil { order.append(m) }
            expected[m, default: []].append(i)
        }
        #expect(groups.names == order)
        #expect(groups.byName == expected)
        for (g, name) in groups.names.enumerated() { #expect(groups.positions[g] == expected[name]) }
        // A known name finds its group; a new one starts the next.
        #expect(groups.group(of: order[0]) == 0)
        #expect(groups.group(of: "new") == order.count && groups.positions[order.count].isEmpty)
    }
}
