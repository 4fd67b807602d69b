/// A metric's servers in the broadcaster, laid out for fleet views: one slot per server (in
/// arrival order), each with its series of the metric, plus the slots in natural id order.
///
/// Kept up to date by ``Broadcaster/publish(changed:seq:timestamp:)`` so a fleet view is computed
/// by walking arrays, without hashing a key per series per tick.
struct MetricServers {
    struct Series {
        var labels: String
        var last: Double
        var changedSeq: UInt64
        /// The server's slot.
        var server: Int32
        /// The server's next series of this metric (an index into ``MetricServers/series``; -1 ends it).
        var next: Int32
    }

    var slotByServer: [String: Int32] = [:]
    var ids: [String] = []
    /// Every series of the metric in one array (arrival order); a server's series are a list
    /// through ``Series/next`` from `heads[slot]`. One array, not an array per server: with one
    /// series per server and metric, a block of its own cost each series ~80 bytes of heap.
    var series: [Series] = []
    var heads: [Int32] = []
    var tails: [Int32] = []
    /// Slots in natural order of their ids; rebuilt by ``sortIfNeeded()`` after servers arrive.
    var order: [Int32] = []
    /// Changes whenever the member list changes (so clients know when to refetch it). Assigned
    /// by the broadcaster from one clock for all metrics, so a metric that disappears and comes
    /// back never repeats a version a client already holds.
    var version = 0
    /// A server joined since the broadcaster last assigned ``version``.
    var membersChanged = false
    var dirty = false
    var seriesCount: Int { series.count }

    /// Records a series' latest value; returns its (slot, index into ``series``) for later updates.
    mutating func insert(_ snap: SeriesSnapshot) -> (Int, Int) {
        let id = snap.key.serverID
        let slot: Int32
        let index = Int32(series.count)
        if let s = slotByServer[id] {
            slot = s
            series[Int(tails[Int(s)])].next = index
            tails[Int(s)] = index
        } else {
            slot = Int32(ids.count)
            slotByServer[id] = slot
            ids.append(id)
            heads.append(index)
            tails.append(index)
            membersChanged = true
            dirty = true
        }
        // Grow by a quarter, not the doubling of `append` (as the broadcaster's series table).
        if series.count == series.capacity { series.reserveCapacity(series.count + series.count / 4 + 16) }
        series.append(Series(labels: snap.key.labels, last: snap.last, changedSeq: snap.changedSeq, server: slot, next: -1))
        return (Int(slot), Int(index))
    }

    /// Records a known series' latest value at the place ``insert(_:)`` returned.
    mutating func update(_ snap: SeriesSnapshot, at slot: (server: Int, index: Int)) {
        series[slot.index].last = snap.last
        series[slot.index].changedSeq = snap.changedSeq
    }

    mutating func sortIfNeeded() {
        guard dirty else { return }
        dirty = false
        order = Array(0..<Int32(ids.count))
        order.sort { naturalLess(ids[Int($0)], ids[Int($1)]) }
    }
}

/// Orders ids so that runs of digits compare by value: `web-2` before `web-10`.
func naturalLess(_ a: String, _ b: String) -> Bool {
    var i = a.utf8.makeIterator(), j = b.utf8.makeIterator()
    var x = i.next(), y = j.next()
    func isDigit(_ c: UInt8?) -> Bool { if let c { return c >= 48 && c <= 57 } else { return false } }
    while let cx = x, let cy = y {
        if isDigit(cx) && isDigit(cy) {
            // Compare digit runs by value: skip leading zeros, then longer run wins, then digits.
            var dx: [UInt8] = [], dy: [UInt8] = []
            var c: UInt8? = cx
            while isDigit(c) { if !(dx.isEmpty && c == 48) { dx.append(c!) }; c = i.next() }
            x = c
            c = cy
            while isDigit(c) { if !(dy.isEmpty && c == 48) { dy.append(c!) }; c = j.next() }
            y = c
            if dx.count != dy.count { return dx.count < dy.count }
            if dx != dy { return dx.lexicographicallyPrecedes(dy) }
            continue
        }
        if cx != cy { return cx < cy }
        x = i.next(); y = j.next()
    }
    if x == nil && y == nil { return a < b }  // equal up to leading zeros: any total order
    return x == nil
}

/// What a fleet view is computed from: the metric and the parts of a ``SubscriptionFilter`` that
/// shape it. Subscribers asking the same thing share one computation per tick.
struct FleetViewKey: Hashable {
    var metric: String
    var servers: [String]
    var prefixes: [String]
    var labelPairs: [String]
    var staleTicks: UInt64
    var warn: Double?
    var crit: Double?
    var lowIsWorse: Bool
    var cells: Int
    var scaleLow: Double?
    var scaleHigh: Double?
    /// Whether the heatmap and member list are needed (the history ring needs only the numbers).
    var withCells: Bool

    init(metric: String, filter: SubscriptionFilter, staleTicks: UInt64, withCells: Bool) {
        self.metric = metric
        self.servers = filter.servers.sorted()
        self.prefixes = filter.serverPrefixes
        self.labelPairs = filter.labelPairs
        self.staleTicks = staleTicks
        self.warn = filter.warn
        self.crit = filter.crit
        self.lowIsWorse = filter.lowIsWorse
        self.cells = filter.cells
        self.scaleLow = filter.scale?.lowerBound
        self.scaleHigh = filter.scale?.upperBound
        self.withCells = withCells
    }

    /// Whether the numbers equal those of the unfiltered view (so the history ring applies).
    var isUnfiltered: Bool { servers.isEmpty && prefixes.isEmpty && labelPairs.isEmpty }
}

/// One metric's fleet as a dashboard draws it: every server that reports it, as a heatmap cell
/// coloured by its worst series, plus counts and the distribution across servers.
///
/// Encoded into the `views` array of SSE events (see Docs/wire-protocol.md):
/// `heat` is base64 of one byte per cell — `0` no data, `1` stale, `2...255` the value's position
/// between `lo` and `hi` (`lo + (b - 2) / 253 × (hi - lo)`); `members` lists the id of each cell's
/// first server and is sent when `members_version` changes.
public struct FleetView: Sendable, Equatable {
    /// The metric.
    public var metricName: String
    /// Servers the view covers (after server, prefix and label filters).
    public var servers: Int
    /// Servers with a change within the stale threshold.
    public var reporting: Int
    /// Servers without a change within the stale threshold.
    public var stale: Int
    /// Reporting servers at or beyond the warning threshold (critical ones included).
    public var overWarn: Int
    /// Reporting servers at or beyond the critical threshold.
    public var overCrit: Int
    /// Distribution of the reporting servers' worst values (exact, nearest rank); `nil` when none report.
    public var mean: Double?, min: Double?, p50: Double?, p95: Double?, p99: Double?, max: Double?
    /// The heatmap scale.
    public var low: Double, high: Double
    /// Servers per heatmap cell (1 unless the fleet is larger than the cell budget).
    public var group: Int
    /// One byte per cell (see the type's documentation).
    public var heat: [UInt8]
    /// The id of each cell's first server, in natural id order.
    public var members: [String]
    /// Changes whenever ``members`` may have changed.
    public var membersVersion: Int

    /// Decodes a heat byte into the value it stands for (`nil` for no data or stale).
    public func value(ofLevel b: UInt8) -> Double? {
        guard b >= 2 else { return nil }
        return low + Double(b - 2) / 253 * (high - low)
    }

    static func compute(_ key: FleetViewKey, servers m: MetricServers, seq: UInt64) -> FleetView {
        var worst: [Double] = []       // per included server in order; NaN = stale
        var ids: [String] = []
        worst.reserveCapacity(m.order.count)
        var fresh: [Double] = []
        fresh.reserveCapacity(m.order.count)
        // The same server and label checks as the rows' (`SubscriptionFilter`).
        var filter = SubscriptionFilter()
        filter.servers = Set(key.servers)
        filter.serverPrefixes = key.prefixes
        filter.labelPairs = key.labelPairs
        for slot in m.order {
            let id = m.ids[Int(slot)]
            guard filter.matchesServer(id) else { continue }
            var w = Double.nan
            var any = false
            var j = m.heads[Int(slot)]
            while j >= 0 {
                let s = m.series[Int(j)]
                j = s.next
                guard filter.matchesLabels(s.labels) else { continue }
                any = true
                guard seq &- s.changedSeq <= key.staleTicks || s.changedSeq > seq else { continue }
                if w.isNaN || (key.lowIsWorse ? s.last < w : s.last > w) { w = s.last }
            }
            guard any else { continue }
            worst.append(w)
            if key.withCells { ids.append(id) }
            if !w.isNaN { fresh.append(w) }
        }
        var view = FleetView(metricName: key.metric, servers: worst.count, reporting: fresh.count,
                             stale: worst.count - fresh.count, overWarn: 0, overCrit: 0,
                             mean: nil, min: nil, p50: nil, p95: nil, p99: nil, max: nil,
                             low: 0, high: 0, group: 1, heat: [], members: [], membersVersion: m.version)
        func beyond(_ v: Double, _ t: Double?) -> Bool {
            guard let t else { return false }
            return key.lowIsWorse ? v <= t : v >= t
        }
        var sum = 0.0
        for v in fresh {
            sum += v
            if beyond(v, key.warn) || beyond(v, key.crit) { view.overWarn += 1 }
            if beyond(v, key.crit) { view.overCrit += 1 }
        }
        if !fresh.isEmpty {
            fresh.sort()
            func rank(_ q: Double) -> Double {
                fresh[Swift.max(0, Swift.min(fresh.count - 1, Int((q * Double(fresh.count)).rounded(.up)) - 1))]
            }
            view.mean = sum / Double(fresh.count)
            view.min = fresh.first
            view.max = fresh.last
            view.p50 = rank(0.5)
            view.p95 = rank(0.95)
            view.p99 = rank(0.99)
        }
        guard key.withCells else { return view }
        if let lo = key.scaleLow, let hi = key.scaleHigh {
            view.low = lo; view.high = hi
        } else {
            view.low = view.min ?? 0; view.high = view.max ?? 0
        }
        let group = Swift.max(1, (worst.count + key.cells - 1) / Swift.max(1, key.cells))
        view.group = group
        let cellCount = (worst.count + group - 1) / group
        view.heat = [UInt8](repeating: 0, count: cellCount)
        view.members.reserveCapacity(cellCount)
        let span = view.high - view.low
        for c in 0..<cellCount {
            let start = c * group, end = Swift.min(worst.count, start + group)
            view.members.append(ids[start])
            var w = Double.nan
            for i in start..<end where !worst[i].isNaN {
                if w.isNaN || (key.lowIsWorse ? worst[i] < w : worst[i] > w) { w = worst[i] }
            }
            if w.isNaN {
                view.heat[c] = 1
            } else if span > 0 {
                let f = Swift.min(1, Swift.max(0, (w - view.low) / span))
                view.heat[c] = 2 + UInt8((f * 253).rounded())
            } else {
                view.heat[c] = 2
            }
        }
        return view
    }

    /// The view's JSON object. `members` only when asked; `history` when given.
    func encode(includeMembers: Bool, history: FleetHistory?) -> [UInt8] {
        var w = JSONWriter(capacity: 256 + heat.count * 4 / 3 + (includeMembers ? members.count * 12 : 0))
        w.raw("{\"metric_name\":"); w.string(metricName)
        w.raw(",\"servers\":"); w.number(servers)
        w.raw(",\"reporting\":"); w.number(reporting)
        w.raw(",\"stale\":"); w.number(stale)
        w.raw(",\"over_warn\":"); w.number(overWarn)
        w.raw(",\"over_crit\":"); w.number(overCrit)
        w.raw(",\"mean\":"); w.number(mean)
        w.raw(",\"min\":"); w.number(min)
        w.raw(",\"p50\":"); w.number(p50)
        w.raw(",\"p95\":"); w.number(p95)
        w.raw(",\"p99\":"); w.number(p99)
        w.raw(",\"max\":"); w.number(max)
        w.raw(",\"lo\":"); w.number(low)
        w.raw(",\"hi\":"); w.number(high)
        w.raw(",\"group\":"); w.number(group)
        w.raw(",\"cells\":"); w.number(heat.count)
        w.raw(",\"heat\":"); w.base64(heat)
        w.raw(",\"members_version\":"); w.number(membersVersion)
        if includeMembers {
            w.raw(",\"members\":[")
            for (i, m) in members.enumerated() {
                if i > 0 { w.byte(UInt8(ascii: ",")) }
                w.string(m)
            }
            w.byte(UInt8(ascii: "]"))
        }
        if let history {
            w.raw(",\"history\":")
            history.encode(into: &w)
        }
        w.byte(UInt8(ascii: "}"))
        return w.bytes
    }
}

/// The last ``capacity`` ticks of one metric's unfiltered fleet distribution, so a dashboard that
/// connects (or reconnects) draws the recent past at once instead of starting an empty chart.
struct FleetHistory {
    let capacity: Int
    var timestamps: [Int64] = []
    var values: [[Double]] = [[], [], [], [], []]  // p50, p95, p99, max, reporting
    var head = 0

    init(capacity: Int) { self.capacity = Swift.max(1, capacity) }

    mutating func append(timestamp: Int64, _ v: FleetView) {
        let row = [v.p50 ?? .nan, v.p95 ?? .nan, v.p99 ?? .nan, v.max ?? .nan, Double(v.reporting)]
        if timestamps.count < capacity {
            timestamps.append(timestamp)
            for i in 0..<row.count { values[i].append(row[i]) }
        } else {
            timestamps[head] = timestamp
            for i in 0..<row.count { values[i][head] = row[i] }
            head = (head + 1) % capacity
        }
    }

    /// `{"ts":[…],"p50":[…],"p95":[…],"p99":[…],"max":[…],"reporting":[…]}`, oldest first.
    func encode(into w: inout JSONWriter) {
        let n = timestamps.count
        let order = (0..<n).map { (head + $0) % n }
        w.raw("{\"ts\":[")
        for (k, i) in order.enumerated() {
            if k > 0 { w.byte(UInt8(ascii: ",")) }
            w.number(timestamps[i])
        }
        for (f, name) in ["p50", "p95", "p99", "max", "reporting"].enumerated() {
            w.raw("],\""); w.raw(name); w.raw("\":[")
            for (k, i) in order.enumerated() {
                if k > 0 { w.byte(UInt8(ascii: ",")) }
                w.number(values[f][i])
            }
        }
        w.raw("]}")
    }
}
