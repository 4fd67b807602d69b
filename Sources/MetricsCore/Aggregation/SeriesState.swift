/// The live state of one series inside an ``AggregatorShard``.
///
/// Windows are driven by sample timestamps:
/// - the 1-minute window is six 10-second slots (so "last minute" is exact to 10 s);
/// - the 5-minute window is the current minute plus the four before it, from the minute ring;
/// - quantiles come from the sketches of the current and the previous minute.
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
    /// Completed minutes before `currentMinute` (newest last), at most `minuteSlots - 1`.
    var pastMinutes: [(minute: Int64, stats: WindowStats)] = []
    var currentMinute: Int64 = .min
    var current: QuantileSketch
    /// When `current` was loaded from the store (``AggregatorShard/warm(_:)``): the samples added
    /// since, i.e. the part of `current` the store does not hold yet. `nil` means all of `current`.
    var currentUnsent: QuantileSketch?
    var previousSketch: QuantileSketch?
    /// Tick sequence number when this series last changed.
    var changedSeq: UInt64 = 0
    /// Whether a sample for `currentMinute` arrived since the last collect.
    var touchedCurrent = false
    var dirty = false

    /// The series (verified against on every index lookup).
    let key: SeriesKey

    init(key: SeriesKey, relativeAccuracy: Double) {
        self.key = key
        current = QuantileSketch(relativeAccuracy: relativeAccuracy)
    }

    /// Folds one sample. Returns a sealed rollup when the sample starts a newer minute.
    mutating func add(value: Double, timestamp: Int64) -> MinuteRollup? {
        dirty = true
        if timestamp >= lastTimestamp {
            last = value
            lastTimestamp = timestamp
        }
        total.add(value)
        let slotStart = timestamp - ((timestamp % Self.slotWidth) + Self.slotWidth) % Self.slotWidth
        let idx = Int((slotStart / Self.slotWidth) % Int64(Self.slotCount) + Int64(Self.slotCount)) % Self.slotCount
        slots.withSlot(idx) { slot in
            if slot.start != slotStart {
                if slotStart > slot.start {
                    slot.start = slotStart
                    slot.stats = WindowStats()
                    slot.stats.add(value)
                }
                // else: older than the window; it only reaches total and the rollups.
            } else {
                slot.stats.add(value)
            }
        }
        let minute = MinuteRollup.minute(of: timestamp)
        var sealed: MinuteRollup? = nil
        if minute > currentMinute {
            sealed = seal(key: key, newMinute: minute)
        } else if minute < currentMinute {
            // Late sample for a minute already sealed: emit a one-sample rollup for the store to merge.
            var late = MinuteRollup(key: key, minute: minute, sketch: QuantileSketch(relativeAccuracy: current.relativeAccuracy))
            late.sketch.add(value)
            if let i = pastMinutes.firstIndex(where: { $0.minute == minute }) {
                pastMinutes[i].stats.add(value)
            } else if minute >= currentMinute - Int64(Self.minuteSlots - 1) * 60_000 {
                // A minute within the 5-minute ring that had no data yet: give it its own entry.
                var stats = WindowStats()
                stats.add(value)
                pastMinutes.insert((minute, stats), at: pastMinutes.firstIndex(where: { $0.minute > minute }) ?? pastMinutes.endIndex)
                if pastMinutes.count > Self.minuteSlots - 1 { pastMinutes.removeFirst(pastMinutes.count - (Self.minuteSlots - 1)) }
            }
            if minute == currentMinute - 60_000 {
                // The previous minute feeds the quantiles too.
                if previousSketch == nil { previousSketch = QuantileSketch(relativeAccuracy: current.relativeAccuracy) }
                previousSketch!.add(value)
            }
            return late
        }
        current.add(value)
        currentUnsent?.add(value)
        touchedCurrent = true
        return sealed
    }

    /// Closes the current minute and starts `newMinute`; returns the closed minute's rollup.
    mutating func seal(key: SeriesKey, newMinute: Int64) -> MinuteRollup? {
        var out: MinuteRollup? = nil
        if currentMinute != .min && !current.isEmpty {
            let unsent = currentUnsent ?? current
            if !unsent.isEmpty { out = MinuteRollup(key: key, minute: currentMinute, sketch: unsent) }
            pastMinutes.append((currentMinute, WindowStats(count: current.count, sum: current.sum, min: current.min, max: current.max)))
            if pastMinutes.count > Self.minuteSlots - 1 { pastMinutes.removeFirst(pastMinutes.count - (Self.minuteSlots - 1)) }
            previousSketch = (currentMinute == newMinute - 60_000) ? current : nil
        } else {
            previousSketch = nil
        }
        currentMinute = newMinute
        current = QuantileSketch(relativeAccuracy: current.relativeAccuracy)
        currentUnsent = nil
        return out
    }

    /// Stats of the 10 s slots that cover `[now - 60 s, now]`.
    func window1m(now: Int64) -> WindowStats {
        var w = WindowStats()
        let horizon = now - 60_000
        for i in 0..<Self.slotCount {
            let slot = slots[i]
            if slot.start != .min && slot.start + Self.slotWidth > horizon && slot.start <= now { w.merge(slot.stats) }
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
        for m in pastMinutes where m.minute >= horizon { w.merge(m.stats) }
        return w
    }

    /// Quantiles over the current and previous minute.
    func quantiles() -> (p50: Double, p95: Double, p99: Double)? {
        var sk = current
        if let p = previousSketch { sk.merge(p) }
        guard let p50 = sk.quantile(0.5), let p95 = sk.quantile(0.95), let p99 = sk.quantile(0.99) else { return nil }
        return (p50, p95, p99)
    }
}

/// One 10-second slot of the 1-minute window.
struct WindowSlot {
    var start: Int64 = .min
    var stats = WindowStats()
}

/// Six ``WindowSlot``s stored inline in the series state (a fixed-size tuple, no heap block).
struct SlotRing {
    var storage: (WindowSlot, WindowSlot, WindowSlot, WindowSlot, WindowSlot, WindowSlot) =
        (WindowSlot(), WindowSlot(), WindowSlot(), WindowSlot(), WindowSlot(), WindowSlot())

    /// Reads slot `i` (0..<6).
    subscript(i: Int) -> WindowSlot {
        precondition(i >= 0 && i < 6)
        return withUnsafeBytes(of: storage) { $0.load(fromByteOffset: i * MemoryLayout<WindowSlot>.stride, as: WindowSlot.self) }
    }

    /// Mutates slot `i` (0..<6) in place.
    @inline(__always)
    mutating func withSlot<R>(_ i: Int, _ body: (inout WindowSlot) -> R) -> R {
        precondition(i >= 0 && i < 6)
        return withUnsafeMutablePointer(to: &storage) { p in
            p.withMemoryRebound(to: WindowSlot.self, capacity: 6) { body(&$0[i]) }
        }
    }
}
