/// The live state of one series inside an ``AggregatorShard``.
///
/// Windows are driven by sample timestamps:
/// - the 1-minute window is six 10-second slots (so "last minute" is exact to 10 s);
/// - the 5-minute window is the current minute plus the four before it, from the minute ring;
/// - quantiles come from the sketches of the current and the previous minute.
///
/// Layout matters: at a million series every byte here is a megabyte. The rings are inline
/// (no heap block each), their slots are 32 bytes (period number and count in 32 bits each), the
/// sketches share their constants by reference, and the rarely used "unsent" sketch is boxed.
/// `Benchmarks/Sources/SeriesMemory` measures the result.
struct SeriesState {
    static let slotWidth: Int64 = 10_000
    static let slotCount = 6
    static let minuteSlots = 5

    var last: Double = 0
    var lastTimestamp: Int64 = .min
    var total = WindowStats()
    /// 10 s slots, indexed by (slot start / 10 s) % 6, each knowing which period it holds.
    /// Stored inline (not in arrays) so folding a sample touches one contiguous state, not
    /// three heap blocks: at 50k series the pointer chasing, not the arithmetic, was the cost.
    var slots = SlotRing()
    /// Completed minutes before `currentMinute`: the four before it, each in slot `minute % 4`.
    var pastMinutes = MinuteRing()
    var currentMinute: Int64 = .min
    var current: QuantileSketch
    /// What few series ever have: the unsent part of `current` and late samples kept apart.
    /// Boxed, so that the others pay one pointer for it; `nil` when it would be empty.
    var rare: RareParts?
    /// When the store holds part of `current` (warmed from the store, or stored by
    /// ``flushUnsent(key:)``): the samples added since, i.e. the part the store does not hold yet.
    /// `nil` means all of `current`.
    var currentUnsent: QuantileSketch? { rare?.unsent }
    var previousSketch: QuantileSketch?
    /// Tick sequence number when this series last changed (or, staged ahead of a tick by
    /// ``AggregatorShard/stage(now:seq:)``, that tick's number).
    var changedSeq: UInt64 = 0
    /// The other label sets of this series' server and metric: a doubly linked list through the
    /// shard's states (positions; -1 ends it), headed by the shard's (server, metric) index.
    var previousSameServerMetric: Int32 = -1
    var nextSameServerMetric: Int32 = -1
    /// The series whose sample followed this one's in the shard's last batch (a position; -1
    /// none). Agents send their series in the same order every interval, so this predicts the
    /// next lookup; a wrong or stale guess is caught by the key check (see ``AggregatorShard``).
    var successor: Int32 = -1
    /// Whether a sample for `currentMinute` arrived since the last ``AggregatorShard/maintain(now:sealAfter:expireThrough:)``.
    var touchedCurrent = false
    var dirty = false

    /// The series (verified against on every index lookup).
    let key: SeriesKey

    init(key: SeriesKey, mapping: SketchMapping) {
        self.key = key
        current = QuantileSketch(mapping: mapping)
    }

    /// Folds one sample. When it starts a newer minute (or is late for a sealed minute other than
    /// the one whose late samples are kept apart), the rollup to store is appended to `sealed`
    /// with `series`. (Not returned: a 136-byte optional result cost a copy per sample, 4 % of
    /// fold time.)
    @inline(__always)
    mutating func add(value: Double, timestamp: Int64, series: Int, sealed out: inout [(Int, MinuteRollup)]) {
        dirty = true
        if timestamp >= lastTimestamp {
            last = value
            lastTimestamp = timestamp
        }
        total.add(value)
        let slotStart = timestamp - ((timestamp % Self.slotWidth) + Self.slotWidth) % Self.slotWidth
        // Timestamps outside ±680 years of 1970 have no 32-bit slot number: they reach only total and the rollups.
        if let period = Int32(exactly: slotStart / Self.slotWidth) {
            let idx = Int((Int64(period) % Int64(Self.slotCount) + Int64(Self.slotCount)) % Int64(Self.slotCount))
            slots.withSlot(idx) { slot in
                if slot.period != period {
                    if period > slot.period {
                        slot = CompactStats(period: period)
                        slot.add(value)
                    }
                    // else: older than the window; it only reaches total and the rollups.
                } else {
                    slot.add(value)
                }
            }
        }
        let minute = MinuteRollup.minute(of: timestamp)
        if minute > currentMinute {
            if let r = seal(key: key, newMinute: minute) { out.append((series, r)) }
        } else if minute < currentMinute {
            // Late sample for a minute already sealed: kept apart and stored at the next wall-clock
            // minute (``AggregatorShard/maintain(now:sealAfter:expireThrough:)``), so a stream of
            // late samples costs the store one merge per series and minute, not one per tick. (Two
            // streams of one series straddling a minute boundary made every tick bring 50,000 late
            // rollups, and the store merges slowed ingestion through MariaDB to a fifth.)
            let r = rareParts()
            if r.late != nil && r.lateMinute != minute {
                // Another minute's late part: only one is kept, the other goes to the store now.
                out.append((series, MinuteRollup(key: key, minute: r.lateMinute, sketch: r.late!)))
                r.late = nil
            }
            if r.late == nil {
                r.late = QuantileSketch(mapping: current.mapping)
                r.lateMinute = minute
            }
            r.late!.add(value)
            if minute >= currentMinute - Int64(Self.minuteSlots - 1) * 60_000 {
                // Within the 5-minute ring: into its minute's slot (started if it had no data yet).
                pastMinutes.add(value, minute: minute)
            }
            if minute == currentMinute - 60_000 {
                // The previous minute feeds the quantiles too.
                if previousSketch == nil { previousSketch = QuantileSketch(mapping: current.mapping) }
                previousSketch!.add(value)
            }
            return
        }
        current.add(value)
        if let rare { rare.unsent?.add(value) }
        touchedCurrent = true
    }

    /// Closes the current minute and starts `newMinute`; returns the closed minute's rollup.
    mutating func seal(key: SeriesKey, newMinute: Int64) -> MinuteRollup? {
        var out: MinuteRollup? = nil
        if currentMinute != .min && !current.isEmpty {
            out = unsentRollup(key: key)
            pastMinutes.set(minute: currentMinute, count: current.count, sum: current.sum, min: current.min, max: current.max)
            previousSketch = (currentMinute == newMinute - 60_000) ? current : nil
        } else {
            previousSketch = nil
        }
        currentMinute = newMinute
        current = QuantileSketch(mapping: current.mapping)
        if let rare {
            rare.unsent = nil
            if rare.isEmpty { self.rare = nil }
        }
        return out
    }

    /// The part of the open minute the store does not hold yet (all of it unless the store got
    /// part of it before: warmed from the store, or stored by ``flushUnsent(key:)``), as a rollup;
    /// `nil` when that part is empty.
    func unsentRollup(key: SeriesKey) -> MinuteRollup? {
        guard currentMinute != .min else { return nil }
        let unsent = currentUnsent ?? current
        return unsent.isEmpty ? nil : MinuteRollup(key: key, minute: currentMinute, sketch: unsent)
    }

    /// ``unsentRollup(key:)``, to store now; the minute stays open and later samples of it are
    /// kept apart as the new unsent part.
    mutating func flushUnsent(key: SeriesKey) -> MinuteRollup? {
        guard let r = unsentRollup(key: key) else { return nil }
        rareParts().unsent = QuantileSketch(mapping: current.mapping)
        return r
    }

    /// Marks all of `current` as held by the store (warmed from it): only samples added from now
    /// on are unsent.
    mutating func markCurrentStored() {
        rareParts().unsent = QuantileSketch(mapping: current.mapping)
    }

    /// The late samples kept apart (of one minute before the open one), as a rollup; `nil` when none.
    func lateRollup(key: SeriesKey) -> MinuteRollup? {
        guard let rare, let late = rare.late else { return nil }
        return MinuteRollup(key: key, minute: rare.lateMinute, sketch: late)
    }

    /// The earliest minute of which this series holds samples back from the store (late ones, or
    /// the unsent part of a minute partly stored), if any.
    var earliestHeldMinute: Int64? {
        guard let rare else { return nil }
        var m: Int64? = rare.late != nil ? rare.lateMinute : nil
        if let u = rare.unsent, !u.isEmpty { m = min(m ?? currentMinute, currentMinute) }
        return m
    }

    /// ``lateRollup(key:)``, to store now.
    mutating func flushLate(key: SeriesKey) -> MinuteRollup? {
        guard let r = lateRollup(key: key) else { return nil }
        rare!.late = nil
        if rare!.isEmpty { rare = nil }
        return r
    }

    @inline(__always)
    private mutating func rareParts() -> RareParts {
        if let rare { return rare }
        let r = RareParts()
        rare = r
        return r
    }

    /// Stats of the 10 s slots that cover `[now - 60 s, now]`.
    func window1m(now: Int64) -> WindowStats {
        var w = WindowStats()
        let horizon = now - 60_000
        for i in 0..<Self.slotCount {
            let slot = slots[i]
            guard slot.count > 0 else { continue }
            let start = Int64(slot.period) * Self.slotWidth
            if start + Self.slotWidth > horizon && start <= now { w.merge(slot.stats) }
        }
        return w
    }

    /// Stats of the current minute and the up to four completed minutes before it that lie within 5 minutes of `now`.
    func window5m(now: Int64) -> WindowStats {
        var w = WindowStats()
        let horizon = MinuteRollup.minute(of: now) - 4 * 60_000
        if currentMinute >= horizon && !current.isEmpty {
            w.merge(WindowStats(count: current.count, sum: current.sum, min: current.min, max: current.max))
        }
        for i in 0..<MinuteRing.count {
            let m = pastMinutes[i]
            if m.count > 0 && Int64(m.period) * 60_000 >= horizon { w.merge(m.stats) }
        }
        return w
    }

    /// What the series looks like now (windows as of `now`).
    ///
    /// `mutating` although it changes nothing: called on an array element it then works in place,
    /// where a non-mutating call copies the whole state first (about 600 bytes and a
    /// retain/release of each of its references, per changed series per tick).
    mutating func snapshot(now: Int64) -> SeriesSnapshot {
        let q = quantiles()
        return SeriesSnapshot(key: key, last: last, lastTimestamp: lastTimestamp, total: total,
                              window1m: window1m(now: now), window5m: window5m(now: now),
                              p50: q?.p50, p95: q?.p95, p99: q?.p99, changedSeq: changedSeq)
    }

    /// Quantiles over the current and previous minute.
    func quantiles() -> (p50: Double, p95: Double, p99: Double)? {
        // One walk over both sketches, no merged copy (see QuantileSketch.quantiles(_:mergedWith:)).
        guard let q = current.quantiles((0.5, 0.95, 0.99), mergedWith: previousSketch) else { return nil }
        return (q.0, q.1, q.2)
    }
}

/// Count, sum, min and max of one period (a 10 s slot or a minute) in 32 bytes: the period
/// number and the count in 32 bits each. A count above 2^32 − 1 in one period (71 M samples/s
/// for one series) saturates.
struct CompactStats {
    /// The period's number (start / width); `Int32.min` when unused.
    var period: Int32 = .min
    var count: UInt32 = 0
    var sum: Double = 0
    var min: Double = .infinity
    var max: Double = -.infinity

    init(period: Int32 = .min) {
        self.period = period
    }

    @inline(__always)
    mutating func add(_ v: Double) {
        if count < .max { count += 1 }
        sum += v
        if v < min { min = v }
        if v > max { max = v }
    }

    var stats: WindowStats { WindowStats(count: UInt64(count), sum: sum, min: min, max: max) }
}

/// Six ``CompactStats`` stored inline in the series state (a fixed-size tuple, no heap block).
struct SlotRing {
    var storage: (CompactStats, CompactStats, CompactStats, CompactStats, CompactStats, CompactStats) =
        (CompactStats(), CompactStats(), CompactStats(), CompactStats(), CompactStats(), CompactStats())

    /// Reads slot `i` (0..<6).
    subscript(i: Int) -> CompactStats {
        precondition(i >= 0 && i < 6)
        return withUnsafeBytes(of: storage) { $0.load(fromByteOffset: i * MemoryLayout<CompactStats>.stride, as: CompactStats.self) }
    }

    /// Mutates slot `i` (0..<6) in place.
    @inline(__always)
    mutating func withSlot<R>(_ i: Int, _ body: (inout CompactStats) -> R) -> R {
        precondition(i >= 0 && i < 6)
        return withUnsafeMutablePointer(to: &storage) { p in
            p.withMemoryRebound(to: CompactStats.self, capacity: 6) { body(&$0[i]) }
        }
    }
}

/// The four completed minutes before a series' current one, inline: minute `m` lives in slot
/// `m % 4`, so the four minutes before any current minute never share a slot, and a newer
/// minute replaces the one four minutes older.
struct MinuteRing {
    static let count = 4
    var storage: (CompactStats, CompactStats, CompactStats, CompactStats) = (CompactStats(), CompactStats(), CompactStats(), CompactStats())

    /// Reads slot `i` (0..<4).
    subscript(i: Int) -> CompactStats {
        precondition(i >= 0 && i < 4)
        return withUnsafeBytes(of: storage) { $0.load(fromByteOffset: i * MemoryLayout<CompactStats>.stride, as: CompactStats.self) }
    }

    @inline(__always)
    private mutating func withSlot(minute period: Int32, _ body: (inout CompactStats) -> Void) {
        let i = Int((Int64(period) % 4 + 4) % 4)
        withUnsafeMutablePointer(to: &storage) { p in
            p.withMemoryRebound(to: CompactStats.self, capacity: 4) { body(&$0[i]) }
        }
    }

    /// Stores a completed minute's figures (replacing whatever older minute held its slot).
    mutating func set(minute: Int64, count: UInt64, sum: Double, min: Double, max: Double) {
        guard let period = Int32(exactly: minute / 60_000) else { return }
        withSlot(minute: period) { slot in
            slot = CompactStats(period: period)
            slot.count = UInt32(clamping: count)
            slot.sum = sum
            slot.min = min
            slot.max = max
        }
    }

    /// Adds a late value to a completed minute, starting its slot when that minute had no data
    /// yet and the slot holds an older one.
    mutating func add(_ value: Double, minute: Int64) {
        guard let period = Int32(exactly: minute / 60_000) else { return }
        withSlot(minute: period) { slot in
            if slot.period == period {
                slot.add(value)
            } else if slot.period < period {
                slot = CompactStats(period: period)
                slot.add(value)
            }
        }
    }
}

/// The parts of a series' state that few series ever have (see ``SeriesState/rare``).
final class RareParts {
    /// ``SeriesState/currentUnsent``.
    var unsent: QuantileSketch?
    /// Late samples of `lateMinute` (a minute before the open one) not yet handed to the store.
    var late: QuantileSketch?
    var lateMinute: Int64 = .min

    var isEmpty: Bool { unsent == nil && late == nil }
}
