import DequeModule
import Synchronization

/// Moves accepted samples into the live aggregates and the ``MetricStore`` in large batches,
/// and tells each submitter when its samples are durable.
///
/// ## Flushing
/// One flush loop (``run()``) takes everything buffered, up to ``Configuration/maxBatchSamples``,
/// folds it into the ``Aggregator`` while writing it to the store, and then completes the submissions.
/// While a write is in progress new submissions accumulate, so batches grow with load by
/// themselves (group commit) and an idle server flushes at once. ``Configuration/linger`` adds an
/// optional wait for more data before a small flush.
///
/// ## Bounded buffer and backpressure
/// Buffered plus in-flight samples never exceed ``Configuration/bufferCapacity`` (except that a
/// single submission larger than the capacity is taken alone when the buffer is empty). A
/// submission that does not fit is *parked*, not dropped: ``submit(_:onAccepted:onDurable:)``
/// returns `false` and calls `onAccepted` later, when a flush has made room. The transport stops
/// reading from that client (HTTP/2 flow control) until then, so the parked set is bounded by the
/// clients' flow-control windows.
///
/// ## The series cap
/// A sample that would start a series beyond the aggregator's cap
/// (``Aggregator/Configuration/maxSeries``) is refused: not folded, not stored, and reported to
/// its submitter as ``Outcome/durableExcept(refused:)``. Far below the cap the fold overlaps the
/// store write; once a batch could reach it, the batch is folded first and written without the
/// refused samples.
///
/// ## Failures
/// A failed store write is retried with exponential backoff (``Configuration/retryInitialDelay``
/// doubling up to ``Configuration/retryMaxDelay``) for as long as it takes; the buffer then fills
/// and ingestion is pushed back. Nothing accepted is dropped. After ``close()`` the loop drains
/// what was accepted and parked, then returns.
public final class BatchWriter: Sendable {
    /// Sizes and timings.
    public struct Configuration: Sendable {
        /// Largest batch handed to the store. Default 65,536 samples.
        public var maxBatchSamples: Int
        /// Bound on buffered + in-flight samples. Default 1,048,576.
        public var bufferCapacity: Int
        /// Extra wait for more data before flushing a batch smaller than `maxBatchSamples`. Default 0.
        public var linger: Duration
        /// First retry delay after a failed write. Default 50 ms.
        public var retryInitialDelay: Duration
        /// Longest retry delay. Default 5 s.
        public var retryMaxDelay: Duration
        /// Creates a configuration.
        public init(maxBatchSamples: Int = 65_536, bufferCapacity: Int = 1_048_576, linger: Duration = .zero,
                    retryInitialDelay: Duration = .milliseconds(50), retryMaxDelay: Duration = .seconds(5)) {
            self.maxBatchSamples = max(1, maxBatchSamples)
            self.bufferCapacity = max(1, bufferCapacity)
            self.linger = linger
            self.retryInitialDelay = retryInitialDelay
            self.retryMaxDelay = retryMaxDelay
        }
    }

    /// How a submission ended.
    public enum Outcome: Sendable, Equatable {
        /// Written to the store (and folded into the aggregates).
        case durable
        /// Written to the store and folded, except the samples at `refused` (positions in the
        /// submission, ascending): they would have started new series beyond the aggregator's
        /// series cap (``Aggregator/Configuration/maxSeries``), so nothing of them was stored.
        case durableExcept(refused: [Int])
        /// Refused because the writer was closed before the submission was made.
        case closed

        /// Whether the submission's samples (all, or all but the refused ones) are in the store.
        public var isDurable: Bool {
            switch self {
            case .durable, .durableExcept: true
            case .closed: false
            }
        }
    }

    /// Counters for `/api/stats`.
    public struct Statistics: Sendable, Equatable, Codable {
        /// Samples accepted into the buffer since start.
        public var samplesAccepted: Int = 0
        /// Samples written to the store since start.
        public var samplesWritten: Int = 0
        /// Samples refused at the series cap since start (not stored; their submitters were told).
        public var samplesRefused: Int = 0
        /// Rollups written to the store since start.
        public var rollupsWritten: Int = 0
        /// Store writes that succeeded.
        public var batchesWritten: Int = 0
        /// Store writes that failed and were retried.
        public var writeFailures: Int = 0
        /// Samples buffered or in flight now.
        public var bufferedSamples: Int = 0
        /// The bound on buffered samples.
        public var bufferCapacity: Int = 0
        /// Samples waiting for room (their clients are paused).
        public var parkedSamples: Int = 0
        /// Times a submission had to wait for room.
        public var backpressureEvents: Int = 0
        /// Duration of the last successful store write, seconds.
        public var lastWriteSeconds: Double = 0
        /// Time from acceptance to durability of the oldest submission in the last batch, seconds.
        public var lastFlushLagSeconds: Double = 0
        /// Largest flush lag seen, seconds.
        public var maxFlushLagSeconds: Double = 0
        /// Last store error, empty when the last write succeeded.
        public var lastError: String = ""
    }

    struct Submission {
        var samples: [MetricSample]
        var onAccepted: (@Sendable () -> Void)?
        var onDurable: @Sendable (Outcome) -> Void
        var acceptedAt: UInt64 = 0
    }

    struct State {
        var buffered = Deque<Submission>()
        var bufferedCount = 0   // includes in-flight
        var parked = Deque<Submission>()
        var parkedCount = 0
        var rollups: [MinuteRollup] = []
        var wakeup: CheckedContinuation<Void, Never>?
        var closed = false
        var nextSequence: UInt64 = 1
        var stats = Statistics()
        /// Batches currently between a failed write and its successful retry (several with
        /// write lanes): `lastError` clears only when none is.
        var failingBatches = 0
    }

    private let state: Mutex<State>
    private let store: any MetricStore
    private let aggregator: Aggregator?
    /// The configuration in force.
    public let configuration: Configuration

    /// Creates a writer.
    /// - Parameters:
    ///   - store: where batches go.
    ///   - aggregator: the live aggregates each batch is folded into before it is written, if any.
    ///   - configuration: sizes and timings.
    public init(store: any MetricStore, aggregator: Aggregator?, configuration: Configuration = Configuration()) {
        self.store = store
        self.aggregator = aggregator
        self.configuration = configuration
        var s = State()
        s.stats.bufferCapacity = configuration.bufferCapacity
        self.state = Mutex(s)
    }

    /// Hands samples to the writer. Safe from any thread; never blocks.
    ///
    /// - Parameters:
    ///   - samples: the batch (empty batches complete at the next flush).
    ///   - onAccepted: called (from the flush loop) when a parked submission is taken into the
    ///     buffer; not called when this method returns `true`.
    ///   - onDurable: called once, from the flush loop, when the samples are in the store, or
    ///     at once with ``Outcome/closed`` if the writer is closed.
    /// - Returns: `true` when the samples were taken into the buffer now; `false` when they are
    ///   parked (the caller should stop reading more input until `onAccepted`) or refused (closed).
    @discardableResult
    public func submit(_ samples: [MetricSample], onAccepted: (@Sendable () -> Void)? = nil,
                       onDurable: @escaping @Sendable (Outcome) -> Void) -> Bool {
        let now = ProcessInfoLite.monotonicNanoseconds()
        enum Result { case accepted(CheckedContinuation<Void, Never>?), parked, closed }
        let result: Result = state.withLock { s in
            if s.closed { return .closed }
            let sub = Submission(samples: samples, onAccepted: onAccepted, onDurable: onDurable, acceptedAt: now)
            if s.parked.isEmpty && (s.bufferedCount + samples.count <= configuration.bufferCapacity || s.bufferedCount == 0) {
                s.buffered.append(sub)
                s.bufferedCount += samples.count
                s.stats.samplesAccepted += samples.count
                let w = s.wakeup
                s.wakeup = nil
                return .accepted(w)
            }
            s.parked.append(sub)
            s.parkedCount += samples.count
            s.stats.backpressureEvents += 1
            return .parked
        }
        switch result {
        case .accepted(let w):
            w?.resume()
            return true
        case .parked:
            return false
        case .closed:
            onDurable(.closed)
            return false
        }
    }

    /// Splits ascending positions in a concatenation of parts of `counts` samples each into each
    /// part's own positions (relative to the part's start): how a batch's refusals reach its
    /// submissions, and a submission's refusals the requests it was gathered from.
    public static func split(_ positions: [Int], into counts: [Int]) -> [[Int]] {
        var out: [[Int]] = []
        out.reserveCapacity(counts.count)
        var start = 0, next = 0
        for n in counts {
            var own: [Int] = []
            while next < positions.count && positions[next] < start + n {
                own.append(positions[next] - start)
                next += 1
            }
            out.append(own)
            start += n
        }
        return out
    }

    /// Submits and waits until durable: the convenient form for embedding code.
    /// - Returns: the outcome.
    public func write(_ samples: [MetricSample]) async -> Outcome {
        await withCheckedContinuation { (c: CheckedContinuation<Outcome, Never>) in
            submit(samples, onDurable: { c.resume(returning: $0) })
        }
    }

    /// Queues minute rollups for the next store write. They are not bounded by the buffer
    /// (there is at most one per series and minute).
    public func enqueueRollups(_ rollups: [MinuteRollup]) {
        guard !rollups.isEmpty else { return }
        let w: CheckedContinuation<Void, Never>? = state.withLock { s in
            s.rollups.append(contentsOf: rollups)
            let w = s.wakeup
            s.wakeup = nil
            return w
        }
        w?.resume()
    }

    /// Whether a new submission would be taken at once.
    public var hasRoom: Bool {
        state.withLock { $0.parked.isEmpty && $0.bufferedCount < configuration.bufferCapacity }
    }

    /// A copy of the counters.
    public var statistics: Statistics {
        state.withLock { s in
            var st = s.stats
            st.bufferedSamples = s.bufferedCount
            st.parkedSamples = s.parkedCount
            return st
        }
    }

    /// Stops taking submissions; ``run()`` returns once everything accepted or parked is written.
    public func close() {
        let w: CheckedContinuation<Void, Never>? = state.withLock { s in
            s.closed = true
            let w = s.wakeup
            s.wakeup = nil
            return w
        }
        w?.resume()
    }

    /// The flush loop. Run it once, e.g. in a task group beside the server; it returns after
    /// ``close()`` when everything is drained. Calling it again after it returned writes what was
    /// queued since (e.g. rollups from ``enqueueRollups(_:)``) and returns.
    ///
    /// Up to the store's ``MetricStore/maxConcurrentWrites`` batches are in flight: the next batch
    /// is written while the previous one commits. Folds into the aggregator run one batch after
    /// another in batch order, and submissions complete (are acknowledged) in batch order, whatever
    /// order the store's writes finish in.
    public func run() async {
        let maxInFlight = max(1, store.maxConcurrentWrites)
        var inFlight = Deque<Task<Void, Never>>()
        // Sample counts of the batches in `inFlight` (their folds may not have run yet).
        var inFlightSamples = Deque<Int>()
        var lastFold: Task<[Int], Never>? = nil
        var lastDone: Task<Void, Never>? = nil
        while true {
            let (status, hasBuffered): (WaitStatus, Bool) = state.withLock { s in
                (s.waitStatus, !s.buffered.isEmpty || !s.rollups.isEmpty)
            }
            switch status {
            case .done:
                guard let t = inFlight.popFirst() else { return }
                inFlightSamples.removeFirst()
                await t.value
            case .work:
                // Full, or only parked submissions are waiting (they enter the buffer when a
                // batch completes): wait for the oldest batch in flight.
                if inFlight.count >= maxInFlight || (!hasBuffered && !inFlight.isEmpty) {
                    inFlightSamples.removeFirst()
                    await inFlight.removeFirst().value
                    continue
                }
                if inFlight.isEmpty && configuration.linger > .zero {
                    let small = state.withLock { $0.bufferedCount < configuration.maxBatchSamples && !$0.closed }
                    if small { try? await Task.sleep(for: configuration.linger) }
                }
                let batch = takeBatch()
                let previousFold = lastFold, previousDone = lastDone
                // Fold into the live aggregates while the store writes: the two are independent, and
                // overlapping them keeps the store busy (the fold would otherwise sit between writes).
                // Near the series cap they are not: the fold decides which samples start a series
                // beyond it, and those must not be stored. So when this batch plus the unfolded ones
                // before it could create more series than some shard has room for, the write waits
                // for the fold and leaves the refused samples out.
                let foldFirst = aggregator?.mayRefuseNewSeries(samples: batch.samples.count + inFlightSamples.reduce(0, +)) ?? false
                let fold = Task { [aggregator] () -> [Int] in
                    _ = await previousFold?.value
                    guard let aggregator, !batch.samples.isEmpty else { return [] }
                    return await aggregator.ingest(batch.samples)
                }
                let done = Task { await self.writeAndComplete(batch, fold: fold, foldFirst: foldFirst, after: previousDone) }
                lastFold = fold
                lastDone = done
                inFlight.append(done)
                inFlightSamples.append(batch.samples.count)
            case .idle:
                if let t = inFlight.popFirst() {
                    inFlightSamples.removeFirst()
                    await t.value
                    continue
                }
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    let resumeNow: Bool = state.withLock { s in
                        if s.waitStatus != .idle { return true }
                        s.wakeup = c
                        return false
                    }
                    if resumeNow { c.resume() }
                }
            }
        }
    }

    enum WaitStatus { case work, idle, done }

    /// A batch taken from the buffer.
    struct Taken: Sendable {
        var subs: [Submission]
        var samples: [MetricSample]
        var rollups: [MinuteRollup]
        var sequence: UInt64
    }

    /// Takes whole submissions, up to `maxBatchSamples` (at least one), and the queued rollups.
    private func takeBatch() -> Taken {
        let (subs, rollups, sequence): ([Submission], [MinuteRollup], UInt64) = state.withLock { s in
            var taken: [Submission] = []
            var n = 0
            while let first = s.buffered.first, taken.isEmpty || n + first.samples.count <= configuration.maxBatchSamples {
                n += first.samples.count
                taken.append(s.buffered.removeFirst())
            }
            let r = s.rollups
            s.rollups = []
            let seq = s.nextSequence
            s.nextSequence += 1
            return (taken, r, seq)
        }
        var samples: [MetricSample]
        if subs.count == 1 {
            samples = subs[0].samples
        } else {
            samples = []
            samples.reserveCapacity(subs.reduce(0) { $0 + $1.samples.count })
            for sub in subs { samples.append(contentsOf: sub.samples) }
        }
        return Taken(subs: subs, samples: samples, rollups: rollups, sequence: sequence)
    }

    /// Writes a batch (retrying with backoff until the store takes it), waits for its fold and for
    /// the previous batch's completion, then completes its submissions and frees their room.
    private func writeAndComplete(_ taken: Taken, fold: Task<[Int], Never>, foldFirst: Bool, after previous: Task<Void, Never>?) async {
        var refused: [Int] = []
        var stored = taken.samples
        if foldFirst {
            refused = await fold.value
            if !refused.isEmpty {
                stored = []
                stored.reserveCapacity(taken.samples.count - refused.count)
                var next = 0
                for (i, sample) in taken.samples.enumerated() {
                    if next < refused.count && refused[next] == i { next += 1 } else { stored.append(sample) }
                }
            }
        }
        let batch = StoreBatch(samples: stored, rollups: taken.rollups, sequence: taken.sequence)
        var delay = configuration.retryInitialDelay
        let started = ProcessInfoLite.monotonicNanoseconds()
        var failed = false
        if !batch.isEmpty {
            while true {
                do {
                    try await store.write(batch)
                    break
                } catch {
                    state.withLock { s in
                        s.stats.writeFailures += 1
                        s.stats.lastError = String(describing: error)
                        if !failed { s.failingBatches += 1 }
                    }
                    failed = true
                    // In a task of its own: a cancelled writer task's own sleep would return at
                    // once and turn the backoff into a busy loop against a failing store.
                    let pause = delay
                    await Task.detached { try? await Task.sleep(for: pause) }.value
                    delay = min(delay * 2, configuration.retryMaxDelay)
                }
            }
        }
        let finished = ProcessInfoLite.monotonicNanoseconds()
        // On the overlapped path the fold cannot refuse anything (there was room for every sample);
        // should it anyway, the samples are stored and only the live aggregates miss them.
        if !foldFirst { _ = await fold.value }
        await previous?.value  // acknowledgements in batch order
        let subs = taken.subs
        // Complete, free room, promote parked submissions that now fit.
        let promoted: [Submission] = state.withLock { s in
            s.bufferedCount -= taken.samples.count
            s.stats.samplesWritten += stored.count
            s.stats.samplesRefused += refused.count
            s.stats.rollupsWritten += taken.rollups.count
            if !batch.isEmpty { s.stats.batchesWritten += 1 }
            if failed { s.failingBatches -= 1 }
            if s.failingBatches == 0 { s.stats.lastError = "" }
            s.stats.lastWriteSeconds = Double(finished - started) / 1e9
            if let oldest = subs.first {
                let lag = Double(finished - oldest.acceptedAt) / 1e9
                s.stats.lastFlushLagSeconds = lag
                s.stats.maxFlushLagSeconds = max(s.stats.maxFlushLagSeconds, lag)
            }
            var out: [Submission] = []
            while let first = s.parked.first,
                  s.bufferedCount + first.samples.count <= configuration.bufferCapacity || s.bufferedCount == 0 {
                var sub = s.parked.removeFirst()
                s.parkedCount -= sub.samples.count
                s.bufferedCount += sub.samples.count
                s.stats.samplesAccepted += sub.samples.count
                sub.acceptedAt = finished
                out.append(sub)
                s.buffered.append(Submission(samples: sub.samples, onAccepted: nil, onDurable: sub.onDurable, acceptedAt: finished))
            }
            return out
        }
        if refused.isEmpty {
            for sub in subs { sub.onDurable(.durable) }
        } else {
            // Hand each submission its own refused positions.
            let own = Self.split(refused, into: subs.map(\.samples.count))
            for (sub, positions) in zip(subs, own) {
                sub.onDurable(positions.isEmpty ? .durable : .durableExcept(refused: positions))
            }
        }
        for sub in promoted { sub.onAccepted?() }
    }
}

extension BatchWriter.State {
    var waitStatus: BatchWriter.WaitStatus {
        if !buffered.isEmpty || !rollups.isEmpty { return .work }
        if !parked.isEmpty { return .work }
        return closed ? .done : .idle
    }
}
