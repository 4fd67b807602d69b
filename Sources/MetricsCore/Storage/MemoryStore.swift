import DequeModule

/// The embedded, bounded, in-process store: the default backend.
///
/// - Raw samples are kept in a ring of at most ``Configuration/maxSamples`` (held as the batches
///   they arrived in, so up to one batch more may stay referenced); when full, the
///   oldest sample is overwritten (raw data here is a short recent buffer, not an archive).
/// - Minute rollups are kept for ``Configuration/retentionMinutes`` behind the newest minute
///   written: a series' older minutes go as its new ones arrive, and once a minute every series is
///   swept, so the history of series that stopped reporting (hosts that went away) leaves too.
/// - At most ``Configuration/maxSeries`` series are kept. When a new series arrives at the cap,
///   series without a rollup for the last two minutes (gone quiet) make room, least recently
///   written first; when every stored series is still reporting, rollups of the new series are
///   counted in ``droppedSeries`` and not stored (existing series are unaffected).
///
/// A write is "durable" as soon as it is in memory: acknowledged samples survive as long as the
/// process does.
public actor MemoryStore: MetricStore {
    /// Bounds of the store.
    public struct Configuration: Sendable {
        /// Raw samples kept (ring). Default 1,000,000.
        public var maxSamples: Int
        /// Minutes of rollups kept per series. Default 1,440 (one day).
        public var retentionMinutes: Int
        /// Series with rollups kept. Default 200,000.
        public var maxSeries: Int
        /// Minute rollups kept in all, ~140 bytes each. Default 10,000,000 (about 1.4 GB). Past it
        /// the oldest minutes go first, for every series alike: the history kept shortens to what
        /// fits (a day for ~7,000 series, three hours for 50,000) instead of growing without a
        /// bound (a day of 200,000 series was ~50 GB). At least ``maxSeries``.
        public var maxRollups: Int
        /// Creates a configuration; a retention under one minute counts as one (the minute just
        /// stored must stay).
        public init(maxSamples: Int = 1_000_000, retentionMinutes: Int = 1_440, maxSeries: Int = 200_000,
                    maxRollups: Int = 10_000_000) {
            self.maxSamples = maxSamples
            self.retentionMinutes = max(1, retentionMinutes)
            self.maxSeries = maxSeries
            self.maxRollups = max(maxSeries, maxRollups)
        }
    }

    private let configuration: Configuration
    /// Raw samples as the batches they arrived in (oldest first); keeping whole batches makes a
    /// write O(1) instead of a copy per sample. Trimmed from the front to `maxSamples`.
    private var raw = Deque<ArraySlice<MetricSample>>()
    private var rawCount = 0
    /// One stored minute of a series (its key is the dictionary's: a rollup repeating it cost 48
    /// bytes more per minute).
    private struct StoredMinute {
        var minute: Int64
        var sketch: QuantileSketch
    }
    private var rollups: [SeriesKey: Deque<StoredMinute>] = [:]
    /// Minutes up to this one were dropped to stay within ``Configuration/maxRollups``.
    private var capHorizon: Int64 = .min
    /// Minutes of history kept now, when the rollup cap shortened it below the retention.
    public var historyMinutesKept: Int? {
        guard capHorizon != .min, newestMinute != .min, newestMinute - capHorizon < retention else { return nil }
        return Int((newestMinute - capHorizon) / 60_000)
    }
    /// A server's metric (its strings shared with the series keys: no concatenated copy per pair).
    private struct ServerMetric: Hashable {
        var serverID: String
        var metricName: String
    }
    /// The label sets stored for each server and metric (usually one: an array, not a set).
    private var byServerMetric: [ServerMetric: [String]] = [:]
    private var rollupCount = 0
    /// Samples written since start.
    public private(set) var samplesWritten = 0
    /// Rollups of series beyond ``Configuration/maxSeries`` that were not kept.
    public private(set) var droppedSeries = 0
    /// Rollups of minutes the rollup cap had already dropped, not kept.
    public private(set) var droppedBeforeCap = 0
    /// Series whose history was removed: past retention, or quiet when room was needed.
    public private(set) var evictedSeries = 0
    /// The newest minute written, at most a minute past the wall clock: the store's clock (data
    /// time, so replays and tests behave).
    private var newestMinute: Int64 = .min
    private var lastSweep: Int64 = .min
    /// Rollup history kept behind the newest minute, ms (at least a minute, whatever the
    /// configuration says: the minute just stored must stay).
    private var retention: Int64 { Int64(max(1, configuration.retentionMinutes)) * 60_000 }
    /// No quiet series existed at this minute: do not scan again for room until it advances.
    private var noQuietSeriesAt: Int64 = .min

    /// Creates an empty store.
    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    public func write(_ batch: StoreBatch) async throws {
        if !batch.samples.isEmpty {
            raw.append(batch.samples[...])
            rawCount += batch.samples.count
            while rawCount > configuration.maxSamples, let first = raw.first {
                let excess = rawCount - configuration.maxSamples
                if first.count <= excess {
                    raw.removeFirst()
                    rawCount -= first.count
                } else {
                    raw[raw.startIndex] = first.dropFirst(excess)
                    rawCount -= excess
                }
            }
        }
        samplesWritten += batch.samples.count
        // The store's "now" (retention, quiet series) follows the rollups but never passes the
        // wall clock by more than a minute: one agent with a fast clock (samples up to
        // --max-future ahead are accepted) must not age every other series out.
        let ceiling = MinuteRollup.minute(of: ProcessInfoLite.nowMilliseconds()) + 60_000
        for r in batch.rollups { merge(r, clockCeiling: ceiling) }
        if newestMinute != .min && newestMinute >= lastSweep &+ 60_000 { sweep() }
    }

    /// Drops minutes past retention from every series, and series left without any (once a minute).
    private func sweep() {
        lastSweep = newestMinute
        dropMinutes(through: max(newestMinute - retention, capHorizon))
    }

    /// Drops every series' minutes up to `horizon`, and series left without any; returns the
    /// oldest minute left (`Int64.max` when none).
    @discardableResult
    private func dropMinutes(through horizon: Int64) -> Int64 {
        var oldest = Int64.max
        var emptied: [SeriesKey] = []
        for key in Array(rollups.keys) {
            guard rollups[key]!.first!.minute <= horizon else {
                oldest = min(oldest, rollups[key]!.first!.minute)
                continue
            }
            var list = rollups.removeValue(forKey: key)!
            while let first = list.first, first.minute <= horizon {
                list.removeFirst()
                rollupCount -= 1
            }
            if let first = list.first {
                oldest = min(oldest, first.minute)
                rollups[key] = list
            } else {
                emptied.append(key)
            }
        }
        forget(emptied)
        return oldest
    }

    /// Makes room at the cap: removes every series without a rollup for the last two minutes.
    private func evictQuiet() {
        guard noQuietSeriesAt != newestMinute else { return }
        let quietBefore = newestMinute - 2 * 60_000
        var quiet: [SeriesKey] = []
        for (key, list) in rollups where list.last!.minute < quietBefore { quiet.append(key) }
        if quiet.isEmpty {
            noQuietSeriesAt = newestMinute
            return
        }
        for key in quiet { rollupCount -= rollups.removeValue(forKey: key)!.count }
        forget(quiet)
    }

    /// Removes emptied series from the label-set index and counts them.
    private func forget(_ keys: [SeriesKey]) {
        for key in keys {
            let k = ServerMetric(serverID: key.serverID, metricName: key.metricName)
            byServerMetric[k]?.removeAll { $0 == key.labels }
            if byServerMetric[k]?.isEmpty == true { byServerMetric[k] = nil }
        }
        evictedSeries += keys.count
    }

    private func merge(_ r: MinuteRollup, clockCeiling: Int64) {
        newestMinute = max(newestMinute, min(r.minute, clockCeiling))
        // A minute the rollup cap already dropped for every series is not stored again (late
        // samples, a resent backlog): it would leave a series with no minute at all.
        if r.minute <= capHorizon {
            droppedBeforeCap += 1
            return
        }
        if rollups[r.key] == nil {
            if rollups.count >= configuration.maxSeries { evictQuiet() }
            if rollups.count >= configuration.maxSeries {
                droppedSeries += 1
                return
            }
            rollups[r.key] = Deque()
            byServerMetric[ServerMetric(serverID: r.key.serverID, metricName: r.key.metricName), default: []].append(r.key.labels)
        }
        var list = rollups.removeValue(forKey: r.key)!
        // Minutes arrive mostly in order: search from the back.
        var i = list.count
        while i > 0 && list[i - 1].minute > r.minute { i -= 1 }
        if i > 0 && list[i - 1].minute == r.minute {
            list[i - 1].sketch.merge(r.sketch)
        } else {
            list.insert(StoredMinute(minute: r.minute, sketch: r.sketch), at: i)
            rollupCount += 1
        }
        let horizon = max((list.last?.minute ?? r.minute) - retention, capHorizon)
        while let first = list.first, first.minute <= horizon {
            list.removeFirst()
            rollupCount -= 1
        }
        rollups[r.key] = list  // never empty: `r` is newer than the cap horizon and the newest minute stays
        if rollupCount > configuration.maxRollups { trimToCap() }
    }

    /// Drops the oldest stored minute of every series, a minute at a time, until the store holds
    /// at most 95 % of ``Configuration/maxRollups`` (the margin keeps this to one pass over the
    /// series every few minutes in the steady state, not one per rollup). The newest minute stays.
    private func trimToCap() {
        let target = configuration.maxRollups / 100 * 95
        var oldest = rollups.values.lazy.compactMap { $0.first?.minute }.min() ?? .max
        while rollupCount > target && oldest < newestMinute {
            capHorizon = max(capHorizon, oldest)
            oldest = dropMinutes(through: capHorizon)
        }
    }

    public func history(_ query: HistoryQuery) async throws -> HistoryResult {
        var selected: [MinuteRollup] = []
        let labelSets: [String]
        if let labels = query.labels {
            labelSets = [labels]
        } else {
            labelSets = byServerMetric[ServerMetric(serverID: query.serverID, metricName: query.metricName)] ?? []
        }
        for labels in labelSets {
            let key = SeriesKey(serverID: query.serverID, metricName: query.metricName, labels: labels)
            guard let list = rollups[key] else { continue }
            for r in list where r.minute >= MinuteRollup.minute(of: query.from) && r.minute < query.to {
                selected.append(MinuteRollup(key: key, minute: r.minute, sketch: r.sketch))
            }
        }
        selected.append(contentsOf: query.openRollups)
        return HistoryResult.bucketing(selected, from: query.from, to: query.to, maxPoints: query.maxPoints)
    }

    public func recentRollups(since: Int64) async throws -> [MinuteRollup] {
        var out: [MinuteRollup] = []
        for (key, list) in rollups {
            for r in list.reversed() {
                if r.minute < since { break }
                out.append(MinuteRollup(key: key, minute: r.minute, sketch: r.sketch))
            }
        }
        return out
    }

    public func health() async -> StoreHealth {
        StoreHealth(
            healthy: true, backend: "memory",
            detail: "ring \(rawCount)/\(configuration.maxSamples) samples, \(rollups.count)/\(configuration.maxSeries) series, "
                + "\(rollupCount)/\(configuration.maxRollups) rollups"
                + (historyMinutesKept.map { ", history shortened to \($0) min to fit the rollup cap" } ?? "")
                + (droppedSeries > 0 ? ", rollups of \(droppedSeries) new series not kept (cap)" : ""),
            storedSamples: rawCount, storedRollups: rollupCount)
    }

    /// The most recent raw samples, newest last (for tests and debugging).
    public func recentSamples(limit: Int) -> [MetricSample] {
        var out: [MetricSample] = []
        for slice in raw.reversed() {
            if out.count >= limit { break }
            out.insert(contentsOf: slice.suffix(limit - out.count), at: 0)
        }
        return out
    }
}
