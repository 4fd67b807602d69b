import DequeModule
import Synchronization

/// Turns each tick's changed series into per-subscriber Server-Sent Events.
///
/// - Every tick has a sequence number; every event carries `id: <epoch>-<seq>`, where the epoch
///   is random per process so a client reconnecting after a restart gets a fresh snapshot.
/// - A new subscriber gets `event: init` (a snapshot of what its ``SubscriptionFilter`` selects),
///   then `event: update` each tick (or every `every` ticks) with only the series that changed.
/// - Resuming with `Last-Event-ID` from the same epoch sends one `update` with every selected
///   series that changed after that sequence number, so the client ends up exactly current.
/// - Each series' JSON row is encoded once per change and shared by every subscriber.
/// - Each subscriber has a bounded queue (``Configuration/subscriberQueueEvents`` events,
///   ``Configuration/subscriberQueueBytes`` bytes). A subscriber that falls behind is coalesced:
///   its queue is dropped and the next event it reads is a fresh `init` snapshot. Ingestion and
///   other subscribers never wait for it.
public final class Broadcaster: Sendable {
    /// Sizes and defaults.
    public struct Configuration: Sendable {
        /// Tick interval in milliseconds (also sent to clients). Default 1000.
        public var tickMilliseconds: Int
        /// How many top series each fleet rollup lists. Default 10.
        public var fleetTopN: Int
        /// Events a subscriber may have queued before it is coalesced. Default 32.
        public var subscriberQueueEvents: Int
        /// Bytes a subscriber may have queued before it is coalesced. Default 8 MiB.
        public var subscriberQueueBytes: Int
        /// The `retry:` hint sent to clients, ms. Default 2000.
        public var retryMilliseconds: Int
        /// Most subscribers at once. Default 10,000.
        public var maxSubscribers: Int
        /// A server is stale in fleet views after this long without a change, unless the client asks
        /// otherwise (`stale=`). Default 30 s (three intervals of Telegraf's default 10 s).
        public var staleMilliseconds: Int
        /// Ticks of unfiltered fleet distribution kept per metric for new dashboards. Default 300.
        public var fleetHistoryPoints: Int
        /// Metrics whose fleet distribution history is kept (the first ones seen). Default 1,000.
        public var fleetHistoryMetrics: Int
        /// A series merged from a peer (``Broadcaster/submitRemote(_:origin:)``) that has not
        /// changed for this long is removed, as the peer's aggregator removes its idle series.
        /// 0 (the default) keeps them. Local series are removed when the aggregator says so
        /// (``Broadcaster/publish(changed:removed:seq:timestamp:)``).
        public var idleRemoteSeriesMilliseconds: Int
        /// Removals remembered for `Last-Event-ID` resumes. A client resuming from before the
        /// oldest one gets a fresh `init` snapshot instead. Default 65,536.
        public var removalLog: Int
        /// Creates a configuration.
        public init(tickMilliseconds: Int = 1000, fleetTopN: Int = 10, subscriberQueueEvents: Int = 32,
                    subscriberQueueBytes: Int = 8 << 20, retryMilliseconds: Int = 2000, maxSubscribers: Int = 10_000,
                    staleMilliseconds: Int = 30_000, fleetHistoryPoints: Int = 300, fleetHistoryMetrics: Int = 1_000,
                    idleRemoteSeriesMilliseconds: Int = 0, removalLog: Int = 65_536) {
            self.idleRemoteSeriesMilliseconds = max(0, idleRemoteSeriesMilliseconds)
            self.removalLog = max(0, removalLog)
            self.staleMilliseconds = max(1, staleMilliseconds)
            self.fleetHistoryPoints = max(1, fleetHistoryPoints)
            self.fleetHistoryMetrics = max(0, fleetHistoryMetrics)
            self.tickMilliseconds = max(10, tickMilliseconds)
            self.fleetTopN = fleetTopN
            self.subscriberQueueEvents = max(2, subscriberQueueEvents)
            self.subscriberQueueBytes = max(64 << 10, subscriberQueueBytes)
            self.retryMilliseconds = retryMilliseconds
            self.maxSubscribers = maxSubscribers
        }
    }

    /// The update events built in one tick, by what they depend on besides the tick itself (the
    /// filter, and the member-list versions the client holds), so that subscribers asking the same
    /// question share one build: the dashboard's viewers all ask the same, and building 500 copies
    /// of a 20 KB event was most of a tick's delivery. At most ``limit`` distinct questions are kept.
    final class DeliveryMemo {
        struct Entry {
            let filter: SubscriptionFilter
            let membersBefore: [String: Int]
            let event: [UInt8]
            let membersAfter: [String: Int]
        }
        static let limit = 32
        private var entries: [Entry] = []

        func find(_ filter: SubscriptionFilter, _ membersBefore: [String: Int]) -> Entry? {
            entries.first { $0.membersBefore == membersBefore && $0.filter == filter }
        }

        func add(_ filter: SubscriptionFilter, membersBefore: [String: Int], event: [UInt8], membersAfter: [String: Int]) {
            guard entries.count < Self.limit else { return }
            entries.append(Entry(filter: filter, membersBefore: membersBefore, event: event, membersAfter: membersAfter))
        }
    }

    /// The rows of one publish, encoded on first use and shared by every subscriber that selects
    /// them. Used only under the broadcaster's lock.
    final class RowCache {
        let changed: [SeriesSnapshot]
        /// `changed[..<localCount]` are this instance's series; the rest were merged from peers.
        let localCount: Int
        var rows: [[UInt8]?]
        var byKey: [SeriesKey: [UInt8]] = [:]

        init(_ changed: [SeriesSnapshot], localCount: Int) {
            self.changed = changed
            self.localCount = localCount
            rows = Array(repeating: nil, count: changed.count)
        }

        /// The row of `changed[i]`.
        func changedRow(_ i: Int) -> [UInt8] {
            if let r = rows[i] { return r }
            let r = Broadcaster.encodeRow(changed[i])
            rows[i] = r
            return r
        }

        /// The row of a stored series (encoded once per tick, however many subscribers select it).
        func row(_ key: SeriesKey, _ e: Entry) -> [UInt8] {
            if let r = byKey[key] { return r }
            let r = Broadcaster.encodeRow(e.snapshot)
            byKey[key] = r
            return r
        }
    }

    /// A series' place in its metric's ``MetricServers`` and its latest value.
    struct RankedSeries {
        var server: Int32
        var index: Int32
        var value: Double
    }

    /// Records one metric's changed series in its ``MetricServers``: values of known series in place,
    /// new series appended (their slots returned in `new`).
    static func record(_ changed: [SeriesSnapshot], _ indices: [Int], slots: [(server: Int, index: Int)?],
                       into ms: inout MetricServers, new: inout [(Int, (server: Int, index: Int))]) {
        for i in indices {
            if let slot = slots[i] {
                ms.update(changed[i], at: slot)
            } else {
                new.append((i, ms.insert(changed[i])))
            }
        }
        ms.sortIfNeeded()
    }

    /// Ranks a metric's series by latest value (highest first; ties by server id, then labels, as
    /// ``FleetRollup/compute(metricName:values:topN:)`` does) and computes its fleet rollup, with one
    /// sort of 16-byte records instead of sorting keys.
    static func rank(metric: String, _ ms: MetricServers, topN: Int) -> ([RankedSeries], FleetRollup) {
        var ranked: [RankedSeries] = []
        ranked.reserveCapacity(ms.seriesCount)
        for (j, series) in ms.series.enumerated() {
            ranked.append(RankedSeries(server: series.server, index: Int32(j), value: series.last))
        }
        ranked.sort { a, b in
            if a.value != b.value { return a.value > b.value }
            let ia = ms.ids[Int(a.server)], ib = ms.ids[Int(b.server)]
            if ia != ib { return ia < ib }
            return ms.series[Int(a.index)].labels < ms.series[Int(b.index)].labels
        }
        let n = ranked.count
        func ascending(_ i: Int) -> Double { ranked[n - 1 - i].value }
        func rank(_ q: Double) -> Double {
            guard n > 0 else { return 0 }
            return ascending(Swift.max(0, Swift.min(n - 1, Int((q * Double(n)).rounded(.up)) - 1)))
        }
        var sum = 0.0
        for i in 0..<n { sum += ascending(i) }  // ascending, as FleetRollup.compute adds them
        let top = ranked.prefix(Swift.max(0, topN)).map { r in
            (key: SeriesKey(serverID: ms.ids[Int(r.server)], metricName: metric, labels: ms.series[Int(r.index)].labels),
             value: r.value)
        }
        let f = FleetRollup(metricName: metric, series: n, servers: ms.ids.count, mean: n == 0 ? 0 : sum / Double(n),
                            p50: rank(0.5), p95: rank(0.95), p99: rank(0.99),
                            min: n == 0 ? 0 : ascending(0), max: n == 0 ? 0 : ranked[0].value, top: top)
        return (ranked, f)
    }

    typealias Entry = SeriesTable.Entry

    struct State {
        var seq: UInt64 = 0
        var lastTickTimestamp: Int64 = 0
        /// Every series' latest snapshot. Rows are not kept between ticks: a row costs ~300 bytes
        /// per series and is re-encoded in about a microsecond when a snapshot needs it.
        var entries = SeriesTable()
        var fleet: [String: FleetRollup] = [:]
        var fleetRows: [String: [UInt8]] = [:]
        /// Every series of a metric by latest value, highest first (serves `top=N` with any filter),
        /// as positions in the metric's ``MetricServers``.
        var ranked: [String: [RankedSeries]] = [:]
        /// Metrics whose ranking a tick left for after its events (see ``publish(changed:removed:seq:timestamp:)``).
        var rankPending: Set<String> = []
        /// The tick whose fleet-history point is still to be appended (``finishPublish()``).
        var historyPending: (timestamp: Int64, seq: UInt64)? = nil
        /// What ``stage(_:)`` handed over for the coming tick; the tick's `publish` takes it whole.
        var staging = Staging()
        /// Each metric's servers, for fleet views.
        var metricServers: [String: MetricServers] = [:]
        /// Unfiltered fleet distribution per metric, last ``Configuration/fleetHistoryPoints`` ticks.
        var history: [String: FleetHistory] = [:]
        var subscriptions: [ObjectIdentifier: Subscription] = [:]
        /// Series merged from peers since the last tick, latest per series (bounded by the series count).
        var remotePending: [SeriesKey: (snapshot: SeriesSnapshot, origin: Int32)] = [:]
        /// Keys removed from peers since the last tick (the peer said so in its own events), with
        /// the peer's origin number.
        var remoteRemovedPending: [(key: SeriesKey, origin: Int32)] = []
        /// Recent removals by tick, oldest first, at most ``Configuration/removalLog``.
        var removals = Deque<Removal>()
        /// The newest tick whose removals were dropped from ``removals`` (resumes from before it get `init`).
        var removalsForgottenThrough: UInt64 = 0
        var removedTotal = 0
        /// The source of every ``MetricServers/version`` (see there).
        var membersClock = 0
        /// Peer names by origin number (entry `origin` 1 is `origins[0]`); a handful per process.
        var origins: [String] = []
        /// Live entries merged from peers.
        var remoteSeries = 0
        var remoteReceived = 0
        var eventsSent = 0
        var coalesced = 0
        var refusedSubscriptions = 0

        /// A member-list version no metric has had before.
        mutating func nextMembersVersion() -> Int {
            membersClock += 1
            return membersClock
        }
    }

    /// Random per process; part of every event id.
    public let epoch: String
    /// The configuration in force.
    public let configuration: Configuration
    let state = Mutex(State())
    private let lastPublishInfo = Mutex(PublishInfo())

    /// This instance's snapshots handed over ahead of the coming tick (``stage(_:)``).
    struct Staging {
        /// Known series, already recorded in `entries` and `metricServers`; the tick's events
        /// include them. `ids[k]` is the entry of `snapshots[k]`, `at` an entry's position,
        /// `byMetric` positions by metric.
        var snapshots: [SeriesSnapshot] = []
        var ids: [Int32] = []
        var at: [Int32: Int] = [:]
        var byMetric: [String: [Int]] = [:]
        /// Handed over but left for the tick (new series, series last reported by a peer), and
        /// their positions by key (a series handed over twice keeps one place, the newer snapshot).
        var later: [SeriesSnapshot] = []
        var laterAt: [SeriesKey: Int] = [:]
        /// Snapshots handed over since the last publish (reported in ``PublishInfo``).
        var count = 0
    }

    /// What the last ``publish(changed:removed:seq:timestamp:)`` did.
    public struct PublishInfo: Sendable, Equatable {
        /// Series in the tick's changes (staged ones included, each once).
        public var changedSeries = 0
        /// Snapshots handed to ``stage(_:)`` for this tick; a series staged and then passed to
        /// `publish` again counts here and in `changedSeries` once.
        public var stagedSeries = 0
        /// Nanoseconds from the call until the subscribers' events were queued (the rankings no
        /// event needed and the fleet history wait for ``finishPublish()``).
        public var eventsReadyNanoseconds: UInt64 = 0
        /// When the call began (``ProcessInfoLite/monotonicNanoseconds()``).
        public var startedNanoseconds: UInt64 = 0
    }

    /// What the last ``publish(changed:removed:seq:timestamp:)`` did.
    public var lastPublish: PublishInfo { lastPublishInfo.withLock { $0 } }

    /// When a subscriber last took a queued event with ``Subscription/next()`` (monotonic ns).
    private let lastEventTaken = Atomic<UInt64>(0)

    func noteEventTaken() {
        lastEventTaken.store(ProcessInfoLite.monotonicNanoseconds(), ordering: .relaxed)
    }

    /// Nanoseconds from the start of the last ``publish(changed:removed:seq:timestamp:)`` until
    /// the latest ``Subscription/next()`` since then that took a queued event: once every
    /// subscriber has read its event of that tick, how long the last of them took. `nil` when no
    /// event was taken since (none due, or none read yet).
    public var lastEventTakenNanoseconds: UInt64? {
        let started = lastPublish.startedNanoseconds
        let taken = lastEventTaken.load(ordering: .relaxed)
        return started > 0 && taken >= started ? taken - started : nil
    }

    /// Creates a broadcaster.
    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
        var rng = SystemRandomNumberGenerator()
        let r: UInt64 = rng.next()
        self.epoch = String(r & 0xFFFF_FFFF, radix: 16)
    }

    /// The sequence number the next tick will have.
    public var nextSequence: UInt64 { state.withLock { $0.seq + 1 } }

    /// The last published sequence number.
    public var currentSequence: UInt64 { state.withLock { $0.seq } }

    /// Subscribers connected now.
    public var subscriberCount: Int { state.withLock { $0.subscriptions.count } }

    /// Series known to the broadcaster.
    public var seriesCount: Int { state.withLock { $0.entries.count } }

    /// Events queued since start, and subscribers coalesced since start.
    public var counters: (events: Int, coalesced: Int) { state.withLock { ($0.eventsSent, $0.coalesced) } }

    /// Subscriptions refused because ``Configuration/maxSubscribers`` were open.
    public var refusedSubscriptions: Int { state.withLock { $0.refusedSubscriptions } }

    /// The current fleet rollups, by metric.
    public var fleet: [String: FleetRollup] {
        state.withLock { s in
            finishPending(&s)
            return s.fleet
        }
    }

    // MARK: - Ticks

    /// Takes this instance's snapshots ahead of the coming tick (``Aggregator/stage(now:seq:)``):
    /// known series are recorded now (their entry and fleet layout value), so the tick's
    /// ``publish(changed:removed:seq:timestamp:)`` only records what changed since and its events
    /// leave sooner. The tick's events include them as if they had come with it; a series staged
    /// and then passed to `publish` again counts once, with the newer snapshot. Call from the same
    /// task as `publish` (the tick loop), never concurrently with it.
    public func stage(_ snapshots: [SeriesSnapshot]) {
        guard !snapshots.isEmpty else { return }
        state.withLock { s in
            finishPending(&s)  // before the layouts move on from the published tick
            s.staging.count += snapshots.count
            // Room for this call at once, growing geometrically over a tick's calls (a tick's
            // staged snapshots are ~200 bytes each; growing by appends copied them over and over).
            let needed = s.staging.snapshots.count + snapshots.count
            if s.staging.snapshots.capacity < needed {
                let room = Swift.max(needed, 2 * s.staging.snapshots.capacity)
                s.staging.snapshots.reserveCapacity(room)
                s.staging.ids.reserveCapacity(room)
            }
            s.staging.at.reserveCapacity(needed)  // (power-of-two growth)
            // The snapshots' metrics, each looked up in `metricServers` once per call (nothing is
            // inserted there here, so a dictionary index stays valid for the whole call), with the
            // positions staged for it: no hashing of the metric name per snapshot.
            var groups = MetricGroups()
            var metricIndex: [Dictionary<String, MetricServers>.Index?] = []
            for snap in snapshots {
                let m = snap.key.metricName
                let g = groups.group(of: m)
                if g == metricIndex.count { metricIndex.append(s.metricServers.index(forKey: m)) }
                let position = s.staging.snapshots.count
                guard let mi = metricIndex[g], let id = s.entries.id(of: snap.key), s.entries[id].origin == 0 else {
                    Self.stageLater(snap, &s.staging)
                    continue
                }
                if let previous = s.staging.at.updateValue(position, forKey: id) {
                    // Staged already this tick (the aggregator stages a series once a tick, so
                    // only another caller does this): it keeps its place, the newer one waits.
                    s.staging.at[id] = previous
                    Self.stageLater(snap, &s.staging)
                    continue
                }
                s.entries[id].snapshot = snap
                let slot = s.entries[id].slot
                s.metricServers.values[mi].update(snap, at: (Int(slot.server), Int(slot.index)))
                groups.positions[g].append(position)
                s.staging.snapshots.append(snap)
                s.staging.ids.append(id)
            }
            for (g, name) in groups.names.enumerated() where !groups.positions[g].isEmpty {
                s.staging.byMetric[name, default: []].append(contentsOf: groups.positions[g])
            }
        }
    }

    /// Hands a snapshot `stage` cannot record over to the tick (a new series, one last reported by
    /// a peer, one staged already); a series handed over twice keeps one place, the newer snapshot.
    private static func stageLater(_ snap: SeriesSnapshot, _ staging: inout Staging) {
        if let at = staging.laterAt[snap.key] {
            staging.later[at] = snap
        } else {
            staging.laterAt[snap.key] = staging.later.count
            staging.later.append(snap)
        }
    }

    /// Publishes one tick: removes the series that went away, stores the changed series,
    /// recomputes fleet rollups of the metrics that changed, and queues an event for every
    /// subscriber due this tick (removed series are listed in its `removed` array).
    /// - Parameters:
    ///   - changed: snapshots of the series that changed (stamped with `seq`).
    ///   - removed: keys of this instance's series that no longer exist (e.g. the aggregator's
    ///     idle series, ``Aggregator/collect(now:seq:sealAfter:)``'s `expired`).
    ///   - seq: the tick's sequence number (``nextSequence`` when the snapshots were collected).
    ///   - timestamp: wall-clock time of the tick, epoch ms.
    public func publish(changed localChanged: [SeriesSnapshot], removed localRemoved: [SeriesKey] = [], seq: UInt64, timestamp: Int64) {
        let started = ProcessInfoLite.monotonicNanoseconds()
        // Peers' series received since the last tick, and what was staged for this tick.
        let (remote, remoteRemoved, taken): ([(snapshot: SeriesSnapshot, origin: Int32)], [(key: SeriesKey, origin: Int32)], Staging)
            = state.withLock { s in
            finishPending(&s)  // the previous tick's, if nothing completed it yet
            let r = Array(s.remotePending.values)
            s.remotePending.removeAll(keepingCapacity: true)
            let gone = s.remoteRemovedPending
            s.remoteRemovedPending = []
            defer { s.staging = Staging() }
            return (r, gone, s.staging)
        }
        // This tick's changes: the staged ones (recorded already), then this instance's others,
        // then peers' series after the local ones. A series handed over unrecorded and changed
        // again since keeps its first place with the newer snapshot.
        var staged = consume taken
        let applied = staged.snapshots.count
        var changed: [SeriesSnapshot] = []
        swap(&changed, &staged.snapshots)  // no copy: the staged snapshots are most of a tick's
        changed.reserveCapacity(applied + staged.later.count + localChanged.count + remote.count)
        changed.append(contentsOf: staged.later)
        if staged.laterAt.isEmpty {
            changed.append(contentsOf: localChanged)
        } else {
            for snap in localChanged {
                if let at = staged.laterAt[snap.key] { changed[applied + at] = snap } else { changed.append(snap) }
            }
        }
        var localCount = changed.count
        var origins: [Int32] = []
        if !remote.isEmpty {
            origins.reserveCapacity(remote.count)
            for r in remote {
                var snap = r.snapshot
                snap.changedSeq = seq
                changed.append(snap)
                origins.append(r.origin)
            }
        }
        var ready: [Subscription] = []
        state.withLock { s in
            s.seq = max(s.seq, seq)
            s.lastTickTimestamp = timestamp
            // Removals first: a key removed here may come back below (e.g. from a peer) as a new series.
            // (Never a staged one: this instance's removals are series idle this tick, peers'
            // removals only take peers' entries.)
            let removed = removeSeries(local: localRemoved, remote: remoteRemoved,
                                       arriving: Set(remote.map(\.snapshot.key)), seq: seq, state: &s)
            // Staged under an earlier sequence number (a tick ran in between): restamp.
            for k in 0..<applied where changed[k].changedSeq != seq {
                changed[k].changedSeq = seq
                let id = staged.ids[k]
                s.entries[id].changedSeq = seq
                let slot = s.entries[id].slot
                s.metricServers[changed[k].key.metricName]?.series[Int(slot.index)].changedSeq = seq
            }
            // Known series: one hash lookup each, updated in place; new ones get a slot below. A
            // series staged for this tick and changed since takes the staged one's place.
            var slots = [(server: Int, index: Int)?](repeating: nil, count: changed.count)
            // Peers' series follow the local ones (`localCount` shrinks below as superseded ones go).
            func origin(_ i: Int) -> Int32 { i < localCount ? 0 : origins[i - localCount] }
            var superseded: [Int] = []
            var restaged: [Int] = []
            var shadowed: [Int] = []
            // A peer's row for a series this instance's own agents feed takes over only with a newer
            // sample (the series' value is its latest by timestamp, whichever instance received
            // it): an agent that moved to the peer takes over at once, while one agent writing the
            // same samples to both no longer put two rows per tick on the wire and flipped the
            // series' origin back and forth.
            for i in applied..<changed.count {
                guard let id = s.entries.id(of: changed[i].key) else { continue }
                if i >= localCount, s.entries[id].origin == 0, changed[i].lastTimestamp <= s.entries[id].lastTimestamp {
                    shadowed.append(i)
                    continue
                }
                let slot = s.entries[id].slot
                if i < localCount, let k = staged.at[id] {
                    changed[k] = changed[i]
                    s.entries[id].snapshot = changed[k]
                    slots[k] = (Int(slot.server), Int(slot.index))
                    superseded.append(i)
                    restaged.append(k)
                    continue
                }
                s.entries[id].snapshot = changed[i]
                let o = origin(i)
                if (s.entries[id].origin != 0) != (o != 0) { s.remoteSeries += o != 0 ? 1 : -1 }
                s.entries[id].origin = o
                slots[i] = (Int(slot.server), Int(slot.index))
            }
            /// Drops the peer row `i` (nothing below has indexed the peers' part yet).
            func dropPeerRow(_ i: Int) {
                changed.remove(at: i)
                slots.remove(at: i)
                origins.remove(at: i - localCount)
            }
            for i in shadowed.reversed() { dropPeerRow(i) }
            if !superseded.isEmpty {
                // Compact (all in the local part, ascending).
                var drop = superseded.makeIterator()
                var next = drop.next()
                var w = applied
                for r in applied..<changed.count {
                    if r == next { next = drop.next(); continue }
                    if w != r { changed.swapAt(w, r); slots.swapAt(w, r) }
                    w += 1
                }
                changed.removeLast(superseded.count)
                slots.removeLast(superseded.count)
                localCount -= superseded.count
            }
            // A series new to the table arriving in one tick from this instance and from a peer
            // (its agent moved between instances) gets one entry, this instance's: two would leave
            // a ghost row in snapshots and a frozen value in the fleet figures. Only new series
            // are hashed here, and only in a tick with peers' rows.
            if localCount < changed.count {
                var newLocal = Set<SeriesKey>()
                for i in applied..<localCount where slots[i] == nil { newLocal.insert(changed[i].key) }
                if !newLocal.isEmpty {
                    for i in (localCount..<changed.count).reversed() where slots[i] == nil && newLocal.contains(changed[i].key) {
                        dropPeerRow(i)
                    }
                }
            }
            // Index this tick's changes by metric (also lets filtered subscribers skip the rest);
            // record in the fleet layouts what was not recorded when staged.
            // (Grouped by comparing metric names, not hashing each: see `MetricGroups`.)
            var changedByMetric = staged.byMetric
            var fresh = MetricGroups()
            for i in applied..<changed.count { fresh.add(i, metric: changed[i].key.metricName) }
            for (g, name) in fresh.names.enumerated() { changedByMetric[name, default: []].append(contentsOf: fresh.positions[g]) }
            // To record: the restaged ones, then the fresh ones (each metric's in that order).
            var record = MetricGroups()
            for k in restaged { record.add(k, metric: changed[k].key.metricName) }
            for (g, name) in fresh.names.enumerated() { record.add(contentsOf: fresh.positions[g], metric: name) }
            // Rows are encoded lazily, once, for the series some subscriber selects (`RowCache`): a
            // dashboard watching the top 20 of 50,000 changed series costs 20 encodings, not 50,000.
            let cache = RowCache(changed, localCount: localCount)
            var newKeys: [(Int, (server: Int, index: Int))] = []
            // (In the order the metrics first appear this tick, not a dictionary's hash order.)
            for (m, indices) in zip(record.names, record.positions) {
                Self.record(changed, indices, slots: slots, into: &s.metricServers[m, default: MetricServers()], new: &newKeys)
                if s.metricServers[m]!.membersChanged {
                    s.metricServers[m]!.version = s.nextMembersVersion()
                    s.metricServers[m]!.membersChanged = false
                }
            }
            for (i, slot) in newKeys {
                s.entries.insert(Entry(snapshot: changed[i], slot: (Int32(slot.server), Int32(slot.index)), origin: origin(i)))
                if origin(i) != 0 { s.remoteSeries += 1 }
            }
            let touchedMetrics = Set(changedByMetric.keys).union(removed.metrics).filter { s.metricServers[$0] != nil }
            // Fleet views subscribers asked for (computed once per distinct question). The history
            // ring of every metric is appended after the events are out (`finishPublish`).
            var views: [FleetViewKey: (view: FleetView, encoded: [UInt8])] = [:]
            for sub in s.subscriptions.values where sub.filter.heatmap {
                for key in viewKeys(sub.filter, state: s) where views[key] == nil {
                    guard let servers = s.metricServers[key.metric] else { continue }
                    let v = FleetView.compute(key, servers: servers, seq: seq)
                    views[key] = (v, v.encode(includeMembers: false, history: nil))
                }
            }
            // Rankings: now for the metrics some subscriber takes top rows or fleet rows of, after
            // the events for the others (`rankPending`: a ranking holds positions in the metric's
            // layout, which may have changed, so until then it is absent rather than stale).
            var rankAll = false
            var wanted = Set<String>()
            for sub in s.subscriptions.values where (sub.filter.series && sub.filter.top != nil) || sub.filter.fleet {
                if sub.filter.metrics.isEmpty { rankAll = true; break }
                wanted.formUnion(sub.filter.metrics)
            }
            for m in touchedMetrics {
                if rankAll || wanted.contains(m) {
                    rank(m, state: &s)
                } else {
                    s.ranked[m] = nil
                    s.rankPending.insert(m)
                }
            }
            let memo = DeliveryMemo()
            for sub in s.subscriptions.values {
                if sub.deliverTick(seq: seq, timestamp: timestamp, changed: changed, removed: removed.list, cache: cache,
                                   changedByMetric: changedByMetric, views: views, memo: memo, state: s, broadcaster: self) {
                    ready.append(sub)
                }
            }
            s.eventsSent += ready.count
            s.historyPending = (timestamp, seq)
        }
        for sub in ready { sub.notify() }
        lastPublishInfo.withLock {
            $0 = PublishInfo(changedSeries: changed.count, stagedSeries: staged.count,
                             eventsReadyNanoseconds: ProcessInfoLite.monotonicNanoseconds() &- started,
                             startedNanoseconds: started)
        }
    }

    /// Completes what the last ``publish(changed:removed:seq:timestamp:)`` left for after its
    /// events: the rankings and fleet rollups no subscriber's event needed, and every metric's
    /// fleet-history point of that tick. Until then they are absent (a ranking) or one tick
    /// behind (the history), never wrong: every reader of them (a new subscriber, a snapshot,
    /// ``fleet``, ``stage(_:)`` and the next `publish`) completes them first. The engine calls
    /// this between ticks, so that the work does not compete with the delivery of the tick's
    /// events for the cores.
    public func finishPublish() {
        state.withLock { finishPending(&$0) }
    }

    private func finishPending(_ s: inout State) {
        finishRankings(&s)
        guard let (timestamp, seq) = s.historyPending else { return }
        s.historyPending = nil
        let defaultStale = staleTicks(nil)
        for (m, servers) in s.metricServers {
            if s.history[m] == nil {
                guard s.history.count < configuration.fleetHistoryMetrics else { continue }
                s.history[m] = FleetHistory(capacity: configuration.fleetHistoryPoints)
            }
            let key = FleetViewKey(metric: m, filter: SubscriptionFilter(), staleTicks: defaultStale, withCells: false)
            s.history[m]!.append(timestamp: timestamp, FleetView.compute(key, servers: servers, seq: seq))
        }
    }

    /// Ranks `metric`'s series and its fleet rollup and row.
    private func rank(_ m: String, state s: inout State) {
        guard let servers = s.metricServers[m] else { return }
        let (ranked, f) = Self.rank(metric: m, servers, topN: configuration.fleetTopN)
        s.fleet[m] = f
        s.ranked[m] = ranked
        s.fleetRows[m] = Self.encodeFleet(f, limit: configuration.fleetTopN)
    }

    /// Ranks the metrics a tick left for after its events (before anything reads rankings: a
    /// subscriber arriving in between gets complete ones).
    private func finishRankings(_ s: inout State) {
        guard !s.rankPending.isEmpty else { return }
        for m in s.rankPending { rank(m, state: &s) }
        s.rankPending.removeAll()
    }

    /// One removed series, encoded once for every subscriber that is told about it.
    struct Removal {
        var seq: UInt64
        var key: SeriesKey
        /// Merged from a peer (`origin=local` subscribers are not told).
        var remote: Bool
        /// Its object in a `removed` array.
        var json: [UInt8]
    }

    /// Removes this tick's departed series: the given local keys (only entries of this instance's
    /// own agents) and peers' keys (only entries merged from that peer), plus peers' series idle
    /// for ``Configuration/idleRemoteSeriesMilliseconds`` (checked every 16 ticks, skipping those
    /// arriving in this tick). Rebuilds the fleet layout of every metric that lost a series, logs
    /// the removals for resumes, and returns them and the metrics they touched.
    func removeSeries(local: [SeriesKey], remote: [(key: SeriesKey, origin: Int32)], arriving: Set<SeriesKey>,
                      seq: UInt64, state s: inout State) -> (list: [Removal], metrics: Set<String>) {
        var candidates: [(key: SeriesKey, origin: Int32?)] = local.map { ($0, 0) } + remote.map { ($0.key, $0.origin) }
        let idleMs = configuration.idleRemoteSeriesMilliseconds
        if idleMs > 0 && s.remoteSeries > 0 && seq % 16 == 0 {
            let idleTicks = UInt64(max(1, idleMs / configuration.tickMilliseconds))
            for e in s.entries.entries where e.live && e.origin != 0 && seq > e.changedSeq &+ idleTicks
                && !arriving.contains(e.key) {
                candidates.append((e.key, nil))  // nil: whichever peer it came from
            }
        }
        guard !candidates.isEmpty else { return ([], []) }
        var out: [Removal] = []
        var seen = Set<SeriesKey>()
        var keys: [SeriesKey] = []
        for c in candidates where !seen.contains(c.key) {
            // A series that moved between instances must not be dropped by its old owner's removal.
            guard let e = s.entries[c.key], c.origin == nil || e.origin == c.origin else { continue }
            seen.insert(c.key)
            keys.append(c.key)
            out.append(Removal(seq: seq, key: c.key, remote: e.origin != 0, json: Self.encodeRemovedKey(c.key)))
            if e.origin != 0 { s.remoteSeries -= 1 }
        }
        var metrics = Set<String>()
        for e in s.entries.remove(keys) { metrics.insert(e.key.metricName) }
        for m in metrics { rebuildFleetLayout(metric: m, state: &s) }
        s.removedTotal += out.count
        s.removals.append(contentsOf: out)
        while s.removals.count > configuration.removalLog, let first = s.removals.popFirst() {
            s.removalsForgottenThrough = max(s.removalsForgottenThrough, first.seq)
        }
        return (out, metrics)
    }

    /// Lays a metric's remaining series out anew after removals (new server slots, a new member
    /// version), or forgets the metric when none remain.
    func rebuildFleetLayout(metric m: String, state s: inout State) {
        let ids = s.entries.ids(metric: m)
        guard !ids.isEmpty else {
            s.metricServers[m] = nil
            s.ranked[m] = nil
            s.fleet[m] = nil
            s.fleetRows[m] = nil
            s.history[m] = nil
            return
        }
        var ms = MetricServers()
        for id in ids {
            let slot = ms.insert(s.entries[id].snapshot)
            s.entries[id].slot = (Int32(slot.0), Int32(slot.1))
        }
        ms.membersChanged = false
        // A new member version only when the set of servers changed (not when a server lost one
        // of several label sets): every heatmap viewer is sent the whole member list again.
        if let old = s.metricServers[m], Set(old.ids) == Set(ms.ids) {
            ms.version = old.version
        } else {
            ms.version = s.nextMembersVersion()
        }
        ms.sortIfNeeded()
        s.metricServers[m] = ms
    }

    // MARK: - Peers

    /// The number of a peer name (1, 2, …; 0 is this instance).
    private static func originNumber(_ name: String, _ s: inout State) -> Int32 {
        if let i = s.origins.firstIndex(of: name) { return Int32(i + 1) }
        s.origins.append(name)
        return Int32(s.origins.count)
    }

    /// Merges series from a peer instance (its own agents' series, as its SSE rows carry them).
    /// They join the next tick like local changes: rows, top-N, fleet rollups and views include
    /// them, and they go stale like any series when the peer stops sending. Subscribers asking
    /// `origin=local` (other peers) never receive them.
    public func submitRemote(_ snapshots: [SeriesSnapshot], origin: String) {
        state.withLock { s in
            let o = Self.originNumber(origin, &s)
            for snap in snapshots { s.remotePending[snap.key] = (snap, o) }
            s.remoteReceived += snapshots.count
        }
    }

    /// A peer's complete list of its series (its `init`, not cut by `limit`): merged as
    /// ``submitRemote(_:origin:)`` does, and the series held from that peer that the list lacks
    /// (gone while the stream was down, or the peer restarted without them) are removed at the
    /// next tick, unless this instance or another peer holds them by then.
    public func replaceRemote(_ snapshots: [SeriesSnapshot], origin: String) {
        state.withLock { s in
            let o = Self.originNumber(origin, &s)
            let present = Set(snapshots.lazy.map(\.key))
            for e in s.entries.entries where e.live && e.origin == o && !present.contains(e.key) {
                s.remoteRemovedPending.append((e.key, o))
            }
            for (key, pending) in s.remotePending where pending.origin == o && !present.contains(key) {
                s.remotePending[key] = nil
            }
            for snap in snapshots { s.remotePending[snap.key] = (snap, o) }
            s.remoteReceived += snapshots.count
        }
    }

    /// Removes series a peer reported gone (its `removed` events); they leave at the next tick,
    /// unless another peer (or this instance) holds them by then.
    public func submitRemoteRemoval(_ keys: [SeriesKey], origin: String) {
        guard !keys.isEmpty else { return }
        state.withLock { s in
            let o = Self.originNumber(origin, &s)
            for key in keys {
                if s.remotePending[key]?.origin == o { s.remotePending[key] = nil }
                s.remoteRemovedPending.append((key, o))
            }
        }
    }

    /// Series merged from peers since start, and the number currently known from peers.
    public var remoteCounters: (received: Int, series: Int) {
        state.withLock { s in (s.remoteReceived, s.remoteSeries) }
    }

    /// Series removed since start: this instance's idle series the aggregator expired, and peers'
    /// series (gone from the peer, or idle here).
    public var removedSeries: Int { state.withLock { $0.removedTotal } }

    // MARK: - Subscribers

    /// Why a subscription was refused.
    public enum SubscribeError: Error, Sendable {
        /// ``Configuration/maxSubscribers`` reached.
        case tooManySubscribers
    }

    /// Registers a subscriber and queues its first event (`init`, or a resume `update`).
    /// - Parameters:
    ///   - filter: what it wants.
    ///   - lastEventID: the `Last-Event-ID` it sent, if any.
    ///   - onReady: called (from any thread) when events are waiting in ``Subscription/next()``.
    ///     Not called for the first event: read it right away.
    /// - Returns: the subscription; call ``Subscription/cancel()`` when the client goes away.
    public func subscribe(filter: SubscriptionFilter, lastEventID: String?,
                          onReady: @escaping @Sendable () -> Void) throws -> Subscription {
        let sub = Subscription(filter: filter, broadcaster: self, onReady: onReady)
        try state.withLock { s in
            guard s.subscriptions.count < configuration.maxSubscribers else {
                s.refusedSubscriptions += 1
                throw SubscribeError.tooManySubscribers
            }
            s.subscriptions[ObjectIdentifier(sub)] = sub
            finishPending(&s)
            var resumeFrom: UInt64? = nil
            if let id = lastEventID, let dash = id.lastIndex(of: "-"), id[..<dash] == epoch,
               let n = UInt64(id[id.index(after: dash)...]), n <= s.seq, n >= s.removalsForgottenThrough {
                // (Resuming from before the oldest remembered removal gets a fresh `init` instead:
                // the client may hold series this instance no longer has.)
                resumeFrom = n
            }
            let event: [UInt8]
            let members: [String: Int]
            if let from = resumeFrom {
                let removed = Array(s.removals.filter { $0.seq > from })
                (event, members) = buildEvent(type: "update", seq: s.seq, timestamp: s.lastTickTimestamp, filter: filter,
                                              state: s, retry: true, removed: removed) { $0.changedSeq > from }
            } else {
                (event, members) = buildEvent(type: "init", seq: s.seq, timestamp: s.lastTickTimestamp, filter: filter,
                                              state: s, retry: true) { _ in true }
            }
            sub.enqueueInitial(event, seq: s.seq, members: members)
        }
        return sub
    }

    func remove(_ sub: Subscription) {
        _ = state.withLock { $0.subscriptions.removeValue(forKey: ObjectIdentifier(sub)) }
    }

    func snapshotEvent(for filter: SubscriptionFilter) -> (event: [UInt8], members: [String: Int]) {
        state.withLock { s in
            s.coalesced += 1
            finishPending(&s)
            return buildEvent(type: "init", seq: s.seq, timestamp: s.lastTickTimestamp, filter: filter, state: s, retry: false) { _ in true }
        }
    }

    /// The stale threshold in ticks for a client's `stale=` (or the default).
    func staleTicks(_ milliseconds: Int?) -> UInt64 {
        let ms = milliseconds ?? configuration.staleMilliseconds
        return UInt64(max(1, (ms + configuration.tickMilliseconds - 1) / configuration.tickMilliseconds))
    }

    /// The fleet views a filter asks for: one per selected metric (every metric when none is
    /// selected, at most 16).
    func viewKeys(_ filter: SubscriptionFilter, state s: State) -> [FleetViewKey] {
        guard filter.heatmap else { return [] }
        let metrics = filter.metrics.isEmpty ? Array(s.metricServers.keys.sorted().prefix(16)) : filter.metrics.sorted()
        let stale = staleTicks(filter.staleMilliseconds)
        return metrics.map { FleetViewKey(metric: $0, filter: filter, staleTicks: stale, withCells: true) }
    }

    /// Fleet views for a snapshot: members always, and the history ring when the view is unfiltered.
    func snapshotViews(_ filter: SubscriptionFilter, state s: State) -> (views: [[UInt8]], members: [String: Int]) {
        var out: [[UInt8]] = []
        var members: [String: Int] = [:]
        for key in viewKeys(filter, state: s) {
            guard let servers = s.metricServers[key.metric] else { continue }
            let v = FleetView.compute(key, servers: servers, seq: s.seq)
            let history = key.isUnfiltered && key.staleTicks == staleTicks(nil) ? s.history[key.metric] : nil
            out.append(v.encode(includeMembers: true, history: history))
            members[key.metric] = v.membersVersion
        }
        return (out, members)
    }

    /// Builds a full event from the stored entries that pass `filter` and `include`, and returns
    /// the member-list versions of the fleet views it carries.
    func buildEvent(type: String, seq: UInt64, timestamp: Int64, filter: SubscriptionFilter, state s: State,
                    retry: Bool, removed: [Removal] = [], include given: (Entry) -> Bool) -> ([UInt8], [String: Int]) {
        let localOnly = filter.localOnly
        func include(_ e: Entry) -> Bool { (!localOnly || e.origin == 0) && given(e) }
        var rows: [[UInt8]] = []
        var truncated = false
        var selectedKeys = Set<SeriesKey>()
        if filter.series {
            if let top = filter.top {
                // Whole, also in a resume (as every tick sends them): a client replaces its top
                // list with each event's, and only the changed ones made it shrink for a tick.
                for key in topKeys(filter: filter, top: top, state: s) {
                    guard let e = s.entries[key], !localOnly || e.origin == 0 else { continue }
                    if rows.count >= filter.limit { truncated = true; break }  // top is per metric; limit caps the event
                    rows.append(Self.encodeRow(e.snapshot))
                    if !filter.focus.isEmpty { selectedKeys.insert(key) }
                }
            } else {
                var candidates: [SeriesKey] = []
                if !filter.metrics.isEmpty {
                    for m in filter.metrics { candidates.append(contentsOf: s.entries.keys(metric: m)) }
                } else if !filter.servers.isEmpty {
                    for srv in filter.servers { candidates.append(contentsOf: s.entries.keys(server: srv)) }
                } else {
                    candidates = s.entries.allKeys
                }
                candidates.sort()
                for key in candidates where filter.matches(key) {
                    guard let e = s.entries[key], include(e) else { continue }
                    if rows.count >= filter.limit { truncated = true; break }
                    rows.append(Self.encodeRow(e.snapshot))
                    if !filter.focus.isEmpty { selectedKeys.insert(key) }
                }
            }
            for srv in filter.focus {
                for key in s.entries.keys(server: srv).sorted() where !selectedKeys.contains(key) {
                    if let e = s.entries[key], include(e) { rows.append(Self.encodeRow(e.snapshot)) }
                }
            }
        }
        let (views, members) = snapshotViews(filter, state: s)
        let event = Self.frame(type: type, seq: seq, timestamp: timestamp, epoch: epoch, rows: rows,
                               fleet: fleetRows(filter: filter, state: s), views: views,
                               removed: Self.encodeRemoved(removed, filter: filter), truncated: truncated,
                               tickMilliseconds: configuration.tickMilliseconds,
                               retry: retry ? configuration.retryMilliseconds : nil)
        return (event, members)
    }

    /// The metrics known now, with how many series and servers report each.
    public var catalog: [(metricName: String, series: Int, servers: Int)] {
        state.withLock { s in
            s.metricServers.map { ($0.key, $0.value.seriesCount, $0.value.ids.count) }.sorted { $0.metricName < $1.metricName }
        }
    }

    /// The `top` highest series of each selected metric among those the filter admits.
    func topKeys(filter: SubscriptionFilter, top: Int, state s: State) -> [SeriesKey] {
        var out: [SeriesKey] = []
        let metrics = filter.metrics.isEmpty ? Array(s.ranked.keys).sorted() : filter.metrics.sorted()
        for m in metrics {
            guard let ranked = s.ranked[m], let ms = s.metricServers[m] else { continue }
            var n = 0
            func consider(_ r: RankedSeries) -> Bool {
                if n >= top { return false }
                let id = ms.ids[Int(r.server)]
                guard filter.matchesServer(id) else { return true }
                let key = SeriesKey(serverID: id, metricName: m, labels: ms.series[Int(r.index)].labels)
                if filter.matches(key) { out.append(key); n += 1 }
                return true
            }
            if filter.lowIsWorse {
                for t in ranked.reversed() { if !consider(t) { break } }
            } else {
                for t in ranked { if !consider(t) { break } }
            }
        }
        return out
    }

    func fleetRows(filter: SubscriptionFilter, state s: State) -> [[UInt8]] {
        guard filter.fleet else { return [] }
        if filter.metrics.isEmpty { return s.fleetRows.sorted { $0.key < $1.key }.map(\.value) }
        return filter.metrics.sorted().compactMap { s.fleetRows[$0] }
    }

    // MARK: - Encoding

    /// The JSON row of one series (shared by every subscriber).
    public static func encodeRow(_ s: SeriesSnapshot) -> [UInt8] {
        var w = JSONWriter(capacity: 320)
        w.raw("{\"server_id\":"); w.string(s.key.serverID)
        w.raw(",\"metric_name\":"); w.string(s.key.metricName)
        if !s.key.labels.isEmpty { w.raw(",\"labels\":"); w.string(s.key.labels) }
        w.raw(",\"last\":"); w.number(s.last)
        w.raw(",\"lastUpdate\":"); w.number(s.lastTimestamp)
        w.raw(",\"count\":"); w.number(s.total.count)
        w.raw(",\"avg\":"); w.number(s.window1m.mean)
        w.raw(",\"min\":"); w.number(s.window1m.count > 0 ? s.window1m.min : nil)
        w.raw(",\"max\":"); w.number(s.window1m.count > 0 ? s.window1m.max : nil)
        w.raw(",\"count1m\":"); w.number(s.window1m.count)
        w.raw(",\"count5m\":"); w.number(s.window5m.count)
        w.raw(",\"avg5m\":"); w.number(s.window5m.mean)
        w.raw(",\"min5m\":"); w.number(s.window5m.count > 0 ? s.window5m.min : nil)
        w.raw(",\"max5m\":"); w.number(s.window5m.count > 0 ? s.window5m.max : nil)
        w.raw(",\"p50\":"); w.number(s.p50)
        w.raw(",\"p95\":"); w.number(s.p95)
        w.raw(",\"p99\":"); w.number(s.p99)
        w.raw(",\"seq\":"); w.number(s.changedSeq)
        w.byte(UInt8(ascii: "}"))
        return w.bytes
    }

    /// The `removed` array's objects for `filter`: the removals among `removed` whose rows the
    /// filter selects (local ones only for `origin=local`). A `top=N` filter gets only its focus
    /// servers' removals: its top rows are sent whole every tick, so a departed series simply
    /// leaves them. Empty when the filter asks for no series.
    static func encodeRemoved(_ removed: [Removal], filter: SubscriptionFilter) -> [[UInt8]] {
        guard filter.series, !removed.isEmpty else { return [] }
        var out: [[UInt8]] = []
        for r in removed where !(filter.localOnly && r.remote) {
            let focused = filter.focus.contains(r.key.serverID)
            if focused || (filter.top == nil && filter.matches(r.key)) { out.append(r.json) }
        }
        return out
    }

    /// `{"server_id","metric_name","labels"?}` of a removed series.
    static func encodeRemovedKey(_ key: SeriesKey) -> [UInt8] {
        var w = JSONWriter(capacity: 96)
        w.raw("{\"server_id\":"); w.string(key.serverID)
        w.raw(",\"metric_name\":"); w.string(key.metricName)
        if !key.labels.isEmpty { w.raw(",\"labels\":"); w.string(key.labels) }
        w.byte(UInt8(ascii: "}"))
        return w.bytes
    }

    /// The JSON object of one fleet rollup.
    public static func encodeFleet(_ f: FleetRollup, limit: Int) -> [UInt8] {
        var w = JSONWriter(capacity: 512)
        w.raw("{\"metric_name\":"); w.string(f.metricName)
        w.raw(",\"series\":"); w.number(f.series)
        w.raw(",\"servers\":"); w.number(f.servers)
        w.raw(",\"mean\":"); w.number(f.mean)
        w.raw(",\"min\":"); w.number(f.min)
        w.raw(",\"p50\":"); w.number(f.p50)
        w.raw(",\"p95\":"); w.number(f.p95)
        w.raw(",\"p99\":"); w.number(f.p99)
        w.raw(",\"max\":"); w.number(f.max)
        w.raw(",\"top\":[")
        for (i, t) in f.top.prefix(limit).enumerated() {
            if i > 0 { w.byte(UInt8(ascii: ",")) }
            w.raw("{\"server_id\":"); w.string(t.key.serverID)
            if !t.key.labels.isEmpty { w.raw(",\"labels\":"); w.string(t.key.labels) }
            w.raw(",\"value\":"); w.number(t.value)
            w.byte(UInt8(ascii: "}"))
        }
        w.raw("]}")
        return w.bytes
    }

    /// Frames one SSE event: `id`, `event`, optional `retry`, and a single `data:` line.
    static func frame(type: String, seq: UInt64, timestamp: Int64, epoch: String, rows: [[UInt8]],
                      fleet: [[UInt8]], views: [[UInt8]] = [], removed: [[UInt8]] = [], truncated: Bool, tickMilliseconds: Int,
                      retry: Int?) -> [UInt8] {
        var w = JSONWriter(capacity: 128 + rows.reduce(0) { $0 + $1.count + 1 } + fleet.reduce(0) { $0 + $1.count + 1 }
                           + views.reduce(0) { $0 + $1.count + 1 } + removed.reduce(0) { $0 + $1.count + 1 })
        if let retry { w.raw("retry: \(retry)\n") }
        w.raw("id: \(epoch)-\(seq)\nevent: \(type)\ndata: {\"type\":\"\(type)\",\"seq\":\(seq),\"timestamp\":\(timestamp),\"tick_ms\":\(tickMilliseconds),\"data\":[")
        /// The items comma-separated (each is already a JSON value).
        func list(_ items: [[UInt8]]) {
            for (i, r) in items.enumerated() {
                if i > 0 { w.byte(UInt8(ascii: ",")) }
                w.raw(r)
            }
        }
        list(rows)
        w.raw("],\"fleet\":[")
        list(fleet)
        w.raw("]")
        if !views.isEmpty {
            w.raw(",\"views\":[")
            list(views)
            w.raw("]")
        }
        if !removed.isEmpty {
            w.raw(",\"removed\":[")
            list(removed)
            w.raw("]")
        }
        if truncated { w.raw(",\"truncated\":true") }
        w.raw("}\n\n")
        return w.bytes
    }
}
