import Testing
@testable import MetricsCore

@Suite("MetricsEngine end to end", .timeLimit(.minutes(1)))
struct MetricsEngineTests {
    typealias T = CoreTestSupport

    /// Ticks only when the test calls `tick()` (the automatic tick is a minute away), no warm-up.
    static func manualConfig(warm: Int64 = 0) -> MetricsEngine.Configuration {
        .init(broadcaster: .init(tickMilliseconds: 60_000), warmWindowMilliseconds: warm)
    }

    static func rollupCounts(_ rollups: [MinuteRollup]) -> [String: UInt64] {
        rollups.reduce(into: [:]) { $0["\($1.key)@\($1.minute)", default: 0] += $1.count }
    }

    /// Waits (yielding, no timers) until the writer refuses submissions, i.e. `close()` was called.
    static func waitUntilWriterClosed(_ writer: BatchWriter) async -> Bool {
        for _ in 0..<1_000_000 {
            let closed = T.Recorder<Bool>()
            if !writer.submit([], onDurable: { closed.append($0 == .closed) }) && closed.all == [true] { return true }
            await Task.yield()
        }
        return false
    }

    @Test("a tick after staging reports the staged series, every changed series once, and when its events were ready")
    func tickReportsStagedSeries() async throws {
        let engine = MetricsEngine(store: MemoryStore(), configuration: Self.manualConfig())
        let run = Task { await engine.run() }
        let now = ProcessInfoLite.nowMilliseconds()
        #expect(await engine.writer.write([T.sample("web-1", "cpu", 1, now), T.sample("web-2", "cpu", 2, now)]) == .durable)
        // What the tick loop does at a stage point.
        engine.broadcaster.stage(await engine.aggregator.stage(now: now, seq: engine.broadcaster.nextSequence))
        #expect(await engine.writer.write([T.sample("web-1", "cpu", 3, now + 1), T.sample("web-3", "cpu", 4, now + 1)]) == .durable)
        await engine.tick()
        let t = engine.lastTick
        #expect(t.stagedSeries == 2)
        #expect(t.changedSeries == 3)
        #expect(t.eventsReadyMicroseconds >= t.collectMicroseconds)
        await engine.tick()
        #expect(engine.lastTick.stagedSeries == 0 && engine.lastTick.changedSeries == 0)
        engine.shutdown()
        await run.value
    }

    @Test("ticks called at once never overlap: each takes its own sequence number")
    func concurrentTicksAreSerialised() async throws {
        let engine = MetricsEngine(store: MemoryStore(), configuration: Self.manualConfig())
        let run = Task { await engine.run() }
        let now = ProcessInfoLite.nowMilliseconds()
        let before = engine.broadcaster.currentSequence
        await withTaskGroup(of: Void.self) { group in
            for i in 0..<16 {
                group.addTask {
                    _ = await engine.writer.write([T.sample("web-\(i)", "cpu", Double(i), now)])
                    await engine.tick()
                }
            }
        }
        // Overlapping ticks read the same next sequence and published one tick's changes twice
        // under one `seq` (and one SSE `id`).
        #expect(engine.broadcaster.currentSequence == before + 16)
        engine.shutdown()
        await run.value
    }

    @Test("write → tick → snapshot, broadcast and history; shutdown flushes and run() returns")
    func endToEnd() async throws {
        let store = MemoryStore()
        let engine = MetricsEngine(store: store, configuration: Self.manualConfig())
        let run = Task { await engine.run() }
        let now = ProcessInfoLite.nowMilliseconds()
        let old = MinuteRollup.minute(of: now) - 180_000
        let live = (1...10).map { T.sample("web-1", "cpu", Double($0), now, labels: "cpu=cpu0") }
        let past = (1...4).map { T.sample("web-2", "mem", Double($0 * 100), old + Int64($0) * 1_000) }

        let sub = try engine.broadcaster.subscribe(filter: SubscriptionFilter(), lastEventID: nil, onReady: {})
        let first = try T.parseSSE(try #require(sub.next()))
        #expect(first.event == "init" && first.rows.isEmpty)

        #expect(await engine.writer.write(live + past) == .durable)
        #expect(await store.samplesWritten == 14)

        await engine.tick()
        let update = try T.parseSSE(try #require(sub.next()))
        #expect(update.event == "update" && update.seq == 1 && update.id == "\(engine.broadcaster.epoch)-1")
        #expect(update.rowKeys.sorted() == ["web-1/cpu{cpu=cpu0}", "web-2/mem"])
        #expect(T.number(update.row("web-1/cpu{cpu=cpu0}"), "last") == 10)
        #expect(T.number(update.row("web-1/cpu{cpu=cpu0}"), "count") == 10)
        #expect(T.number(update.row("web-2/mem"), "last") == 400)

        let snap = try #require(await engine.aggregator.snapshot(of: SeriesKey(serverID: "web-1", metricName: "cpu", labels: "cpu=cpu0"),
                                                                 now: ProcessInfoLite.nowMilliseconds()))
        #expect(snap.total.count == 10 && snap.total.sum == 55 && snap.last == 10 && snap.changedSeq == 1)

        // The tick sealed the old minute and queued its rollup; an empty write completes after it is stored.
        #expect(await engine.writer.write([]) == .durable)
        #expect(Self.rollupCounts(try await store.recentRollups(since: 0)) == ["web-2/mem@\(old)": 4])

        // History: the open minute comes from the aggregator, the sealed one from the store.
        let q = HistoryQuery(serverID: "web-1", metricName: "cpu", from: old, to: now + 60_000)
        let h = try await engine.history(q)
        #expect(h.points.map(\.timestamp) == [MinuteRollup.minute(of: now)])
        #expect(h.points.map(\.count) == [10])
        #expect(h.points.first?.avg == 5.5)
        #expect(try await store.history(q).points.isEmpty, "the open minute is not in the store yet")
        let oldH = try await engine.history(HistoryQuery(serverID: "web-2", metricName: "mem", from: old, to: now))
        #expect(oldH.points.map(\.count) == [4])

        engine.shutdown()
        await run.value
        #expect(await store.samplesWritten == 14)
        let counts = Self.rollupCounts(try await store.recentRollups(since: 0))
        #expect(counts == ["web-2/mem@\(old)": 4, "web-1/cpu{cpu=cpu0}@\(MinuteRollup.minute(of: now))": 10])
        #expect(try await store.history(q).points.map(\.count) == [10], "sealed at shutdown")
        #expect(await engine.writer.write(live) == .closed)
        sub.cancel()
    }

    @Test("shutdown writes the rollups of samples that were accepted but not yet folded when it was called")
    func shutdownSealsSamplesStillBuffered() async throws {
        let gate = T.Gate()
        let store = T.TestStore(gate: gate)
        let engine = MetricsEngine(store: store, configuration: Self.manualConfig())
        let run = Task { await engine.run() }
        var started = store.writeStarted.makeAsyncIterator()
        let now = ProcessInfoLite.nowMilliseconds()
        let a = (0..<5).map { T.sample("a", "x", Double($0), now) }
        let b = (0..<7).map { T.sample("b", "x", Double($0), now) }
        let outcomes = T.Recorder<BatchWriter.Outcome>()
        let tookA = engine.writer.submit(a, onDurable: { outcomes.append($0) })
        #expect(tookA)
        #expect(await started.next() == 5, "batch a is folded and its store write is held")
        let tookB = engine.writer.submit(b, onDurable: { outcomes.append($0) })
        #expect(tookB, "batch b is accepted but not folded yet")
        engine.shutdown()
        #expect(await Self.waitUntilWriterClosed(engine.writer))
        gate.open()
        await run.value
        #expect(outcomes.all == [.durable, .durable])
        #expect(await store.allSamples.count == 12)
        let counts = Self.rollupCounts(await store.allRollups)
        #expect(counts == ["a/x@\(MinuteRollup.minute(of: now))": 5, "b/x@\(MinuteRollup.minute(of: now))": 7])
        #expect(await store.closed)
    }

    @Test("after a warm-up from the store, stored minutes are not written again and new samples update last")
    func warmUpDoesNotRewriteStoredMinutes() async throws {
        let store = MemoryStore()
        let now = ProcessInfoLite.nowMilliseconds()
        let current = MinuteRollup.minute(of: now)
        let key = SeriesKey(serverID: "web-1", metricName: "cpu")
        func rollup(_ minute: Int64, _ values: [Double]) -> MinuteRollup {
            var sk = QuantileSketch()
            for v in values { sk.add(v) }
            return MinuteRollup(key: key, minute: minute, sketch: sk)
        }
        // What an earlier run stored, up to the current minute (a restart within the same minute).
        try await store.write(StoreBatch(rollups: [rollup(current - 120_000, [1, 2]), rollup(current - 60_000, [3]),
                                                   rollup(current, [40, 50, 60])]))
        let engine = MetricsEngine(store: store, configuration: Self.manualConfig(warm: 600_000))
        let run = Task { await engine.run() }
        // run() warms up before it starts the writer, so a durable write means the warm-up is done.
        #expect(await engine.writer.write([MetricSample(serverID: "web-1", metricName: "cpu", value: 7, timestamp: now)]) == .durable)
        let snap = try #require(await engine.aggregator.snapshot(of: key, now: now))
        #expect(snap.total.count == 7)
        #expect(snap.window5m.count == 7 && snap.window5m.sum == 163)
        #expect(snap.last == 7 && snap.lastTimestamp == now, "a live sample is newer than anything stored")
        let h = try await engine.history(HistoryQuery(serverID: "web-1", metricName: "cpu", from: current - 120_000, to: now + 1))
        #expect(h.points.map(\.count) == [2, 1, 4], "history does not count the stored part of the open minute twice")

        await engine.tick()
        engine.shutdown()
        await run.value
        let counts = Self.rollupCounts(try await store.recentRollups(since: 0))
        #expect(counts == ["\(key)@\(current - 120_000)": 2, "\(key)@\(current - 60_000)": 1, "\(key)@\(current)": 4])
    }

    @Test("after a warm-up, a minute that gets no new sample is not written again when the tick seals it")
    func warmUpStaleMinuteIsNotRewritten() async throws {
        let store = MemoryStore()
        let now = ProcessInfoLite.nowMilliseconds()
        let old = MinuteRollup.minute(of: now) - 180_000
        var sk = QuantileSketch()
        for v in [1.0, 2, 3] { sk.add(v) }
        let key = SeriesKey(serverID: "db", metricName: "load")
        try await store.write(StoreBatch(rollups: [MinuteRollup(key: key, minute: old, sketch: sk)]))
        let engine = MetricsEngine(store: store, configuration: Self.manualConfig(warm: 600_000))
        let run = Task { await engine.run() }
        #expect(await engine.writer.write([]) == .durable)
        #expect(await engine.aggregator.seriesCount() == 1)
        await engine.tick()
        #expect(await engine.writer.write([]) == .durable)
        engine.shutdown()
        await run.value
        #expect(Self.rollupCounts(try await store.recentRollups(since: 0)) == ["\(key)@\(old)": 3])
    }
}
