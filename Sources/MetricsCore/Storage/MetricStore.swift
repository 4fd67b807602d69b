/// What a storage backend receives in one write: raw samples and minute rollups.
public struct StoreBatch: Sendable {
    /// Raw samples, in arrival order.
    public var samples: [MetricSample]
    /// Minute rollups to merge into what the store already holds for the same series and minute.
    public var rollups: [MinuteRollup]
    /// The batch's number in its writer: increasing, and the same on every retry of the same batch.
    /// Together with a per-process identity a store can make writes idempotent (a retry after
    /// an ambiguous failure, such as a connection lost during `COMMIT`, is recognised and not
    /// applied twice). ``MySQLStore`` does this.
    public var sequence: UInt64

    /// Creates a batch.
    public init(samples: [MetricSample] = [], rollups: [MinuteRollup] = [], sequence: UInt64 = 0) {
        self.samples = samples
        self.rollups = rollups
        self.sequence = sequence
    }

    /// Whether the batch holds nothing.
    public var isEmpty: Bool { samples.isEmpty && rollups.isEmpty }
}

/// How a store is doing, for `/health` and `/api/stats`.
public struct StoreHealth: Sendable, Equatable, Codable {
    /// `true` when the last operation succeeded.
    public var healthy: Bool
    /// The backend's name, e.g. `memory` or `mysql`.
    public var backend: String
    /// Human-readable detail (last error, capacity use).
    public var detail: String
    /// Raw samples the store holds now (when it can tell cheaply), else `nil`.
    public var storedSamples: Int?
    /// Minute rollups the store holds now (when it can tell cheaply), else `nil`.
    public var storedRollups: Int?
    /// Backend-specific counters (e.g. `reconnects`, `duplicate_batches_skipped`), shown in `/api/stats`.
    public var counters: [String: Int]

    /// Creates a health report.
    public init(healthy: Bool, backend: String, detail: String = "", storedSamples: Int? = nil, storedRollups: Int? = nil,
                counters: [String: Int] = [:]) {
        self.healthy = healthy
        self.backend = backend
        self.detail = detail
        self.storedSamples = storedSamples
        self.storedRollups = storedRollups
        self.counters = counters
    }
}

/// A storage backend for samples and minute rollups.
///
/// Conform to plug in your own storage; ``MemoryStore`` is the embedded default.
/// The ``BatchWriter`` is the only caller of ``write(_:)``. It calls it concurrently only up to
/// ``maxConcurrentWrites`` times (default 1: never concurrently), with consecutive
/// ``StoreBatch/sequence`` numbers, and acknowledges batches in sequence order whatever order
/// the writes finish in.
///
/// - Important: When ``write(_:)`` returns, every sample and rollup in the batch must be durable
///   by the store's own standard: the server acknowledges the samples to their agents right after.
///   When it throws, nothing of the batch may be considered written; the writer retries the same
///   batch (with backoff) until it succeeds, so a write must be safe to repeat after a failure
///   (rollup merges of a failed attempt must not have been applied).
public protocol MetricStore: Sendable {
    /// Persists a batch. See the type's contract.
    func write(_ batch: StoreBatch) async throws
    /// History for one server's metric: minute rollups merged into buckets, or raw samples when
    /// the query allows them (``HistoryQuery/raw``) and the store keeps them.
    func history(_ query: HistoryQuery) async throws -> HistoryResult
    /// Recent minute rollups of every series since `since` (epoch ms), used to warm the live
    /// aggregates after a restart. Stores that cannot answer return `[]`.
    func recentRollups(since: Int64) async throws -> [MinuteRollup]
    /// Current health.
    func health() async -> StoreHealth
    /// Called once at shutdown after the last write.
    func close() async throws
    /// How many ``write(_:)`` calls may be in flight at once (≥ 1). A store that writes batches
    /// on independent connections can take more than one, so the database works on the next
    /// batch while the previous one commits.
    var maxConcurrentWrites: Int { get }
    /// Called after every tick: the live aggregates hold rollup parts back (late samples of a
    /// minute already stored, and what arrived for a minute after part of it was stored), the
    /// earliest of minute `fromMinute` (epoch ms of its start; `nil`: none held). They reach
    /// ``write(_:)`` later, within about a minute, as ordinary rollups to merge. A store that
    /// rebuilds rollups from raw rows must not rebuild a minute such a part can still merge into
    /// (its samples would be counted twice).
    func rollupsHeld(fromMinute: Int64?)
}

extension MetricStore {
    /// Default: no warm-up data.
    public func recentRollups(since: Int64) async throws -> [MinuteRollup] { [] }
    /// Default: nothing to close.
    public func close() async throws {}
    /// Default: one write at a time.
    public var maxConcurrentWrites: Int { 1 }
    /// Default: ignored (the store never rebuilds rollups).
    public func rollupsHeld(fromMinute: Int64?) {}
}
