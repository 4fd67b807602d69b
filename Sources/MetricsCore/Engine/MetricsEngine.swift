import Synchronization
/// The embeddable core: an ``Aggregator``, a ``BatchWriter`` in front of a ``MetricStore``, and a
/// ``Broadcaster``, driven by one tick loop.
///
/// ```swift
/// let engine = MetricsEngine(store: MemoryStore())
/// await withDiscardingTaskGroup { group in
///     group.addTask { await engine.run() }
///     _ = await engine.writer.write(samples)      // durable when it returns
///     let live = await engine.aggregator.snapshotAll(now: ProcessInfoLite.nowMilliseconds())
///     engine.shutdown()
/// }
/// ```
public final class MetricsEngine: Sendable {
    /// Everything configurable in the core.
    public struct Configuration: Sendable {
        /// Aggregator sizing.
        public var aggregator: Aggregator.Configuration
        /// Batch writer sizing.
        public var writer: BatchWriter.Configuration
        /// Broadcaster sizing and tick.
        public var broadcaster: Broadcaster.Configuration
        /// How long after a minute ends it is sealed and written as a rollup, ms. Default 5,000.
        public var sealAfterMilliseconds: Int64
        /// At start, how far back stored rollups are loaded into the live windows, ms. Default 10 min.
        public var warmWindowMilliseconds: Int64
        /// How many times per tick the changed series are snapshotted and handed to the
        /// broadcaster ahead of the tick (``Aggregator/stage(now:seq:)``,
        /// ``Broadcaster/stage(_:)``), the tick itself included. The stage points get denser
        /// toward the tick: stage point k of n comes (k/n)² of the interval before it, so with
        /// the default 8 and a 1 s tick they fall 766, 563, 391, 250, 141, 63 and 16 ms before it.
        /// The tick then only snapshots and records what changed in its last 16 ms, so its update
        /// leaves sooner; a series changing all the time costs at most two snapshots per tick
        /// instead of one. 1 turns staging off. Ticks under 200 ms never stage.
        public var stagesPerTick: Int
        /// Creates a configuration.
        public init(aggregator: Aggregator.Configuration = .init(), writer: BatchWriter.Configuration = .init(),
                    broadcaster: Broadcaster.Configuration = .init(), sealAfterMilliseconds: Int64 = 5_000,
                    warmWindowMilliseconds: Int64 = 600_000, stagesPerTick: Int = 8) {
            self.aggregator = aggregator
            self.writer = writer
            self.broadcaster = broadcaster
            self.sealAfterMilliseconds = sealAfterMilliseconds
            self.warmWindowMilliseconds = warmWindowMilliseconds
            self.stagesPerTick = max(1, stagesPerTick)
        }
    }

    /// The live aggregates.
    public let aggregator: Aggregator
    /// The path to the store; submit samples here.
    public let writer: BatchWriter
    /// The SSE fan-out.
    public let broadcaster: Broadcaster
    /// The storage backend.
    public let store: any MetricStore
    /// The configuration in force.
    public let configuration: Configuration
    private let stopSignal = AsyncSignal()
    private let tickTimes = Mutex(TickTimes())

    /// How long the last tick took: collecting the changed series from the shards, and
    /// publishing them (row encoding, fleet views, subscriber events).
    public struct TickTimes: Sendable, Equatable {
        /// Microseconds spent collecting changes from the aggregator.
        public var collectMicroseconds = 0
        /// Microseconds spent in the broadcaster.
        public var publishMicroseconds = 0
        /// Microseconds from the start of the tick until the subscribers' events were queued
        /// (the collect and the part of the publish the events wait for).
        public var eventsReadyMicroseconds = 0
        /// Series changed in that tick (staged ones included).
        public var changedSeries = 0
        /// Snapshots taken ahead of the tick since the previous one (``Configuration/stagesPerTick``);
        /// a series that changed again after it was staged counts here and is snapshotted again
        /// at the tick.
        public var stagedSeries = 0
        /// Microseconds from the start of the tick until the last subscriber took its event so
        /// far (``Broadcaster/lastEventTakenNanoseconds``), measured when read; `nil` when none
        /// was taken yet.
        public var lastEventTakenMicroseconds: Int? = nil
    }

    /// Timing of the most recent tick (for `/api/stats`).
    public var lastTick: TickTimes {
        var t = tickTimes.withLock { $0 }
        if let taken = broadcaster.lastEventTakenNanoseconds {
            t.lastEventTakenMicroseconds = t.collectMicroseconds + Int(taken / 1_000)
        }
        return t
    }

    /// Creates an engine around a store.
    public init(store: any MetricStore, configuration: Configuration = Configuration()) {
        self.store = store
        self.configuration = configuration
        self.aggregator = Aggregator(configuration: configuration.aggregator)
        self.writer = BatchWriter(store: store, aggregator: aggregator, configuration: configuration.writer)
        self.broadcaster = Broadcaster(configuration: configuration.broadcaster)
    }

    /// Runs the flush loop and the tick loop until ``shutdown()``; then seals open minutes,
    /// flushes everything accepted, and closes the store.
    public func run() async {
        if configuration.warmWindowMilliseconds > 0,
           let rollups = try? await store.recentRollups(since: ProcessInfoLite.nowMilliseconds() - configuration.warmWindowMilliseconds),
           !rollups.isEmpty {
            await aggregator.warm(with: rollups)
        }
        await withDiscardingTaskGroup { group in
            group.addTask { await self.writer.run() }
            group.addTask {
                await self.tickLoop()
                // Stop taking submissions; the writer folds and writes everything it accepted, then returns.
                self.writer.close()
            }
        }
        // Only now is every accepted sample folded into the aggregates: a final tick so the last
        // samples reach subscribers, then seal every open minute and let the (closed) writer drain
        // those rollups too. Sealing before the writer drained would lose the rollups of samples
        // still buffered at shutdown.
        await tick()
        writer.enqueueRollups(await aggregator.sealAll())
        await writer.run()
        try? await store.close()
    }

    /// Asks ``run()`` to finish: no new submissions are taken; what was accepted is written.
    public func shutdown() {
        stopSignal.fire()
    }

    private func tickLoop() async {
        let interval = Duration.milliseconds(configuration.broadcaster.tickMilliseconds)
        let stages = configuration.broadcaster.tickMilliseconds >= 200 ? configuration.stagesPerTick : 1
        // Lead of stage point k before the tick: (k/n)² of the interval. Denser toward the tick,
        // because what the tick waits for is what changed after the last stage point, while an
        // earlier stage only has to be done before the next one. (Evenly spaced, the tick of a
        // fleet reporting once a second still collected its last eighth, ~6,000 series at 10,000
        // agents, and its update waited 12-14 ms for that.)
        let leads = (0..<stages).map { interval * (Double($0 * $0) / Double(stages * stages)) }
        let clock = ContinuousClock()
        var deadline = clock.now + interval
        while !stopSignal.isFired {
            // Snapshot what changed so far at each stage point before the tick (a stage point
            // whose successor is already due, after a slow tick, is skipped). The first one also
            // does what the last tick left for later (`maintain`).
            for k in stride(from: stages - 1, through: 1, by: -1) {
                let at = deadline - leads[k]
                if clock.now >= deadline - leads[k - 1] { continue }
                await stopSignal.wait(until: at, clock: clock)
                if stopSignal.isFired { return }
                await tickGate.run {  // not beside a tick called from outside
                    await maintainIfDue()
                    let snapshots = await aggregator.stage(now: ProcessInfoLite.nowMilliseconds(), seq: broadcaster.nextSequence)
                    broadcaster.stage(snapshots)
                }
            }
            await stopSignal.wait(until: deadline, clock: clock)
            if stopSignal.isFired { return }
            await tick()
            if stages == 1 { await maintainIfDue() }  // no stage point to leave it to
            deadline += interval
            let now = clock.now
            if deadline < now { deadline = now + interval }  // skip missed ticks rather than bursting
        }
    }

    /// History from the store, completed with the minutes still open in the live aggregates.
    public func history(_ query: HistoryQuery) async throws -> HistoryResult {
        var q = query
        q.openRollups = await aggregator.openMinutes(serverID: query.serverID, metricName: query.metricName, labels: query.labels)
        return try await store.history(q)
    }

    /// Whether `maintainIfDue` did its work since the last tick.
    private let maintained = Atomic<Bool>(false)

    /// What a tick needs done once but not before its events: the broadcaster's deferred
    /// rankings and fleet history (``Broadcaster/finishPublish()``), and the aggregator's pass
    /// over every series (``Aggregator/maintain(now:lastTick:sealAfter:)``: stale minutes sealed,
    /// idle series found), whose rollups go to the store now. Once per tick, at the first stage
    /// point after it (or before the next tick when none ran).
    private func maintainIfDue() async {
        guard !maintained.exchange(true, ordering: .relaxed) else { return }
        broadcaster.finishPublish()
        let sealed = await aggregator.maintain(now: ProcessInfoLite.nowMilliseconds(), lastTick: broadcaster.currentSequence,
                                               sealAfter: configuration.sealAfterMilliseconds)
        writer.enqueueRollups(sealed)
        store.rollupsHeld(fromMinute: aggregator.earliestHeldRollupMinute())
    }

    /// Runs one tick now: collect changes, publish them, queue sealed rollups. (The pass over
    /// every series runs first unless it ran since the last tick, see `maintainIfDue`.)
    ///
    /// Safe to call while ``run()`` ticks on its own: ticks never overlap (a call waits for the
    /// tick in progress). Two overlapping ticks took the same sequence number and split one
    /// tick's changes over two `update` events with the same `id`, which confused
    /// `Last-Event-ID` resume.
    public func tick() async {
        await tickGate.run { await tickAlone() }
    }

    private let tickGate = AsyncGate()

    private func tickAlone() async {
        await maintainIfDue()
        let seq = broadcaster.nextSequence
        let now = ProcessInfoLite.nowMilliseconds()
        let clock = ContinuousClock()
        let t0 = clock.now
        let (changed, sealed, expired) = await aggregator.collectChanges(now: now, seq: seq)
        let t1 = clock.now
        broadcaster.publish(changed: changed, removed: expired, seq: seq, timestamp: now)
        let t2 = clock.now
        maintained.store(false, ordering: .relaxed)
        writer.enqueueRollups(sealed)
        func us(_ d: Duration) -> Int { Int(d.components.seconds * 1_000_000 + d.components.attoseconds / 1_000_000_000_000) }
        let published = broadcaster.lastPublish
        tickTimes.withLock {
            $0 = TickTimes(collectMicroseconds: us(t1 - t0), publishMicroseconds: us(t2 - t1),
                           eventsReadyMicroseconds: us(t1 - t0) + Int(published.eventsReadyNanoseconds / 1_000),
                           changedSeries: published.changedSeries, stagedSeries: published.stagedSeries)
        }
    }
}
