/// The broadcaster's series: entries stored densely by series number, found by key through a
/// ``SeriesIndex``, and listed by metric and by server as series numbers.
///
/// Replaces a `[SeriesKey: Entry]` dictionary with two `Set<SeriesKey>` indexes beside it, which
/// cost about 900 bytes per series (48-byte keys stored three times in tables at most three
/// quarters full, plus a small set per server); this layout stores the key once, in the entry.
struct SeriesTable {
    /// One series as the broadcaster keeps it.
    struct Entry {
        var snapshot: SeriesSnapshot
        /// Where the series sits in its metric's ``MetricServers``.
        var slot: (server: Int32, index: Int32)
        /// Where it came from: 0 this instance's own agents, n > 0 the n-th peer (``Broadcaster``).
        var origin: Int32
        /// `false` once removed (its number waits in the free list for the next new series).
        var live = true
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
        return entries.withUnsafeBufferPointer { e in index.find(hash: h) { e[Int($0)].snapshot.key == key } }
    }

    /// The entry of `key`, if known.
    subscript(key: SeriesKey) -> Entry? {
        id(of: key).map { entries[Int($0)] }
    }

    /// The entry numbered `id`.
    subscript(id: Int32) -> Entry {
        get { entries[Int(id)] }
        _modify { yield &entries[Int(id)] }  // in place: no copy of the 232-byte entry per update
    }

    /// Adds a series the table does not hold yet; returns its number.
    @discardableResult
    mutating func insert(_ entry: Entry) -> Int32 {
        let key = entry.snapshot.key
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
            entries[Int(id)].snapshot.key = SeriesKey(serverID: "", metricName: "")  // frees its strings
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
        (byMetric[metric] ?? []).map { entries[Int($0)].snapshot.key }
    }

    /// The keys of `server`'s series.
    func keys(server: String) -> [SeriesKey] {
        (byServer[server] ?? []).map { entries[Int($0)].snapshot.key }
    }

    /// Every key.
    var allKeys: [SeriesKey] { entries.compactMap { $0.live ? $0.snapshot.key : nil } }
}
