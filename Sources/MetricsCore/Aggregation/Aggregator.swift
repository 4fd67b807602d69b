import DequeModule
import Synchronization

/// The sharded live aggregator.
///
/// Series are spread over ``shards`` by a hash of their server id, so all series of one server
/// live in one shard and the shards fold in parallel. Feed it whole batches with ``ingest(_:)``:
/// the batch is split once and each shard is entered once per batch.
///
/// ```swift
/// let aggregator = Aggregator()
/// await aggregator.ingest([MetricSample(serverID: "web-01", metricName: "cpu", value: 42, timestamp: now)])
/// let all = await aggregator.snapshotAll(now: now)
/// ```
public final class Aggregator: Sendable {
    /// Sizing and accuracy.
    public struct Configuration: Sendable {
        /// Number of shards; default: twice the number of active processors (at least 2).
        public var shardCount: Int
        /// Relative accuracy of the quantile sketches; default 0.01.
        public var relativeAccuracy: Double
        /// Most live series in total; new series beyond it are refused (``ingest(_:)`` returns
        /// their positions) and counted, existing ones are unaffected. Default 1,000,000. One
        /// cap for all shards.
        public var maxSeries: Int
        /// A series that receives no sample for this long (wall clock, ms, measured at
        /// ``Aggregator/collect(now:seq:sealAfter:)``) is removed: its open minute is sealed into
        /// that call's rollups, its room under ``maxSeries`` is given back, and its key is
        /// reported in `expired`. 0 (the default) keeps every series until the process ends.
        public var idleSeriesTimeout: Int64
        /// Creates a configuration.
        public init(shardCount: Int? = nil, relativeAccuracy: Double = 0.01, maxSeries: Int = 1_000_000,
                    idleSeriesTimeout: Int64 = 0) {
            self.shardCount = max(1, shardCount ?? max(2, 2 * ProcessInfoLite.activeProcessorCount))
            self.relativeAccuracy = relativeAccuracy
            self.maxSeries = maxSeries
            self.idleSeriesTimeout = max(0, idleSeriesTimeout)
        }
    }

    /// The shards, in hash order.
    public let shards: [AggregatorShard]
    /// The configuration in force.
    public let configuration: Configuration
    /// The live series cap, shared by the shards.
    public let budget: SeriesBudget
    /// Recent `(seq, now)` pairs of ``maintain(now:lastTick:sealAfter:)``, oldest first: the newest one
    /// at least ``Configuration/idleSeriesTimeout`` old names the tick through which series are
    /// idle. About 1,024 entries at most (see `idleThrough`).
    private let ticks = Mutex(Deque<(seq: UInt64, now: Int64)>())
    /// ``earliestHeldRollupMinute()``, as the last collect found it.
    private let heldMinute = Mutex<Int64?>(nil)

    /// Creates an empty aggregator.
    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
        // One cap for all shards: however unevenly series spread over them, the aggregator holds
        // up to `maxSeries` series and never more.
        let budget = SeriesBudget(limit: configuration.maxSeries)
        self.budget = budget
        shards = (0..<configuration.shardCount).map { _ in
            AggregatorShard(relativeAccuracy: configuration.relativeAccuracy, budget: budget)
        }
    }

    /// The shard index for a server id (FNV-1a over its UTF-8 bytes, reduced to the shard count
    /// by a multiply and shift: a 64-bit `%` was most of this function's time, 1.7 % of a
    /// tiny-POST profile).
    @inlinable
    public func shardIndex(for serverID: String) -> Int {
        @inline(__always) func fnv(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt64 {
            var h: UInt64 = 0xcbf2_9ce4_8422_2325
            for b in bytes {
                h ^= UInt64(b)
                h &*= 0x100_0000_01b3
            }
            return h
        }
        // Native strings are contiguous UTF-8: hash the bytes directly, not through the UTF8View iterator.
        let h = serverID.utf8.withContiguousStorageIfAvailable(fnv) ?? {
            var copy = serverID
            return copy.withUTF8(fnv)
        }()
        let folded = UInt64(UInt32(truncatingIfNeeded: h ^ (h >> 32)))
        return Int(truncatingIfNeeded: (folded &* UInt64(shards.count)) >> 32)
    }

    /// Folds a batch: one split, one hop per shard that has samples, shards in parallel.
    /// - Returns: the positions in `samples` (ascending) of the samples refused because they would
    ///   have created a series beyond ``Configuration/maxSeries``; usually empty. Samples of
    ///   existing series are never refused.
    @discardableResult
    public func ingest(_ samples: [MetricSample]) async -> [Int] {
        if shards.count == 1 {
            return await shards[0].ingest(samples)
        }
        // Split by index, not by copying samples: every shard gets the shared batch and its positions.
        var parts = [[Int32]](repeating: [], count: shards.count)
        let expected = samples.count / shards.count + 16
        for i in parts.indices { parts[i].reserveCapacity(expected) }
        // By index, not `enumerated()`: that copies each sample (retaining its long strings).
        samples.withUnsafeBufferPointer { sp in
            for n in sp.indices { parts[shardIndex(for: sp[n].serverID)].append(Int32(n)) }
        }
        return await withTaskGroup(of: [Int].self) { group in
            for (i, part) in parts.enumerated() where !part.isEmpty {
                let shard = shards[i]
                group.addTask { await shard.ingest(samples, positions: part) }
            }
            var refused: [Int] = []
            for await r in group where !r.isEmpty { refused.append(contentsOf: r) }
            if refused.count > 1 { refused.sort() }
            return refused
        }
    }

    /// Whether folding `count` more samples could refuse any because of the series cap: false
    /// when there is room for `count` new series (a batch of `count` samples creates at most
    /// `count`). Reads one atomic; does not enter the shards.
    public func mayRefuseNewSeries(samples count: Int) -> Bool {
        budget.headroom < count
    }

    /// Loads stored rollups so windows and quantiles survive a restart.
    public func warm(with rollups: [MinuteRollup]) async {
        var parts = [[MinuteRollup]](repeating: [], count: shards.count)
        for r in rollups { parts[shardIndex(for: r.key.serverID)].append(r) }
        for (i, part) in parts.enumerated() where !part.isEmpty { await shards[i].warm(part) }
    }

    /// What changed since the last call, for the broadcaster, with the minute rollups to store and
    /// the series that went idle: ``maintain(now:lastTick:sealAfter:)`` and then
    /// ``collectChanges(now:seq:)``, in one call.
    /// - Returns: the snapshots of the series that changed, the minute rollups sealed, and the
    ///   keys of the series removed because they were idle for ``Configuration/idleSeriesTimeout``
    ///   (always empty when it is 0).
    public func collect(now: Int64, seq: UInt64, sealAfter: Int64 = 5_000) async
        -> (changed: [SeriesSnapshot], sealed: [MinuteRollup], expired: [SeriesKey]) {
        let sealed = await maintain(now: now, lastTick: seq, sealAfter: sealAfter)
        let c = await collectChanges(now: now, seq: seq)
        return (c.changed, sealed + c.sealed, c.expired)
    }

    /// The changes a tick publishes, without the pass over every series
    /// (``maintain(now:lastTick:sealAfter:)``): snapshots of the series changed since the last call
    /// (and since ``stage(now:seq:)`` handed them over), stamped with `seq`; the idle series the
    /// last `maintain` found, removed unless they changed since; and the minute rollups sealed
    /// since the last call. Its cost grows with the changes, not with the series.
    public func collectChanges(now: Int64, seq: UInt64) async
        -> (changed: [SeriesSnapshot], sealed: [MinuteRollup], expired: [SeriesKey]) {
        await withTaskGroup(of: (changed: [SeriesSnapshot], sealed: [MinuteRollup], expired: [SeriesKey]).self) { group in
            for shard in shards {
                group.addTask { await shard.collectChanges(now: now, seq: seq) }
            }
            var changed: [SeriesSnapshot] = []
            var sealed: [MinuteRollup] = []
            var expired: [SeriesKey] = []
            for await part in group {
                // The first part is taken as it is (no copy); the others join it.
                if changed.isEmpty { changed = part.changed } else { changed.append(contentsOf: part.changed) }
                sealed.append(contentsOf: part.sealed)
                expired.append(contentsOf: part.expired)
            }
            return (changed, sealed, expired)
        }
    }

    /// The once-per-tick pass over every series (see ``AggregatorShard``): seals minutes that
    /// ended `sealAfter` ms ago and got no sample since the last call, stores late samples kept
    /// apart once per wall-clock minute, finds the series idle for
    /// ``Configuration/idleSeriesTimeout`` (the next ``collectChanges(now:seq:)`` removes them
    /// unless they changed since), and updates ``earliestHeldRollupMinute()``.
    /// - Parameters:
    ///   - lastTick: the newest tick sequence number whose changes happened by `now`: the tick
    ///     about to be collected when called just before its ``collectChanges(now:seq:)``, the
    ///     last published one when called between ticks (not the coming one: a series staged for
    ///     it may change again after `now`, and would then leave before it had been idle for the
    ///     whole timeout).
    /// - Returns: the minute rollups to store.
    public func maintain(now: Int64, lastTick: UInt64, sealAfter: Int64 = 5_000) async -> [MinuteRollup] {
        let expireThrough = idleThrough(now: now, seq: lastTick)
        return await withTaskGroup(of: (sealed: [MinuteRollup], heldMinute: Int64?).self) { group in
            for shard in shards {
                group.addTask { await shard.maintain(now: now, sealAfter: sealAfter, expireThrough: expireThrough) }
            }
            var sealed: [MinuteRollup] = []
            var held: Int64? = nil
            for await part in group {
                sealed.append(contentsOf: part.sealed)
                if let m = part.heldMinute { held = min(held ?? m, m) }
            }
            heldMinute.withLock { $0 = held }
            return sealed
        }
    }

    /// Hands over snapshots of the series changed since the last call, ahead of the coming tick
    /// (see ``AggregatorShard/stage(now:seq:)``): the next ``collectChanges(now:seq:)`` (or
    /// ``collect(now:seq:sealAfter:)``) only returns series changed since, among them staged ones that changed again (newer snapshots
    /// of the same series: the later one wins). ``MetricsEngine`` hands them to
    /// ``Broadcaster/stage(_:)``, so the tick's update only waits for what changed last.
    public func stage(now: Int64, seq: UInt64) async -> [SeriesSnapshot] {
        await withTaskGroup(of: [SeriesSnapshot].self) { group in
            for shard in shards { group.addTask { await shard.stage(now: now, seq: seq) } }
            var out: [SeriesSnapshot] = []
            for await part in group {
                if out.isEmpty { out = part } else { out.append(contentsOf: part) }
            }
            return out
        }
    }

    /// As of the last ``maintain(now:lastTick:sealAfter:)``: the earliest minute (epoch ms of its start)
    /// of which the aggregates hold samples back from the store (late samples of a stored minute,
    /// and what arrived for a minute after part of it was stored: both handed to the store once
    /// per wall-clock minute); `nil` when none are held.
    public func earliestHeldRollupMinute() -> Int64? {
        heldMinute.withLock { $0 }
    }

    /// The newest tick sequence number at least the idle timeout before `now`, if any.
    private func idleThrough(now: Int64, seq: UInt64) -> UInt64? {
        let timeout = configuration.idleSeriesTimeout
        guard timeout > 0 else { return nil }
        return ticks.withLock { log in
            // A wall clock stepped back does not move the log back; entries are at least
            // timeout / 1024 apart, so the log holds about 1,024 whatever the timeout and tick
            // (series then leave up to 0.1 % of the timeout late).
            let now = max(now, log.last?.now ?? now)
            if log.isEmpty || now - log.last!.now >= max(1, timeout / 1024) { log.append((seq, now)) }
            let horizon = now - timeout
            while log.count >= 2 && log[log.index(after: log.startIndex)].now <= horizon { log.removeFirst() }
            guard let first = log.first, first.now <= horizon, first.seq < seq else { return nil }
            return first.seq
        }
    }

    /// Series removed since start because they were idle.
    public func expiredSeries() async -> Int {
        var n = 0
        for shard in shards { n += await shard.expiredSeries }
        return n
    }

    /// Seals every open minute and returns the rollups (call at shutdown before the last flush).
    public func sealAll() async -> [MinuteRollup] {
        var out: [MinuteRollup] = []
        for shard in shards { out.append(contentsOf: await shard.sealAll()) }
        return out
    }

    /// Every series' snapshot.
    public func snapshotAll(now: Int64) async -> [SeriesSnapshot] {
        var out: [SeriesSnapshot] = []
        for shard in shards { out.append(contentsOf: await shard.snapshotAll(now: now)) }
        return out
    }

    /// One series' snapshot, if known.
    public func snapshot(of key: SeriesKey, now: Int64) async -> SeriesSnapshot? {
        await shards[shardIndex(for: key.serverID)].snapshot(of: key, now: now)
    }

    /// What the store does not hold yet of one server's metric (all label sets, or one): each series'
    /// open minute, and late samples of an earlier minute not yet stored (one rollup each).
    public func openMinutes(serverID: String, metricName: String, labels: String? = nil) async -> [MinuteRollup] {
        await shards[shardIndex(for: serverID)].openMinutes(serverID: serverID, metricName: metricName, labels: labels)
    }

    /// Live series across shards.
    public func seriesCount() async -> Int {
        var n = 0
        for shard in shards { n += await shard.seriesCount }
        return n
    }

    /// Samples of new series rejected because the series cap was reached.
    public func rejectedNewSeries() async -> Int {
        var n = 0
        for shard in shards { n += await shard.rejectedNewSeries }
        return n
    }
}
