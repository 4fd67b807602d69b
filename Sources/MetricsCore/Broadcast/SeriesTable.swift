/// The broadcaster's series: entries stored densely by series number, found by key through a
/// ``SeriesIndex``, and listed by metric and by server as series numbers.
///
/// Replaces a `[SeriesKey: Entry]` dictionary with two `Set<SeriesKey>` indexes beside it, which
/// cost about 900 bytes per series (48-byte keys stored three times in tables at most three
/// quarters full, plus a small set per server); this layout stores the key once, in the entry.
struct SeriesTable {
    /// One series as the broadcaster keeps it: a ``SeriesSnapshot``'s fields, laid out in 208
    /// bytes instead of 240 (quantiles as NaN when absent rather than optionals, which take 16
    /// bytes each; the bookkeeping packed behind them).
    struct Entry {
        var key: SeriesKey
        var last: Double
        var lastTimestamp: Int64
        var total: WindowStats
        var window1m: WindowStats
        var window5m: WindowStats
        /// The quantiles; NaN when the series has none (a snapshot's `nil`).
        var p50: Double, p95: Double, p99: Double
        var changedSeq: UInt64
        /// Where the series sits in its metric's ``MetricServers``.
        var slot: (server: Int32, index: Int32)
        /// Where it came from: 0 this instance's own agents, n > 0 the n-th peer (``Broadcaster``).
        var origin: Int32
        /// `false` once removed (its number waits in the free list for the next new series).
        var live = true

        init(snapshot: SeriesSnapshot, slot: (server: Int32, index: Int32), origin: Int32) {
            key = snapshot.key
            last = 0; lastTimestamp = 0
            total = WindowStats(); window1m = total; window5m = total
            p50 = .nan; p95 = .nan; p99 = .nan
            changedSeq = 0
            self.slot = slot
            self.origin = origin
            self.snapshot = snapshot
        }

        /// The series as a snapshot. Setting it replaces every field but the bookkeeping.
        var snapshot: SeriesSnapshot {
            get {
                SeriesSnapshot(key: key, last: last, lastTimestamp: lastTimestamp, total: total, window1m: window1m,
                               window5m: window5m, p50: p50.isNaN ? nil : p50, p95: p95.isNaN ? nil : p95,
                               p99: p99.isNaN ? nil : p99, changedSeq: changedSeq)
            }
            set {
                key = newValue.key
                last = newValue.last
                lastTimestamp = newValue.lastTimestamp
                total = newValue.total
                window1m = newValue.window1m
                window5m = newValue.window5m
                p50 = newValue.p50 ?? .nan
                p95 = newValue.p95 ?? .nan
                p99 = newValue.p99 ?? .nan
                changedSeq = newValue.changedSeq
            }
        }
    }

    /// Entries by series number, removed ones included (see ``Entry/live``).
    private(set) var entries: [Entry] = []
    /// Numbers of removed entries, reused by ``insert(_:)``.
    private var free: [Int32] = []
    private var index = SeriesIndex()
    private var byMetric: [String: [Int32]] = [:]
    private var byServer: [String: [Int32]] = [:]

    /// Number of series.
    var count: Int { entries.count - free.count }

    /// The number of the series `key`, if known.
    func id(of key: SeriesKey) -> Int32? {
        let h = SeriesIndex.hash(serverID: key.serverID, metricName: key.metricName, labels: key.labels)
        return entries.withUnsafeBufferPointer { e in index.find(hash: h) { e[Int($0)].key == key } }
    }

    /// The entry of `key`, if known.
    subscript(key: SeriesKey) -> Entry? {
        id(of: key).map { entries[Int($0)] }
    }

    /// The entry numbered `id`.
    subscript(id: Int32) -> Entry {
        get { entries[Int(id)] }
        _modify { yield &entries[Int(id)] }  // in place: no copy of the 208-byte entry per update
    }

    /// Adds a series the table does not hold yet; returns its number.
    @discardableResult
    mutating func insert(_ entry: Entry) -> Int32 {
        let key = entry.key
        let id: Int32
        if let reused = free.popLast() {
            id = reused
            entries[Int(id)] = entry
        } else {
            id = Int32(entries.count)
            // Grow by a quarter, not the doubling of `append`: entries are most of the table.
            if entries.count == entries.capacity { entries.reserveCapacity(entries.count + entries.count / 4 + 64) }
            entries.append(entry)
        }
        index.insert(hash: SeriesIndex.hash(serverID: key.serverID, metricName: key.metricName, labels: key.labels), id: id)
        byMetric[key.metricName, default: []].append(id)
        byServer[key.serverID, default: []].append(id)
        return id
    }

    /// Removes the series `keys` (unknown ones are skipped) and returns the entries removed.
    /// Costs one lookup per key plus one pass over the metric and server lists they were in.
    mutating func remove(_ keys: [SeriesKey]) -> [Entry] {
        var removed: [Entry] = []
        var metrics = Set<String>(), servers = Set<String>()
        for key in keys {
            guard let id = id(of: key) else { continue }
            index.remove(hash: SeriesIndex.hash(serverID: key.serverID, metricName: key.metricName, labels: key.labels), id: id)
            removed.append(entries[Int(id)])
            entries[Int(id)].live = false
            entries[Int(id)].key = SeriesKey(serverID: "", metricName: "")  // frees its strings
            free.append(id)
            metrics.insert(key.metricName)
            servers.insert(key.serverID)
        }
        guard !removed.isEmpty else { return [] }
        for m in metrics {
            let left = (byMetric[m] ?? []).filter { entries[Int($0)].live }
            byMetric[m] = left.isEmpty ? nil : left
        }
        for srv in servers {
            let left = (byServer[srv] ?? []).filter { entries[Int($0)].live }
            byServer[srv] = left.isEmpty ? nil : left
        }
        return removed
    }

    /// The numbers of `metric`'s series.
    func ids(metric: String) -> [Int32] {
        byMetric[metric] ?? []
    }

    /// The keys of `metric`'s series.
    func keys(metric: String) -> [SeriesKey] {
        (byMetric[metric] ?? []).map { entries[Int($0)].key }
    }

    /// The keys of `server`'s series.
    func keys(server: String) -> [SeriesKey] {
        (byServer[server] ?? []).map { entries[Int($0)].key }
    }

    /// Every key.
    var allKeys: [SeriesKey] { entries.compactMap { $0.live ? $0.key : nil } }
}
