import MetricsCore

/// The writer's cache of `rtd_series` ids, with successor prediction.
///
/// Agents send their series in the same order every time, so the batches a writer sees repeat the
/// same sequence of series. Each cached series remembers which series followed it the last time;
/// ``resolve(_:ids:servers:unresolved:)`` tries that one first and confirms it with ``SeriesKey/matches(_:)`` (three
/// string comparisons, which for strings the parsers' caches share are pointer checks), and only
/// on a miss hashes the key into the dictionary. Hashing every sample's key was ~17% of the
/// server's CPU under a MySQL ingest load (`perf`), and the writer thread's own time is time the
/// database connections wait.
struct SeriesIDCache {
    struct Entry {
        var id: UInt64
        /// Index into the writer's server names.
        var server: Int32
    }
    private var index: [SeriesKey: Int32] = [:]
    private var keys: [SeriesKey] = []
    private var entries: [Entry] = []
    /// Per slot, the slot that followed it last time (-1: none yet).
    private var successor: [Int32] = []

    /// Series cached.
    var count: Int { keys.count }

    /// The cached entry of `key`.
    subscript(key: SeriesKey) -> Entry? {
        guard let i = index[key] else { return nil }
        return entries[Int(i)]
    }

    /// Caches (or replaces) the entry of `key`.
    mutating func insert(_ key: SeriesKey, _ entry: Entry) {
        if let i = index[key] {
            entries[Int(i)] = entry
            return
        }
        index[key] = Int32(keys.count)
        keys.append(key)
        entries.append(entry)
        successor.append(-1)
    }

    /// Forgets everything.
    mutating func removeAll() {
        index.removeAll(keepingCapacity: true)
        keys.removeAll(keepingCapacity: true)
        entries.removeAll(keepingCapacity: true)
        successor.removeAll(keepingCapacity: true)
    }

    /// Fills in each sample's series id and server slot; appends the positions of samples whose
    /// series is not cached to `unresolved`. Remembers each series' successor for the next batch.
    mutating func resolve(_ samples: [MetricSample], ids: inout [UInt64], servers: inout [Int32], unresolved: inout [Int]) {
        samples.withUnsafeBufferPointer { buf in
            // Samples are read in place: a copy would retain and release every string over 15 bytes.
            var previous: Int32 = -1
            for p in buf.indices {
                var slot: Int32 = -1
                if previous >= 0 {
                    let next = successor[Int(previous)]
                    if keys[Int(previous)].matches(buf[p]) {
                        slot = previous
                    } else if next >= 0, keys[Int(next)].matches(buf[p]) {
                        slot = next
                    }
                }
                if slot < 0 {
                    guard let i = index[buf[p].seriesKey] else {
                        unresolved.append(p)
                        previous = -1
                        continue
                    }
                    slot = i
                    if previous >= 0 { successor[Int(previous)] = slot }
                }
                let e = entries[Int(slot)]
                ids[p] = e.id
                servers[p] = e.server
                previous = slot
            }
        }
    }
}
