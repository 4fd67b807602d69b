import Synchronization

/// The live series cap shared by the shards of one ``Aggregator``: a shard takes one unit before
/// it creates a series. Lock-free; touched only when a series is created, never per sample.
public final class SeriesBudget: Sendable {
    /// The most series.
    public let limit: Int
    private let used = Atomic<Int>(0)

    init(limit: Int) {
        self.limit = max(0, limit)
    }

    /// Takes room for one series; false when the cap is reached.
    func take() -> Bool {
        var current = used.load(ordering: .relaxed)
        while current < limit {
            let (exchanged, original) = used.compareExchange(expected: current, desired: current + 1, ordering: .relaxed)
            if exchanged { return true }
            current = original
        }
        return false
    }

    /// Gives back room for `n` series (they expired).
    func release(_ n: Int) {
        used.subtract(n, ordering: .relaxed)
    }

    /// Series that can still be created.
    public var headroom: Int { limit - used.load(ordering: .relaxed) }
}

/// One shard of the ``Aggregator``: the live state of the series whose server id hashes to it.
///
/// An actor, so every shard folds its batches on its own and shards run in parallel on the
/// cooperative pool. Callers hand it whole batches (one actor hop per batch), never single samples.
public actor AggregatorShard {
    private var index = SeriesIndex()
    /// Series states by series number; each holds its key (verified on lookup, see ``SeriesIndex``).
    private var states: [SeriesState] = []
    private var dirtyList: [Int] = []
    /// Idle series found by the last ``maintain(now:sealAfter:expireThrough:)`` (ascending
    /// positions), removed by the next ``collectChanges(now:seq:)`` unless they changed since,
    /// and the tick through which they had not changed.
    private var idleCandidates: [Int] = []
    private var idleThrough: UInt64 = 0
    /// The first series of each (server, metric), for history lookups across label sets; the
    /// others are linked from it (``SeriesState/nextSameServerMetric``). 16-byte entries, O(1) to
    /// add and remove however many label sets a server has (a `[String: [Int]]` cost about 150
    /// bytes per series).
    private var byServerMetric = SeriesIndex()
    private var sealed: [MinuteRollup] = []
    /// Where the rollup of (series, minute) is in `sealed`: late samples of one minute within a
    /// tick coalesce into one rollup instead of one per sample (a backfilling agent would
    /// otherwise produce a rollup, and a store merge, per sample).
    private var sealedIndex: [SealedSlot: Int] = [:]
    /// The wall-clock minute of the previous ``maintain(now:sealAfter:expireThrough:)``.
    private var lastMaintainMinute = Int64.min

    struct SealedSlot: Hashable {
        var series: Int
        var minute: Int64
    }

    private func appendSealed(_ series: Int, _ r: MinuteRollup) {
        let k = SealedSlot(series: series, minute: r.minute)
        if let at = sealedIndex[k] {
            sealed[at].sketch.merge(r.sketch)
        } else {
            sealedIndex[k] = sealed.count
            sealed.append(r)
        }
    }

    private func takeSealed() -> [MinuteRollup] {
        let out = sealed
        // Not keeping capacity: every series seals in the tick after a minute ends, and a buffer
        // (and index) sized for all of them would stay allocated, ~190 bytes per series.
        sealed = []
        sealedIndex.removeAll(keepingCapacity: sealedIndex.count <= 1024)
        return out
    }
    private let mapping: SketchMapping
    /// Samples of series that could not be created because ``Aggregator/Configuration/maxSeries`` was reached.
    public private(set) var rejectedNewSeries = 0
    /// Samples folded since start.
    public private(set) var samplesFolded = 0
    /// Series removed since start because they were idle (see ``Aggregator/Configuration/idleSeriesTimeout``).
    public private(set) var expiredSeries = 0

    /// The cap shared by all shards of the aggregator.
    nonisolated let budget: SeriesBudget

    init(relativeAccuracy: Double, budget: SeriesBudget) {
        self.mapping = SketchMapping.shared(relativeAccuracy: relativeAccuracy, maxBuckets: 2048)
        self.budget = budget
    }

    /// Number of live series.
    public var seriesCount: Int { states.count }

    /// Folds a batch of samples.
    ///
    /// One pass through a mutable buffer pointer over the states: look the series up in the
    /// compact index, verify the key in the state, fold the value. The pass is left only to create
    /// a new series (appending needs the array itself), then resumes.
    /// - Returns: the positions (in `samples`, ascending) of the samples refused because they
    ///   would have created a series beyond the cap; usually empty.
    @discardableResult
    public func ingest(_ samples: [MetricSample]) -> [Int] {
        fold(samples, count: samples.count) { $0 }
    }

    /// Folds `samples[positions[k]]` for every k: the ``Aggregator`` hands each shard the shared
    /// batch and the positions of its samples instead of copying them into per-shard arrays.
    func ingest(_ samples: [MetricSample], positions: [Int32]) -> [Int] {
        fold(samples, count: positions.count) { Int(positions[$0]) }
    }

    @inline(__always)
    private func fold(_ samples: [MetricSample], count: Int, position: (Int) -> Int) -> [Int] {
        var refused: [Int] = []
        var n = 0
        var previous = -1  // position of the previous sample's series in this batch
        var newlyDirty: [Int] = []
        var newlySealed: [(Int, MinuteRollup)] = []
        while n < count {
            var missing = false
            let index = self.index
            // The samples are read in place through a pointer, never copied out: a copy of a
            // sample retains and releases each of its strings longer than 15 bytes (metric names
            // such as `system_memory_usage`), which was a fifth of the fold's time.
            // Lookups first try the previous sample's successor (the series that followed it last
            // time): agents repeat their order, so this usually skips hashing the key and probing
            // the index, whose random access was most of the fold's time at 50,000 series.
            samples.withUnsafeBufferPointer { sp in
                states.withUnsafeMutableBufferPointer { st in
                    while n < count {
                        let s = sp.baseAddress! + position(n)
                        var found: Int32 = -1
                        if previous >= 0 {
                            let guess = st[previous].successor
                            if guess >= 0 && Int(guess) < st.count && st[Int(guess)].key.matches(s.pointee) { found = guess }
                        }
                        if found < 0 {
                            let h = SeriesIndex.hash(serverID: s.pointee.serverID, metricName: s.pointee.metricName, labels: s.pointee.labels)
                            guard let id = index.find(hash: h, matches: { st[Int($0)].key.matches(s.pointee) }) else {
                                missing = true
                                return
                            }
                            found = id
                            if previous >= 0 { st[previous].successor = id }
                        }
                        let i = Int(found)
                        previous = i
                        if !st[i].dirty { newlyDirty.append(i) }
                        st[i].add(value: s.pointee.value, timestamp: MetricSample.clampedTimestamp(s.pointee.timestamp),
                                  series: i, sealed: &newlySealed)
                        n += 1
                    }
                }
            }
            if missing {
                if budget.take() {
                    _ = addSeries(samples[position(n)].seriesKey)  // the next round finds it
                } else {
                    rejectedNewSeries += 1
                    refused.append(position(n))
                    n += 1
                }
            }
        }
        dirtyList.append(contentsOf: newlyDirty)
        for (i, r) in newlySealed { appendSealed(i, r) }
        samplesFolded += count - refused.count
        return refused
    }

    private func find(_ key: SeriesKey) -> Int? {
        index.find(hash: Self.hash(key)) { states[Int($0)].key == key }.map(Int.init)
    }

    private func addSeries(_ key: SeriesKey) -> Int {
        let i = states.count
        index.insert(hash: Self.hash(key), id: Int32(i))
        // Grow by a quarter, not the doubling of `append`: the states are most of the shard's memory.
        if states.count == states.capacity { states.reserveCapacity(states.count + states.count / 4 + 64) }
        states.append(SeriesState(key: key, mapping: mapping))
        let h = Self.serverMetricHash(key)
        if let head = firstOf(serverID: key.serverID, metricName: key.metricName, hash: h) {
            states[i].nextSameServerMetric = head
            states[Int(head)].previousSameServerMetric = Int32(i)
            byServerMetric.renumber(hash: h, id: head, to: Int32(i))
        } else {
            byServerMetric.insert(hash: h, id: Int32(i))
        }
        return i
    }

    /// What the store does not hold yet of each series of `serverID`/`metricName` (optionally one
    /// label set): its open minute, and late samples of an earlier minute kept apart.
    func openMinutes(serverID: String, metricName: String, labels: String?) -> [MinuteRollup] {
        var out: [MinuteRollup] = []
        var ids: [Int] = []
        var next = firstOf(serverID: serverID, metricName: metricName,
                           hash: Self.serverMetricHash(serverID: serverID, metricName: metricName)) ?? -1
        while next >= 0 {
            ids.append(Int(next))
            next = states[Int(next)].nextSameServerMetric
        }
        for i in ids.sorted() {
            if let labels, states[i].key.labels != labels { continue }
            if let open = states[i].unsentRollup(key: states[i].key) { out.append(open) }
            if let late = states[i].lateRollup(key: states[i].key) { out.append(late) }
        }
        return out
    }

    /// Loads stored minute rollups (after a restart) into the minute windows, oldest first.
    func warm(_ rollups: [MinuteRollup]) {
        for r in rollups.sorted(by: { $0.minute < $1.minute }) {
            let i: Int
            if let existing = find(r.key) { i = existing } else {
                guard budget.take() else { continue }
                i = addSeries(r.key)
            }
            var st = states[i]
            if r.minute > st.currentMinute {
                _ = st.seal(key: r.key, newMinute: r.minute)
                st.current = r.sketch
                // The store already holds this minute: only samples added from now on are sealed into its rollup.
                st.markCurrentStored()
                st.total.merge(WindowStats(count: r.count, sum: r.sum, min: r.min, max: r.max))
                if r.minute >= st.lastTimestamp {
                    // The stored minute has no exact last sample: take its max, stamped with the minute's
                    // start so that any live sample of the same minute or later replaces it.
                    st.lastTimestamp = r.minute
                    st.last = r.sketch.quantile(1) ?? st.last
                }
            }
            // Publish warmed series at the next tick so a restarted server's dashboard is not blank.
            if !st.dirty {
                st.dirty = true
                dirtyList.append(i)
            }
            states[i] = st
        }
    }

    /// Hands over snapshots of the series changed since the last call, ahead of the coming tick,
    /// so that ``collectChanges(now:seq:)`` at the tick only has the series changed since to
    /// snapshot (a fleet whose agents report once a second changes most series between two
    /// ticks, and the tick's update waits for the collect). A series is staged at most once per
    /// tick (`seq`, the coming tick's number, marks it: its `changedSeq`); one that changes again
    /// after it was staged is left for the tick's collect, which returns it again (newer), so a
    /// tick costs at most two snapshots per series.
    func stage(now: Int64, seq: UInt64) -> [SeriesSnapshot] {
        guard !dirtyList.isEmpty else { return [] }
        var out: [SeriesSnapshot] = []
        out.reserveCapacity(dirtyList.count)
        var stillDirty: [Int] = []
        for i in dirtyList {
            if states[i].changedSeq == seq {
                stillDirty.append(i)  // changed again since it was staged: snapshotted at the tick
                continue
            }
            states[i].dirty = false
            states[i].changedSeq = seq
            out.append(states[i].snapshot(now: now))
        }
        dirtyList = stillDirty
        return out
    }

    /// Snapshots of the series changed since the last call (and since ``stage(now:seq:)`` handed
    /// them over, if it did), stamped with `seq`; the idle series the last
    /// ``maintain(now:sealAfter:expireThrough:)`` found, removed (their open minute sealed first)
    /// unless they changed since; and the minute rollups sealed since the last call.
    /// Visits only the changed series and the idle ones, so a tick's update does not wait for a
    /// pass over every series.
    func collectChanges(now: Int64, seq: UInt64) -> (changed: [SeriesSnapshot], sealed: [MinuteRollup], expired: [SeriesKey]) {
        var changed: [SeriesSnapshot] = []
        changed.reserveCapacity(dirtyList.count)
        for i in dirtyList {
            states[i].dirty = false
            states[i].changedSeq = seq
            changed.append(states[i].snapshot(now: now))
        }
        dirtyList.removeAll(keepingCapacity: true)
        var idle: [Int] = []
        for i in idleCandidates where states[i].changedSeq <= idleThrough && !states[i].dirty {
            if states[i].rare != nil, let r = states[i].flushLate(key: states[i].key) { appendSealed(i, r) }
            if let r = states[i].seal(key: states[i].key, newMinute: states[i].currentMinute + 60_000) { appendSealed(i, r) }
            idle.append(i)
        }
        idleCandidates = []
        let sealed = takeSealed()
        // Positions change here; the dirty list and the sealed buffer are empty, and the
        // candidates were consumed.
        let expired = remove(idle)
        return (changed, sealed, expired)
    }

    /// The once-per-tick pass over every series: seals stale minutes, stores late samples kept
    /// apart once per wall-clock minute, and finds the idle series (removed by the next
    /// ``collectChanges(now:seq:)``). Returns the minute rollups sealed since the last call, and
    /// the earliest minute of which series hold samples back from the store, counted before this
    /// call's flushes (`nil` when none).
    ///
    /// A minute that ended more than `sealAfter` ms before `now` and saw no newer sample is stored
    /// at the first call without new samples for it (or, for a backlog that never pauses, at the
    /// first call of a new wall-clock minute or once it ended `sealAfter` + 60 s ago), but it
    /// stays the series' open minute: samples for it that arrive later (a backlog, a lagging
    /// agent, a stream paused by backpressure) are collected apart and stored as one partial
    /// rollup per wall-clock minute. A sample of a newer
    /// minute closes it. Closing a minute whose samples were still streaming in turned each later
    /// tick's samples into late rollups for the store to merge: a backlog of 50,000 series cost
    /// 50,000 rollup merges per tick, which slowed the store, which lengthened the backlog
    /// (measured through MariaDB: 31k instead of 330k rows/s).
    ///
    /// Series that have not changed since tick `expireThrough` (inclusive) are idle: the next
    /// ``collectChanges(now:seq:)`` seals their open minute, gives their room under the series
    /// cap back, and returns their keys in `expired`.
    ///
    /// Call it once per tick: "without new samples" means since the previous call. The engine
    /// calls it between ticks (at its first stage point), off the path of the tick's update.
    func maintain(now: Int64, sealAfter: Int64, expireThrough: UInt64? = nil) -> (sealed: [MinuteRollup], heldMinute: Int64?) {
        let sealBefore = MinuteRollup.minute(of: now - sealAfter)
        let storeAnywayBefore = MinuteRollup.minute(of: now - sealAfter - 60_000)
        let minuteTurned = lastMaintainMinute != .min && MinuteRollup.minute(of: now) > lastMaintainMinute
        lastMaintainMinute = max(lastMaintainMinute, MinuteRollup.minute(of: now))
        var idle: [Int] = []
        var held = Int64.max
        // Through the buffer: this visits every series every tick, and a non-mutating call on
        // `states[i]` (e.g. `earliestHeldMinute`) would copy the whole state first. (`appendSealed`
        // touches only the sealed buffer, not `states`.)
        states.withUnsafeMutableBufferPointer { states in
            for i in states.indices {
                // Counted before this call's flushes: released a tick late, never early.
                if let m = states[i].earliestHeldMinute { held = min(held, m) }
                let touched = states[i].touchedCurrent
                if touched { states[i].touchedCurrent = false }  // samples since this call count for the next
                // Late samples kept apart go to the store once per wall-clock minute (see SeriesState.add).
                if minuteTurned, states[i].rare != nil, let r = states[i].flushLate(key: states[i].key) { appendSealed(i, r) }
                if let through = expireThrough, states[i].changedSeq <= through && !states[i].dirty {
                    idle.append(i)  // sealed and removed by the next collectChanges, unless it changes first
                    continue
                }
                guard states[i].currentMinute != .min && states[i].currentMinute < sealBefore && !states[i].current.isEmpty else { continue }
                if states[i].currentUnsent == nil {
                    // The store holds nothing of it yet: store it at the first tick without samples for it,
                    // or anyway once it ended sealAfter + 60 s ago or the wall-clock minute turns.
                    if touched && states[i].currentMinute >= storeAnywayBefore && !minuteTurned { continue }
                } else if !minuteTurned {
                    continue  // stored before: what arrived since is stored once per wall-clock minute
                }
                if let r = states[i].flushUnsent(key: states[i].key) { appendSealed(i, r) }
            }
        }
        idleCandidates = idle
        idleThrough = expireThrough ?? 0
        return (takeSealed(), held == .max ? nil : held)
    }

    /// Removes the series at `positions` (ascending), moving the last series into each hole, and
    /// returns their keys. Called with the dirty list and the sealed buffer empty, so no other
    /// structure holds a position.
    private func remove(_ positions: [Int]) -> [SeriesKey] {
        guard !positions.isEmpty else { return [] }
        var keys: [SeriesKey] = []
        keys.reserveCapacity(positions.count)
        for i in positions.reversed() {
            let key = states[i].key
            keys.append(key)
            index.remove(hash: Self.hash(key), id: Int32(i))
            unlinkServerMetric(i)
            let last = states.count - 1
            if i != last {
                let moved = states[last].key
                index.renumber(hash: Self.hash(moved), id: Int32(last), to: Int32(i))
                // Whoever pointed at `last` (a neighbour, or the index as head) now points at `i`.
                let p = states[last].previousSameServerMetric, n = states[last].nextSameServerMetric
                if p >= 0 { states[Int(p)].nextSameServerMetric = Int32(i) } else {
                    byServerMetric.renumber(hash: Self.serverMetricHash(moved), id: Int32(last), to: Int32(i))
                }
                if n >= 0 { states[Int(n)].previousSameServerMetric = Int32(i) }
                states.swapAt(i, last)
            }
            states.removeLast()
        }
        budget.release(positions.count)
        expiredSeries += positions.count
        // Give memory back after a large expiry (a fleet that shrank), not on every series.
        if states.capacity > 1024 && states.count < states.capacity / 2 { states = states.withUnsafeBufferPointer { Array($0) } }
        return keys
    }

    /// The first series of (server, metric), if any.
    private func firstOf(serverID: String, metricName: String, hash: UInt64) -> Int32? {
        byServerMetric.find(hash: hash) { states[Int($0)].key.serverID == serverID && states[Int($0)].key.metricName == metricName }
    }

    /// Takes series `i` out of its (server, metric) list.
    private func unlinkServerMetric(_ i: Int) {
        let p = states[i].previousSameServerMetric, n = states[i].nextSameServerMetric
        if p >= 0 {
            states[Int(p)].nextSameServerMetric = n
        } else if n >= 0 {
            byServerMetric.renumber(hash: Self.serverMetricHash(states[i].key), id: Int32(i), to: n)
        } else {
            byServerMetric.remove(hash: Self.serverMetricHash(states[i].key), id: Int32(i))
        }
        if n >= 0 { states[Int(n)].previousSameServerMetric = p }
        states[i].previousSameServerMetric = -1
        states[i].nextSameServerMetric = -1
    }

    private static func hash(_ key: SeriesKey) -> UInt64 {
        SeriesIndex.hash(serverID: key.serverID, metricName: key.metricName, labels: key.labels)
    }

    private static func serverMetricHash(_ key: SeriesKey) -> UInt64 {
        serverMetricHash(serverID: key.serverID, metricName: key.metricName)
    }

    /// The (server, metric) index's hash: the series hash with no labels.
    private static func serverMetricHash(serverID: String, metricName: String) -> UInt64 {
        SeriesIndex.hash(serverID: serverID, metricName: metricName, labels: "")
    }

    /// Seals every open minute (at shutdown) and returns all unsent rollups.
    func sealAll() -> [MinuteRollup] {
        for i in states.indices {
            if let r = states[i].flushLate(key: states[i].key) { appendSealed(i, r) }
            guard !states[i].current.isEmpty else { continue }
            if let r = states[i].seal(key: states[i].key, newMinute: states[i].currentMinute + 60_000) { appendSealed(i, r) }
        }
        return takeSealed()
    }

    /// Snapshots of every series (for tests and for consumers that need everything at once).
    public func snapshotAll(now: Int64) -> [SeriesSnapshot] {
        states.indices.map { snapshot($0, now: now) }
    }

    /// Snapshot of one series, if known.
    public func snapshot(of key: SeriesKey, now: Int64) -> SeriesSnapshot? {
        find(key).map { snapshot($0, now: now) }
    }

    private func snapshot(_ i: Int, now: Int64) -> SeriesSnapshot {
        states[i].snapshot(now: now)
    }
}
