import DequeModule
import Synchronization

/// One dashboard client's place in the ``Broadcaster``: its filter and its bounded event queue.
///
/// The transport reads events with ``next()`` whenever its connection can take more bytes, and is
/// told by the `onReady` callback given to ``Broadcaster/subscribe(filter:lastEventID:onReady:)``
/// when new events are waiting. Events are complete SSE frames (UTF-8 bytes).
public final class Subscription: Sendable {
    /// What this subscriber asked for.
    public let filter: SubscriptionFilter
    private let onReady: @Sendable () -> Void
    private let broadcaster: Broadcaster

    struct State {
        var queue = Deque<[UInt8]>()
        var queuedBytes = 0
        var needsSnapshot = false
        var cancelled = false
        var ticks = 0
        var pending: Set<SeriesKey> = []
        /// Series removed since the last event (sent with the next due one).
        var removedPending: [Broadcaster.Removal] = []
        var coalescedCount = 0
        /// Member-list version of each fleet view this client has (sent again only when it changes).
        var membersSent: [String: Int] = [:]
        /// The sequence number of the last event queued (focus rows changed after it are due).
        var lastSeq: UInt64 = 0
    }

    private let state = Mutex(State())

    init(filter: SubscriptionFilter, broadcaster: Broadcaster, onReady: @escaping @Sendable () -> Void) {
        self.filter = filter
        self.broadcaster = broadcaster
        self.onReady = onReady
    }

    /// The next queued event, or `nil` when none is waiting. When this subscriber was coalesced,
    /// the next event is a fresh `init` snapshot.
    public func next() -> [UInt8]? {
        let snapshot: Bool = state.withLock { s in
            if s.cancelled { return false }
            if s.needsSnapshot {
                s.needsSnapshot = false
                // The snapshot covers everything pending: removals before it must not follow it.
                s.removedPending.removeAll()
                s.pending.removeAll()
                return true
            }
            return false
        }
        if snapshot {
            let (event, members) = broadcaster.snapshotEvent(for: filter)
            state.withLock { $0.membersSent = members }
            return event
        }
        let event: [UInt8]? = state.withLock { s in
            guard let e = s.queue.popFirst() else { return nil }
            s.queuedBytes -= e.count
            return e
        }
        if event != nil { broadcaster.noteEventTaken() }
        return event
    }

    /// Times this subscriber fell behind and was coalesced into a snapshot.
    public var coalescedCount: Int { state.withLock { $0.coalescedCount } }

    /// Events and bytes waiting.
    public var backlog: (events: Int, bytes: Int) { state.withLock { ($0.queue.count, $0.queuedBytes) } }

    /// Leaves the broadcaster; no further callbacks after this returns (one already running may finish).
    public func cancel() {
        state.withLock { s in
            s.cancelled = true
            s.queue.removeAll()
            s.queuedBytes = 0
        }
        broadcaster.remove(self)
    }

    func notify() { onReady() }

    func enqueueInitial(_ event: [UInt8], seq: UInt64, members: [String: Int]) {
        state.withLock { s in
            s.queue.append(event)
            s.queuedBytes += event.count
            s.membersSent = members
            s.lastSeq = seq
        }
    }

    /// Called with the broadcaster's lock held. Returns whether an event was queued.
    func deliverTick(seq: UInt64, timestamp: Int64, changed: [SeriesSnapshot], removed: [Broadcaster.Removal],
                     cache: Broadcaster.RowCache,
                     changedByMetric: [String: [Int]], views: [FleetViewKey: (view: FleetView, encoded: [UInt8])],
                     memo: Broadcaster.DeliveryMemo, state b: Broadcaster.State, broadcaster: Broadcaster) -> Bool {
        state.withLock { s in
            if s.cancelled { return false }
            s.ticks += 1
            let due = s.ticks % filter.every == 0
            if !removed.isEmpty {
                for r in removed { s.pending.remove(r.key) }
                s.removedPending.append(contentsOf: removed)
            }
            func enqueue(_ event: [UInt8]) {
                let cfg = broadcaster.configuration
                // Only a subscriber with a backlog is behind: one that took everything so far gets
                // the event even when it alone is over the byte bound (replacing it with a
                // snapshot, every tick, would cost a reader that keeps up more bytes, not fewer).
                if !s.queue.isEmpty
                    && (s.queue.count + 1 > cfg.subscriberQueueEvents || s.queuedBytes + event.count > cfg.subscriberQueueBytes) {
                    // Fall-behind: drop the backlog; the next read is a fresh snapshot.
                    s.queue.removeAll()
                    s.queuedBytes = 0
                    s.needsSnapshot = true
                    s.coalescedCount += 1
                    return
                }
                s.queue.append(event)
                s.queuedBytes += event.count
            }
            // An event that depends only on the filter, this tick and the member lists this client
            // holds: subscribers asking the same question share one build (and one byte array).
            let memoizable = filter.every == 1 && filter.focus.isEmpty && !s.needsSnapshot
                && s.removedPending.count == removed.count && s.pending.isEmpty
            let membersBefore = s.membersSent
            if memoizable, let hit = memo.find(filter, membersBefore) {
                s.lastSeq = seq
                s.membersSent = hit.membersAfter
                s.removedPending.removeAll()
                enqueue(hit.event)
                return true
            }
            var selected: [[UInt8]] = []
            var truncated = false
            var topSelection: [SeriesKey] = []
            if filter.series {
                if let top = filter.top {
                    if due {
                        // Only the top rows sent count as selected: a drill-down (`focus`) still
                        // sends those `limit` cut, as the snapshot does.
                        for key in broadcaster.topKeys(filter: filter, top: top, state: b) {
                            guard let e = b.entries[key], !filter.localOnly || e.origin == 0 else { continue }
                            if selected.count >= filter.limit { truncated = true; break }
                            selected.append(cache.row(key, e))
                            topSelection.append(key)
                        }
                    }
                } else if filter.every == 1 {
                    // Rows an earlier update cut at `limit` (in `pending`) follow this tick's changes
                    // as room allows, with their current values: a cut row comes late, never not at all.
                    let carried = s.pending
                    s.pending.removeAll()
                    var takenNow: Set<SeriesKey> = []
                    func take(_ i: Int) {
                        guard filter.matches(changed[i].key), !filter.localOnly || i < cache.localCount else { return }
                        if selected.count >= filter.limit { truncated = true; s.pending.insert(changed[i].key); return }
                        selected.append(cache.changedRow(i))
                        if !carried.isEmpty { takenNow.insert(changed[i].key) }
                    }
                    if !filter.metrics.isEmpty {
                        for m in filter.metrics { for i in changedByMetric[m] ?? [] { take(i) } }
                    } else {
                        for i in changed.indices { take(i) }
                    }
                    for key in carried.sorted() where !takenNow.contains(key) {
                        guard let e = b.entries[key], !filter.localOnly || e.origin == 0 else { continue }
                        if selected.count >= filter.limit { truncated = true; s.pending.insert(key); continue }
                        selected.append(cache.row(key, e))
                    }
                } else {
                    if !filter.metrics.isEmpty {
                        for m in filter.metrics {
                            for i in changedByMetric[m] ?? [] where filter.matches(changed[i].key) { s.pending.insert(changed[i].key) }
                        }
                    } else {
                        for c in changed where filter.matches(c.key) { s.pending.insert(c.key) }
                    }
                    if due {
                        var cut: Set<SeriesKey> = []  // past `limit`: kept for the next event
                        for key in s.pending.sorted() {
                            if selected.count >= filter.limit { truncated = true; cut.insert(key); continue }
                            if let e = b.entries[key], !filter.localOnly || e.origin == 0 { selected.append(cache.row(key, e)) }
                        }
                        s.pending = cut
                    }
                }
            }
            guard due else { return false }
            if s.needsSnapshot {
                s.removedPending.removeAll()
                return true  // the snapshot it will read covers this tick
            }
            if filter.series && !filter.focus.isEmpty {
                // Drill-down servers: every series changed since the last event, unless already selected.
                let selectedKeys = Set(topSelection)
                for srv in filter.focus {
                    for key in b.entries.keys(server: srv).sorted() {
                        guard let e = b.entries[key], e.changedSeq > s.lastSeq, !filter.localOnly || e.origin == 0 else { continue }
                        if selectedKeys.contains(key) || (filter.top == nil && filter.matches(key)) { continue }
                        selected.append(cache.row(key, e))
                    }
                }
            }
            var viewBytes: [[UInt8]] = []
            if filter.heatmap {
                for key in broadcaster.viewKeys(filter, state: b) {
                    guard let (v, encoded) = views[key] else { continue }
                    if s.membersSent[key.metric] != v.membersVersion {
                        viewBytes.append(v.encode(includeMembers: true, history: nil))
                        s.membersSent[key.metric] = v.membersVersion
                    } else {
                        viewBytes.append(encoded)
                    }
                }
            }
            s.lastSeq = seq
            let event = Broadcaster.frame(type: "update", seq: seq, timestamp: timestamp, epoch: broadcaster.epoch,
                                          rows: selected, fleet: broadcaster.fleetRows(filter: filter, state: b),
                                          views: viewBytes, removed: Broadcaster.encodeRemoved(s.removedPending, filter: filter),
                                          truncated: truncated,
                                          tickMilliseconds: broadcaster.configuration.tickMilliseconds, retry: nil)
            s.removedPending.removeAll()
            // (Not a truncated event: a subscriber reusing it would not know which rows to carry.)
            if memoizable && !truncated { memo.add(filter, membersBefore: membersBefore, event: event, membersAfter: s.membersSent) }
            enqueue(event)
            return true
        }
    }
}
