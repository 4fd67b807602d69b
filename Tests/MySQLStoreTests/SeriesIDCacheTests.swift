import Testing
@testable import MetricsCore
@testable import MySQLStore

/// The writer's series-id cache predicts each sample's series from the one that followed the
/// previous sample's series last time; whatever the order, every sample must get its own id.
@Suite("MySQL writer series-id cache")
struct SeriesIDCacheTests {
    @Test("ids equal a dictionary lookup for repeated, rotated, shuffled and partly unknown orders")
    func predictionNeverMisattributes() {
        var cache = SeriesIDCache()
        var reference: [SeriesKey: UInt64] = [:]
        var keys: [SeriesKey] = []
        for s in 0..<50 {
            for m in ["cpu_usage_percent_total", "mem", "disk"] {
                for l in ["", "core=0"] {
                    let k = SeriesKey(serverID: "srv-\(s)", metricName: m, labels: l)
                    keys.append(k)
                }
            }
        }
        // A third of the series stay unknown to the cache.
        for (i, k) in keys.enumerated() where i % 3 != 0 {
            let id = UInt64(1_000 + i)
            cache.insert(k, .init(id: id, server: Int32(i % 50)))
            reference[k] = id
        }
        var rng = SystemRandomNumberGenerator()
        let orders: [[SeriesKey]] = [keys, keys, Array(keys[7...] + keys[..<7]), keys.shuffled(using: &rng), keys.reversed(),
                                     keys.flatMap { [$0, $0] }, keys]
        for order in orders {
            let samples = order.map { MetricSample(serverID: $0.serverID, metricName: $0.metricName, value: 1, timestamp: 0, labels: $0.labels) }
            var ids = [UInt64](repeating: 0, count: samples.count)
            var servers = [Int32](repeating: 0, count: samples.count)
            var unresolved: [Int] = []
            cache.resolve(samples, ids: &ids, servers: &servers, unresolved: &unresolved)
            for (p, k) in order.enumerated() {
                if let id = reference[k] {
                    #expect(ids[p] == id, "sample \(p) \(k)")
                } else {
                    #expect(unresolved.contains(p), "sample \(p) \(k) is not cached")
                }
            }
            #expect(unresolved.count == order.filter { reference[$0] == nil }.count)
        }
        cache.removeAll()
        #expect(cache.count == 0 && cache[keys[1]] == nil)
    }
}
