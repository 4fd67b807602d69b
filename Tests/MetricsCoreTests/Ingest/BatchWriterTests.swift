import Testing
import Synchronization
@testable import MetricsCore

@Suite("BatchWriter", .timeLimit(.minutes(1)))
struct BatchWriterTests {
    typealias T = CoreTestSupport

    static func batch(_ tag: Int, count: Int) -> [MetricSample] {
        (0..<count).map { T.sample("w-\(tag % 5)", "m", Double(tag * 1_000 + $0), T.baseMinute + Int64(tag * 1_000 + $0)) }
    }

    /// What happened to each submission, in callback order.
    enum Event: Sendable, Hashable {
        case accepted(Int)
        case durable(Int)
        case closed(Int)
    }

    /// Submits with callbacks that report to `events` (and a stream, to await them).
    final class Harness: Sendable {
        let writer: BatchWriter
        let events = T.Recorder<Event>()
        let stream: AsyncStream<Event>
        private let continuation: AsyncStream<Event>.Continuation

        init(writer: BatchWriter) {
            self.writer = writer
            (stream, continuation) = AsyncStream<Event>.makeStream()
        }

        @discardableResult
        func submit(_ tag: Int, _ samples: [MetricSample]) -> Bool {
            writer.submit(samples, onAccepted: { [self] in record(.accepted(tag)) }, onDurable: { [self] outcome in
                record(outcome.isDurable ? .durable(tag) : .closed(tag))
            })
        }

        private func record(_ e: Event) {
            events.append(e)
            continuation.yield(e)
        }
    }

    /// Awaits events from the stream until `done` says so.
    static func waitFor(_ stream: AsyncStream<Event>, until done: ([Event]) -> Bool) async -> [Event] {
        var seen: [Event] = []
        for await e in stream {
            seen.append(e)
            if done(seen) { break }
        }
        return seen
    }

    @Test("every submitted sample becomes durable exactly once, in submission order")
    func everythingDurableExactlyOnceInOrder() async {
        let store = T.TestStore()
        let aggregator = Aggregator(configuration: .init(shardCount: 2))
        let writer = BatchWriter(store: store, aggregator: aggregator, configuration: .init(maxBatchSamples: 50))
        let h = Harness(writer: writer)
        let run = Task { await writer.run() }
        var rng = T.SeededRNG(seed: 77)
        var submitted: [MetricSample] = []
        for tag in 0..<200 {
            let b = Self.batch(tag, count: rng.int(0...40))
            submitted.append(contentsOf: b)
            #expect(h.submit(tag, b))
            if tag % 17 == 0 { await Task.yield() }
        }
        writer.close()
        await run.value
        let stored = await store.allSamples
        #expect(stored == submitted, "store holds exactly the submitted samples, in order")
        #expect(h.events.all == (0..<200).map { .durable($0) }, "one durable callback per submission, in order")
        #expect(await store.batches.allSatisfy { $0.samples.count <= 50 }, "batches respect maxBatchSamples")
        let stats = writer.statistics
        #expect(stats.samplesAccepted == submitted.count)
        #expect(stats.samplesWritten == submitted.count)
        #expect(stats.bufferedSamples == 0 && stats.parkedSamples == 0)
        #expect(stats.writeFailures == 0 && stats.backpressureEvents == 0)
        #expect(stats.batchesWritten == (await store.batches.count))
        let folded = await aggregator.snapshotAll(now: T.baseMinute).reduce(0) { $0 + Int($1.total.count) }
        #expect(folded == submitted.count, "every sample is folded into the aggregates once")
    }

    @Test("with two writes in flight, the second batch is written while the first waits, and acknowledged after it")
    func pipelinedWritesCompleteInOrder() async {
        let first = T.Gate()
        let store = T.TestStore(attemptGates: [1: first], concurrentWrites: 2)
        let aggregator = Aggregator(configuration: .init(shardCount: 2))
        let writer = BatchWriter(store: store, aggregator: aggregator, configuration: .init(maxBatchSamples: 10))
        let h = Harness(writer: writer)
        let run = Task { await writer.run() }
        h.submit(0, Self.batch(0, count: 10))
        h.submit(1, Self.batch(1, count: 10))
        var started = store.writeStarted.makeAsyncIterator()
        #expect(await started.next() == 10)
        #expect(await started.next() == 10, "the second batch's write starts while the first is still in flight")
        // The second write finishes first...
        while await store.batches.count < 1 { await Task.yield() }
        #expect(await store.batches.first?.sequence == 2)
        #expect(h.events.all.isEmpty, "...but nothing is acknowledged before the first batch is durable")
        first.open()
        let seen = await Self.waitFor(h.stream) { $0.count == 2 }
        #expect(seen == [.durable(0), .durable(1)])
        writer.close()
        await run.value
        let folded = await aggregator.snapshotAll(now: T.baseMinute).reduce(0) { $0 + Int($1.total.count) }
        #expect(folded == 20)
    }

    @Test("samples of new series beyond the cap are refused: not stored, not folded, named to their submitter")
    func seriesCapRefusals() async {
        let store = T.TestStore()
        let aggregator = Aggregator(configuration: .init(shardCount: 4, maxSeries: 3))
        let writer = BatchWriter(store: store, aggregator: aggregator)
        let run = Task { await writer.run() }
        let m = T.baseMinute
        #expect(await writer.write([T.sample("a", "m", 1, m), T.sample("b", "m", 2, m), T.sample("c", "m", 3, m)]) == .durable)
        // Existing series mixed with new ones: the new ones are refused, the rest is stored.
        let mixed = [T.sample("a", "m", 4, m + 1), T.sample("d", "m", 5, m + 1), T.sample("b", "m", 6, m + 1),
                     T.sample("a", "other", 7, m + 1), T.sample("d", "m", 8, m + 2)]
        #expect(await writer.write(mixed) == .durableExcept(refused: [1, 3, 4]))
        #expect(await store.allSamples.map(\.value) == [1, 2, 3, 4, 6])
        let a = await aggregator.snapshot(of: SeriesKey(serverID: "a", metricName: "m"), now: m + 10)
        #expect(a?.total.count == 2)
        #expect(await aggregator.seriesCount() == 3)
        #expect(writer.statistics.samplesRefused == 3)
        #expect(writer.statistics.samplesWritten == 5)
        writer.close()
        await run.value
    }

    @Test("submissions sharing a batch at the cap each get their own refused positions")
    func seriesCapRefusalsPerSubmission() async {
        let gate = T.Gate()
        let store = T.TestStore(gate: gate)
        let aggregator = Aggregator(configuration: .init(shardCount: 2, maxSeries: 2))
        let writer = BatchWriter(store: store, aggregator: aggregator)
        let outcomes = T.Recorder<[Int]>()
        let (stream, done) = AsyncStream<Void>.makeStream()
        let run = Task { await writer.run() }
        let m = T.baseMinute
        func submit(_ tag: Int, _ samples: [MetricSample]) {
            writer.submit(samples, onDurable: { outcome in
                switch outcome {
                case .durable: outcomes.append([tag])
                case .durableExcept(let refused): outcomes.append([tag] + refused)
                case .closed: outcomes.append([tag, -1])
                }
                done.yield()
            })
        }
        // The first batch holds the store; the next two submissions queue into one batch behind it.
        submit(0, [T.sample("a", "m", 1, m)])
        var started = store.writeStarted.makeAsyncIterator()
        _ = await started.next()
        submit(1, [T.sample("b", "m", 2, m), T.sample("c", "m", 3, m), T.sample("a", "m", 4, m)])
        submit(2, [T.sample("c", "m", 5, m), T.sample("b", "m", 6, m), T.sample("d", "m", 7, m)])
        gate.open()
        var n = 0
        for await _ in stream {
            n += 1
            if n == 3 { break }
        }
        // One of b and c gets the last slot (shards fold in parallel, so which is not fixed); the
        // other, and d, are refused in both submissions.
        let bWon = [[0], [1, 1], [2, 0, 2]], cWon = [[0], [1, 0], [2, 1, 2]]
        #expect(outcomes.all == bWon || outcomes.all == cWon)
        #expect(await store.batches.count == 2, "the two submissions shared one batch")
        #expect(await store.allSamples.map(\.value) == (outcomes.all == bWon ? [1, 2, 4, 6] : [1, 3, 4, 5]))
        writer.close()
        await run.value
    }

    @Test("write(_:) returns .durable once the samples are in the store")
    func writeReturnsDurable() async {
        let store = T.TestStore()
        let writer = BatchWriter(store: store, aggregator: nil)
        let run = Task { await writer.run() }
        #expect(await writer.write(Self.batch(1, count: 3)) == .durable)
        #expect(await store.allSamples.count == 3)
        #expect(await writer.write(Self.batch(2, count: 4)) == .durable)
        #expect(await store.allSamples.count == 7)
        writer.close()
        await run.value
        #expect(await writer.write(Self.batch(3, count: 1)) == .closed)
    }

    @Test("backpressure: a full buffer parks submissions, which are accepted after the store catches up; nothing is dropped")
    func backpressureParksAndLaterAccepts() async {
        let gate = T.Gate()
        let store = T.TestStore(gate: gate)
        let writer = BatchWriter(store: store, aggregator: nil, configuration: .init(maxBatchSamples: 100, bufferCapacity: 10))
        let h = Harness(writer: writer)
        let run = Task { await writer.run() }
        var started = store.writeStarted.makeAsyncIterator()

        #expect(h.submit(0, Self.batch(0, count: 6)))
        // The writer takes batch 0 and blocks in the store.
        #expect(await started.next() == 6)
        #expect(h.submit(1, Self.batch(1, count: 3)), "6 in flight + 3 buffered fits the capacity of 10")
        #expect(!h.submit(2, Self.batch(2, count: 3)), "does not fit: parked")
        #expect(!h.submit(3, Self.batch(3, count: 1)), "would fit, but must wait behind the parked submission to keep order")
        #expect(!writer.hasRoom)
        var stats = writer.statistics
        #expect(stats.bufferedSamples == 9)
        #expect(stats.parkedSamples == 4)
        #expect(stats.backpressureEvents == 2)
        #expect(stats.bufferCapacity == 10)
        #expect(stats.samplesAccepted == 9)
        #expect(h.events.all.isEmpty, "no callbacks while the store is blocked")

        gate.open()
        let seen = await Self.waitFor(h.stream) { events in (0..<4).allSatisfy { events.contains(.durable($0)) } }
        func position(_ e: Event) -> Int { seen.firstIndex(of: e) ?? Int.max }
        #expect(seen.contains(.accepted(2)) && seen.contains(.accepted(3)), "parked submissions are accepted later")
        // Batch 0 becomes durable before the parked submissions are accepted; each is accepted before it is durable.
        #expect(position(.durable(0)) < position(.accepted(2)))
        #expect(position(.accepted(2)) < position(.durable(2)))
        #expect(position(.accepted(3)) < position(.durable(3)))
        #expect(seen.filter { if case .durable = $0 { true } else { false } } == [.durable(0), .durable(1), .durable(2), .durable(3)])
        #expect(!seen.contains(.accepted(0)) && !seen.contains(.accepted(1)), "onAccepted is not called for submissions taken at once")

        writer.close()
        await run.value
        stats = writer.statistics
        #expect(stats.bufferedSamples == 0 && stats.parkedSamples == 0)
        #expect(stats.samplesAccepted == 13 && stats.samplesWritten == 13)
        #expect(stats.backpressureEvents == 2)
        let stored = await store.allSamples
        #expect(stored == (0..<4).flatMap { Self.batch($0, count: [6, 3, 3, 1][$0]) })
        #expect(h.events.count == 6)
    }

    @Test("a submission larger than the whole buffer is taken alone when the buffer is empty")
    func oversizedSubmissionTakenWhenEmpty() async {
        let gate = T.Gate()
        let store = T.TestStore(gate: gate)
        let writer = BatchWriter(store: store, aggregator: nil, configuration: .init(bufferCapacity: 5))
        let h = Harness(writer: writer)
        let run = Task { await writer.run() }
        var started = store.writeStarted.makeAsyncIterator()
        #expect(h.submit(0, Self.batch(0, count: 12)))
        #expect(await started.next() == 12)
        #expect(!h.submit(1, Self.batch(1, count: 1)))
        #expect(writer.statistics.bufferedSamples == 12)
        gate.open()
        _ = await Self.waitFor(h.stream) { $0.contains(.durable(1)) }
        writer.close()
        await run.value
        #expect(await store.allSamples.count == 13)
    }

    @Test("a failing store is retried until it succeeds; the batch is written once and writeFailures counts the failures",
          arguments: [1, 4])
    func failingStoreIsRetried(failures: Int) async {
        let store = T.TestStore(failures: failures)
        let aggregator = Aggregator(configuration: .init(shardCount: 1))
        let writer = BatchWriter(store: store, aggregator: aggregator,
                                 configuration: .init(retryInitialDelay: .milliseconds(1), retryMaxDelay: .milliseconds(4)))
        let run = Task { await writer.run() }
        let samples = Self.batch(7, count: 25)
        let rollup = MinuteRollup(key: SeriesKey(serverID: "r", metricName: "m"), minute: T.baseMinute)
        writer.enqueueRollups([rollup])
        #expect(await writer.write(samples) == .durable)
        writer.close()
        await run.value
        #expect(await store.attempts == failures + store.batches.count)
        #expect(await store.allSamples == samples, "written exactly once after the failures")
        #expect(await store.allRollups.count == 1)
        let stats = writer.statistics
        #expect(stats.writeFailures == failures)
        #expect(stats.samplesWritten == 25)
        #expect(stats.lastError == "")
        #expect(stats.batchesWritten == (await store.batches.count))
        let folded = await aggregator.snapshotAll(now: T.baseMinute).reduce(0) { $0 + Int($1.total.count) }
        #expect(folded == 25, "retries do not fold the batch into the aggregates again")
    }

    @Test("while the store fails, writeFailures and lastError tell why; success clears lastError")
    func lastErrorWhileFailing() async {
        let secondAttempt = T.Gate()
        let store = T.TestStore(failures: 1, attemptGates: [2: secondAttempt])
        let writer = BatchWriter(store: store, aggregator: nil,
                                 configuration: .init(retryInitialDelay: .milliseconds(1), retryMaxDelay: .milliseconds(1)))
        let run = Task { await writer.run() }
        var started = store.writeStarted.makeAsyncIterator()
        writer.submit(Self.batch(1, count: 2), onDurable: { _ in })
        #expect(await started.next() == 2)
        #expect(await started.next() == 2, "retried after the failure")
        // The retry is held by the store: the failure is visible now.
        var stats = writer.statistics
        #expect(stats.writeFailures == 1)
        #expect(stats.lastError.contains("injected failure 1"))
        #expect(stats.samplesWritten == 0 && stats.bufferedSamples == 2)
        secondAttempt.open()
        writer.close()
        await run.value
        stats = writer.statistics
        #expect(stats.lastError == "")
        #expect(stats.samplesWritten == 2 && stats.batchesWritten == 1)
    }

    @Test("close() drains accepted and parked submissions; later submissions are refused with .closed")
    func closeDrainsAndRefusesLaterSubmissions() async {
        let gate = T.Gate()
        let store = T.TestStore(gate: gate)
        let writer = BatchWriter(store: store, aggregator: nil, configuration: .init(bufferCapacity: 8))
        let h = Harness(writer: writer)
        let run = Task { await writer.run() }
        var started = store.writeStarted.makeAsyncIterator()
        #expect(h.submit(0, Self.batch(0, count: 5)))
        #expect(await started.next() == 5)
        #expect(h.submit(1, Self.batch(1, count: 3)))
        #expect(!h.submit(2, Self.batch(2, count: 4)))   // parked
        writer.close()
        #expect(!h.submit(3, Self.batch(3, count: 1)))
        #expect(h.events.all == [.closed(3)], ".closed is reported at once")
        gate.open()
        await run.value
        #expect(Set(h.events.all) == [.closed(3), .durable(0), .durable(1), .durable(2), .accepted(2)])
        #expect(await store.allSamples.count == 12)
        #expect(writer.statistics.parkedSamples == 0)
        // After run() returned, submissions still complete at once with .closed.
        #expect(await writer.write(Self.batch(4, count: 1)) == .closed)
    }

    @Test("16 tasks writing concurrently through the writer: every sample is durable once and folded once")
    func concurrentWritersThroughBatchWriter() async {
        let store = MemoryStore()
        let aggregator = Aggregator(configuration: .init(shardCount: 4))
        let writer = BatchWriter(store: store, aggregator: aggregator,
                                 configuration: .init(maxBatchSamples: 300, bufferCapacity: 500))
        let run = Task { await writer.run() }
        let work = (0..<16).map { AggregatorConcurrencyAndLimitTests.taskBatches(task: $0, batches: 60) }
        let outcomes = await withTaskGroup(of: [BatchWriter.Outcome].self) { group in
            for batches in work {
                group.addTask {
                    var out: [BatchWriter.Outcome] = []
                    for b in batches { out.append(await writer.write(b)) }
                    return out
                }
            }
            return await group.reduce(into: []) { $0.append(contentsOf: $1) }
        }
        writer.close()
        await run.value
        let all = work.flatMap { $0.flatMap { $0 } }
        #expect(outcomes.count == 16 * 60)
        #expect(outcomes.allSatisfy { $0 == .durable })
        #expect(await store.samplesWritten == all.count)
        let stored = await store.recentSamples(limit: all.count)
        #expect(stored.map(\.timestamp).sorted() == all.map(\.timestamp).sorted(), "each sample stored exactly once")
        AggregatorConcurrencyAndLimitTests.expectTotalsMatch(await aggregator.snapshotAll(now: T.baseMinute), all)
        let stats = writer.statistics
        #expect(stats.samplesAccepted == all.count && stats.samplesWritten == all.count)
        #expect(stats.bufferedSamples == 0 && stats.parkedSamples == 0)
    }
}
