/// One shard of the ``Aggregator``: the live state of the series whose server id hashes to it.
///
/// An actor, so every shard folds its batches on its own and shards run in parallel on the
/// cooperative pool. Callers hand it whole batches (one actor hop per batch), never single samples.
public actor AggregatorShard {
    private var index: [SeriesKey: Int] = [:]
    private var keys: [SeriesKey] = []
    private var states: [SeriesState] = []
    private var dirtyList: [Int] = []
    /// Series indexes by "server\0metric", for history lookups across label sets.
    private var byServerMetric: [String: [Int]] = [:]
    private var sealed: [MinuteRollup] = []
    private let relativeAccuracy: Double
    private let maxSeries: Int
    /// Samples of series that could not be created because ``Aggregator/Configuration/maxSeries`` was reached.
    public private(set) var rejectedNewSeries = 0
    /// Samples folded since start.
    public private(set) var samplesFolded = 0

    init(relativeAccuracy: Double, maxSeries: Int) {
        self.relativeAccuracy = relativeAccuracy
        self.maxSeries = maxSeries
    }

    /// Number of live series.
    public var seriesCount: Int { keys.count }

    /// Folds a batch of samples.
    ///
    /// Two passes: first every sample's series index is resolved (creating new series), then all
    /// samples are folded through one mutable buffer pointer over the states, so the per-sample
    /// work is the arithmetic itself, without array uniqueness checks or state copies.
    public func ingest(_ samples: [MetricSample]) {
        var slots = [Int32](repeating: -1, count: samples.count)
        for (n, s) in samples.enumerated() {
            let key = s.seriesKey
            if let existing = index[key] {
                slots[n] = Int32(existing)
            } else if keys.count < maxSeries {
                slots[n] = Int32(addSeries(key))
            } else {
                rejectedNewSeries += 1
            }
        }
        var newlyDirty: [Int] = []
        var newlySealed: [MinuteRollup] = []
        let keys = self.keys
        states.withUnsafeMutableBufferPointer { states in
            for (n, s) in samples.enumerated() {
                let i = Int(slots[n])
                if i < 0 { continue }
                if !states[i].dirty { newlyDirty.append(i) }
                if let r = states[i].add(value: s.value, timestamp: s.timestamp, key: keys[i]) { newlySealed.append(r) }
            }
        }
        dirtyList.append(contentsOf: newlyDirty)
        sealed.append(contentsOf: newlySealed)
        samplesFolded += samples.count
    }

    private func addSeries(_ key: SeriesKey) -> Int {
        let i = keys.count
        index[key] = i
        keys.append(key)
        states.append(SeriesState(relativeAccuracy: relativeAccuracy))
        byServerMetric[key.serverID + "\u{0}" + key.metricName, default: []].append(i)
        return i
    }

    /// The open (not yet sealed) minute of each series of `serverID`/`metricName`, optionally one label set.
    func openMinutes(serverID: String, metricName: String, labels: String?) -> [MinuteRollup] {
        var out: [MinuteRollup] = []
        for i in byServerMetric[serverID + "\u{0}" + metricName] ?? [] {
            if let labels, keys[i].labels != labels { continue }
            let st = states[i]
            let open = st.currentUnsent ?? st.current  // the part of the minute the store does not hold
            if st.currentMinute != .min && !open.isEmpty {
                out.append(MinuteRollup(key: keys[i], minute: st.currentMinute, sketch: open))
            }
        }
        return out
    }

    /// Loads stored minute rollups (after a restart) into the minute windows, oldest first.
    func warm(_ rollups: [MinuteRollup]) {
        for r in rollups.sorted(by: { $0.minute < $1.minute }) {
            let i: Int
            if let existing = index[r.key] { i = existing } else {
                guard keys.count < maxSeries else { continue }
                i = addSeries(r.key)
            }
            var st = states[i]
            if r.minute > st.currentMinute {
                _ = st.seal(key: r.key, newMinute: r.minute)
                st.current = r.sketch
                // The store already holds this minute: only samples added from now on are sealed into its rollup.
                st.currentUnsent = QuantileSketch(relativeAccuracy: r.sketch.relativeAccuracy)
                st.total.merge(WindowStats(count: r.count, sum: r.sum, min: r.min, max: r.max))
                if r.minute >= st.lastTimestamp {
                    // The stored minute has no exact last sample: take its max, stamped with the minute's
                    // start so that any live sample of the same minute or later replaces it.
                    st.lastTimestamp = r.minute
                    st.last = r.sketch.quantile(1) ?? st.last
                }
            }
            states[i] = st
        }
    }

    /// Snapshots of the series changed since the last call, stamped with `seq`, plus the minute
    /// rollups sealed since the last call. Minutes that ended more than `sealAfter` ms before
    /// `now` are sealed here even when no newer sample arrived.
    func collect(now: Int64, seq: UInt64, sealAfter: Int64) -> (changed: [SeriesSnapshot], sealed: [MinuteRollup]) {
        var changed: [SeriesSnapshot] = []
        changed.reserveCapacity(dirtyList.count)
        for i in dirtyList {
            states[i].dirty = false
            states[i].changedSeq = seq
            changed.append(snapshot(i, now: now))
        }
        dirtyList.removeAll(keepingCapacity: true)
        // Seal stale minutes: cheap check per series, done once per tick.
        let sealBefore = MinuteRollup.minute(of: now - sealAfter)
        for i in states.indices where states[i].currentMinute != .min && states[i].currentMinute < sealBefore && !states[i].current.isEmpty {
            if let r = states[i].seal(key: keys[i], newMinute: states[i].currentMinute + 60_000) { sealed.append(r) }
        }
        let out = sealed
        sealed.removeAll(keepingCapacity: true)
        return (changed, out)
    }

    /// Seals every open minute (at shutdown) and returns all unsent rollups.
    func sealAll() -> [MinuteRollup] {
        for i in states.indices where !states[i].current.isEmpty {
            if let r = states[i].seal(key: keys[i], newMinute: states[i].currentMinute + 60_000) { sealed.append(r) }
        }
        let out = sealed
        sealed.removeAll()
        return out
    }

    /// Snapshots of every series (for tests and for consumers that need everything at once).
    public func snapshotAll(now: Int64) -> [SeriesSnapshot] {
        states.indices.map { snapshot($0, now: now) }
    }

    /// Snapshot of one series, if known.
    public func snapshot(of key: SeriesKey, now: Int64) -> SeriesSnapshot? {
        index[key].map { snapshot($0, now: now) }
    }

    private func snapshot(_ i: Int, now: Int64) -> SeriesSnapshot {
        let st = states[i]
        let q = st.quantiles()
        return SeriesSnapshot(key: keys[i], last: st.last, lastTimestamp: st.lastTimestamp, total: st.total,
                              window1m: st.window1m(now: now), window5m: st.window5m(now: now),
                              p50: q?.p50, p95: q?.p95, p99: q?.p99, changedSeq: st.changedSeq)
    }
}
