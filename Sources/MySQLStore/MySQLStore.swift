#if canImport(Glibc)
import Glibc
#endif
import Logging
import MetricsCore
import Synchronization

/// A durable ``MetricStore`` on MariaDB (10.11) or MySQL (8) through MariaDB Connector/C.
///
/// ## Threads
/// Connector/C blocks, so every call runs on a ``BlockingWorker``: a dedicated thread owning one
/// connection. ``Configuration/writeLanes`` writer lanes (two connections each: large batches are
/// split over both), so the ``BatchWriter`` can have that many batches in flight (batch `n` goes
/// to lane `n % lanes`; acknowledgements are still released in batch order);
/// ``Configuration/readers`` readers for history and warm-up; one maintenance connection
/// (migrations, partitions, retention).
///
/// ## A write
/// 1. Series ids: unknown series are inserted into `rtd_series` (autocommit, idempotent) and their
///    ids cached; the cache is bounded (``Configuration/seriesCacheLimit``; cleared when full).
/// 2. One transaction: a row in `rtd_write_log` for `(writer id, batch sequence)` — if it already
///    exists, an earlier attempt of this batch committed (e.g. the connection died while `COMMIT`'s
///    reply was in flight) and the batch is skipped; the raw samples (array binding on MariaDB,
///    multi-row prepared inserts on MySQL); the minute rollups, upserted, with rows that already
///    existed merged (count/sum/min/max in SQL, sketches in Swift, see `upsertRollups`); the
///    servers' first/last seen.
/// 3. `COMMIT`. Only when it returns does ``write(_:)`` return, and only then does the server
///    acknowledge the samples to their agents.
///
/// A failure rolls back and throws; the ``BatchWriter`` retries the same batch with backoff.
/// A retry after an ambiguous failure is recognised by its write-log row, so a batch is applied
/// exactly once.
public final class MySQLStore: MetricStore {
    /// Settings.
    public struct Configuration: Sendable {
        /// Where the database is.
        public var endpoint: MySQLEndpoint
        /// Days of raw samples kept (whole UTC days; a day partition is dropped once all of it is older). Default 7.
        public var rawRetentionDays: Int
        /// Days of minute rollups kept (deleted in small batches). Default 90.
        public var rollupRetentionDays: Int
        /// How often partitions are prepared and retention applied. Default 10 minutes.
        public var maintenanceInterval: Duration
        /// Day partitions created ahead of today. Default 2.
        public var partitionsAheadDays: Int
        /// How raw samples are inserted.
        public var bulkMode: BulkMode
        /// Rows per bulk execution. Default 10,000 (array binding) — multi-row statements use at most 1,000.
        public var bulkRows: Int
        /// Reader connections for history and warm-up. Default 2.
        public var readers: Int
        /// Most series ids cached in memory; the cache is cleared when it reaches this. Default 2,000,000.
        public var seriesCacheLimit: Int
        /// Batches written concurrently, each lane with its own two connections and series cache:
        /// with 2, the next batch is inserted while the previous one commits. Default 1: on two
        /// cores shared with the database, 2 lanes measured no faster (the database and this
        /// process already use both cores) and doubled the median ack lag; with a database on its
        /// own cores or host, 2 hides the commit latency.
        public var writeLanes: Int
        /// A running instance renews its heartbeat row every ``repairInterval``; one whose heartbeat
        /// is older than this is taken as dead, and its unsealed minutes are rebuilt from raw rows.
        /// Default 60 s.
        public var instanceTimeout: Duration
        /// How long a rollup repair request waits before it is carried out, so the live rollups of
        /// its minute are sealed and written first (the aggregator seals a minute at most about
        /// 65 s after its last sample). Default 120 s.
        public var rollupSettle: Duration
        /// How often heartbeats are renewed, dead instances looked for, and due repairs carried out. Default 10 s.
        public var repairInterval: Duration
        /// How far ahead of the clock sample timestamps may be (the server's `--max-future`), ms:
        /// such a sample keeps its minute open after the batch that brought it, so a dead instance's
        /// batches are looked at this much further back. Default 600,000.
        public var maxFutureMilliseconds: Int64

        /// Creates a configuration.
        public init(endpoint: MySQLEndpoint, rawRetentionDays: Int = 7, rollupRetentionDays: Int = 90,
                    maintenanceInterval: Duration = .seconds(600), partitionsAheadDays: Int = 2,
                    bulkMode: BulkMode = .auto, bulkRows: Int = 10_000, readers: Int = 2, seriesCacheLimit: Int = 2_000_000,
                    writeLanes: Int = 1, instanceTimeout: Duration = .seconds(60), rollupSettle: Duration = .seconds(120),
                    repairInterval: Duration = .seconds(10), maxFutureMilliseconds: Int64 = 600_000) {
            self.maxFutureMilliseconds = max(0, maxFutureMilliseconds)
            self.writeLanes = max(1, writeLanes)
            self.instanceTimeout = instanceTimeout
            self.rollupSettle = rollupSettle
            self.repairInterval = repairInterval
            self.endpoint = endpoint
            self.rawRetentionDays = max(1, rawRetentionDays)
            self.rollupRetentionDays = max(1, rollupRetentionDays)
            self.maintenanceInterval = maintenanceInterval
            self.partitionsAheadDays = max(1, partitionsAheadDays)
            self.bulkMode = bulkMode
            self.bulkRows = max(1, bulkRows)
            self.readers = max(1, readers)
            self.seriesCacheLimit = max(1_000, seriesCacheLimit)
        }
    }

    /// How raw samples are inserted.
    public enum BulkMode: String, Sendable {
        /// Array binding on MariaDB, multi-row statements on MySQL.
        case auto
        /// Prepared statement with `STMT_ATTR_ARRAY_SIZE` (MariaDB only).
        case arrayBinding = "array"
        /// Prepared multi-row `INSERT … VALUES (?,?,?),(?,?,?)…`.
        case multiRow = "multirow"
    }

    /// Counters, shown in `/api/stats` under `store`.
    public struct Statistics: Sendable, Equatable {
        /// Batches committed.
        public var batchesCommitted = 0
        /// Retried batches found already committed and skipped.
        public var duplicateBatchesSkipped = 0
        /// Raw rows inserted.
        public var samplesInserted = 0
        /// Raw samples not inserted because the identical sample (series, timestamp, value) was
        /// stored already (resent lines a crashed instance had committed without acknowledging them).
        public var duplicateSamplesIgnored = 0
        /// Rollup rows upserted.
        public var rollupsUpserted = 0
        /// Stored rollups merged with an incoming one (late data).
        public var rollupsMerged = 0
        /// Series rows created.
        public var seriesCreated = 0
        /// Failed writes.
        public var writeErrors = 0
        /// Connections opened (beyond the first of each worker means reconnects).
        public var connectionsOpened = 0
        /// Maintenance runs completed.
        public var maintenanceRuns = 0
        /// Day partitions of raw samples dropped by retention.
        public var partitionsDropped = 0
        /// Rollup rows deleted by retention.
        public var rollupsExpired = 0
        /// Dead instances (stale heartbeat) whose recent minutes this instance queued for repair.
        public var deadInstancesRecovered = 0
        /// Minutes whose rollups were rebuilt from raw rows.
        public var rollupMinutesRepaired = 0
        /// Rollup rows rebuilt from raw rows.
        public var rollupsRebuilt = 0
        /// Duration of the last commit, seconds.
        public var lastCommitSeconds: Double = 0
        /// Time spent in successful writes, microseconds.
        public var writeMicroseconds = 0
        /// Of that, time the writer thread waited for the database server, microseconds (the rest is
        /// this process preparing rows: series ids, arrays, sketches).
        public var databaseWaitMicroseconds = 0
        /// Last error, empty after a success.
        public var lastError = ""
    }

    private let configuration: Configuration
    private let logger: Logger
    /// One writer lane: a connection for the batch's transaction, a second one for the other half
    /// of a large batch's raw rows (two transactions, so the database works on one while this
    /// process prepares or commits the other), and the series cache the lane's thread owns.
    private struct Lane: Sendable {
        let primary: BlockingWorker
        let secondary: BlockingWorker
        let state: WriterState
    }
    private let lanes: [Lane]
    private var writerWorkers: [BlockingWorker] { Self.workers(of: lanes) }
    private static func workers(of lanes: [Lane]) -> [BlockingWorker] { lanes.flatMap { [$0.primary, $0.secondary] } }
    private let readers: [BlockingWorker]
    private let maintenance: BlockingWorker
    private let stats = Locked(Statistics())
    private let nextReader = Atomic<Int>(0)
    private let serverInfo: String
    private let useArrayBinding: Bool
    private let maintenanceTask: Mutex<Task<Void, Never>?> = Mutex(nil)
    /// Heartbeats and dead-instance detection (its own connection, so a long repair or partition
    /// change never delays a heartbeat).
    private let heartbeatWorker: BlockingWorker
    private let housekeepingTasks: Mutex<[Task<Void, Never>]> = Mutex([])
    private let watermark: RollupWatermark
    /// This host's name, shown in `rtd_instances`.
    private let host = MySQLStore.hostName()
    /// Since when (monotonic ns) this instance's heartbeats have succeeded without a failure.
    private let healthySince = Mutex<UInt64?>(nil)
    private var writerIDs: [[UInt8]] { lanes.map(\.state.writerID) }

    /// Connects, creates or migrates the schema, prepares partitions and applies retention once,
    /// then starts periodic maintenance.
    /// - Throws: ``MySQLError`` when the database cannot be reached or migrated.
    public init(configuration: Configuration, logger: Logger = Logger(label: "mysql-store")) async throws {
        self.configuration = configuration
        self.logger = logger
        let stats = self.stats
        let session: (Connection) throws -> Void = { c in
            try c.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'")
            try c.execute("SET SESSION time_zone = '+00:00'")
            stats.withLock { $0.connectionsOpened += 1 }
        }
        lanes = (0..<configuration.writeLanes).map { i in
            Lane(primary: BlockingWorker(name: "mysql-writer-\(i)a", endpoint: configuration.endpoint, onConnect: session),
                 secondary: BlockingWorker(name: "mysql-writer-\(i)b", endpoint: configuration.endpoint, onConnect: session),
                 state: WriterState())
        }
        readers = (0..<configuration.readers).map { i in
            BlockingWorker(name: "mysql-reader-\(i)", endpoint: configuration.endpoint, onConnect: session)
        }
        heartbeatWorker = BlockingWorker(name: "mysql-heartbeat", endpoint: configuration.endpoint, onConnect: session)
        maintenance = BlockingWorker(name: "mysql-maintenance", endpoint: configuration.endpoint, onConnect: { c in
            try session(c)
            // DDL (partition changes) must not queue in front of ingestion for long.
            try c.execute("SET SESSION lock_wait_timeout = 5")
        })
        let now = ProcessInfoLite.nowMilliseconds()
        watermark = RollupWatermark()
        let (version, isMariaDB, applied): (String, Bool, [Int])
        do {
            (version, isMariaDB, applied) = try await maintenance.run { [configuration] c in
                let applied = try Schema.migrate(c, now: now, rawRetentionDays: configuration.rawRetentionDays,
                                                 aheadDays: configuration.partitionsAheadDays)
                return (c.serverVersion, c.isMariaDB, applied)
            }
        } catch {
            await Self.stopAll(Self.workers(of: lanes) + readers + [heartbeatWorker], maintenance)
            throw error
        }
        serverInfo = version
        switch configuration.bulkMode {
        case .auto: useArrayBinding = isMariaDB
        case .arrayBinding:
            guard isMariaDB else {
                await Self.stopAll(Self.workers(of: lanes) + readers + [heartbeatWorker], maintenance)
                throw MySQLError(code: 0, message: "array binding needs MariaDB; the server is \(version)")
            }
            useArrayBinding = true
        case .multiRow: useArrayBinding = false
        }
        logger.info("MySQL store ready", metadata: [
            "endpoint": "\(configuration.endpoint)", "server": "\(version)",
            "schema": "\(Schema.latestVersion)", "migrated": "\(applied)",
            "bulk": "\(useArrayBinding ? "array binding" : "multi-row")",
        ])
        do {
            try await runMaintenance(now: now)
            let task = periodically(every: configuration.maintenanceInterval, failure: "store maintenance failed") { try await $0.runMaintenance(now: $1) }
            maintenanceTask.withLock { $0 = task }
            try await startHousekeeping(now: now)
        } catch {
            // The database went away during start: stop what started (the caller may retry, and
            // each attempt would otherwise leave its worker threads and connections behind).
            let task = maintenanceTask.withLock { t -> Task<Void, Never>? in
                defer { t = nil }
                return t
            }
            task?.cancel()
            await task?.value
            await Self.stopAll(Self.workers(of: lanes) + readers + [heartbeatWorker], maintenance)
            throw error
        }
    }

    /// A task that runs `body` (with the store and the time) every `interval` until cancelled,
    /// logging failures; it holds the store weakly.
    private func periodically(every interval: Duration, failure: String,
                              _ body: @escaping @Sendable (MySQLStore, Int64) async throws -> Void) -> Task<Void, Never> {
        Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                guard let self, !Task.isCancelled else { return }
                do { try await body(self, ProcessInfoLite.nowMilliseconds()) } catch {
                    self.logger.warning("\(failure)", metadata: ["error": "\(error)"])
                }
            }
        }
    }

    /// Registers this instance's writers and starts the heartbeat and repair loops.
    private func startHousekeeping(now: Int64) async throws {
        let writers = writerIDs, host = self.host
        _ = try await heartbeatWorker.run { c in try RollupRepair.heartbeat(c, writers: writers, host: host, rollupsThrough: now) }
        healthySince.withLock { $0 = ProcessInfoLite.monotonicNanoseconds() }
        let interval = configuration.repairInterval
        let heartbeat = periodically(every: interval, failure: "store heartbeat failed") { try await $0.heartbeatOnce(now: $1) }
        let repairs = periodically(every: interval, failure: "rollup repair failed") { try await $0.repairOnce(now: $1) }
        housekeepingTasks.withLock { $0 = [heartbeat, repairs] }
    }

    /// Renews this instance's heartbeat and claims dead instances (their minutes are queued for
    /// repair). Others are claimed only after this instance's own heartbeats have succeeded for a
    /// whole instance timeout: after a database outage every heartbeat looks stale, and the first
    /// instance back must not take the others for dead before they had a chance to renew theirs.
    public func heartbeatOnce(now: Int64) async throws {
        let writers = writerIDs, through = watermark.value(now: now), host = self.host
        let timeout = Self.milliseconds(configuration.instanceTimeout), settle = Self.milliseconds(configuration.rollupSettle)
        let maxFuture = configuration.maxFutureMilliseconds
        let recreated: Bool
        do {
            recreated = try await heartbeatWorker.run { c in try RollupRepair.heartbeat(c, writers: writers, host: host, rollupsThrough: through) }
        } catch {
            healthySince.withLock { $0 = nil }
            throw error
        }
        if recreated {
            logger.warning("this instance's heartbeat rows were gone (another instance took it for dead while it could not reach the database); registered again")
        }
        let since = healthySince.withLock { h -> UInt64 in
            if h == nil { h = ProcessInfoLite.monotonicNanoseconds() }
            return h!
        }
        guard Int64((ProcessInfoLite.monotonicNanoseconds() - since) / 1_000_000) >= timeout else { return }
        let claimed = try await heartbeatWorker.run { c in
            try RollupRepair.recoverDead(c, mine: writers, timeout: timeout, settle: settle, maxFuture: maxFuture)
        }
        if claimed > 0 {
            stats.withLock { $0.deadInstancesRecovered += claimed }
            logger.warning("found writers of a dead instance; their recent minutes are queued for rollup repair", metadata: ["writers": "\(claimed)"])
        }
    }

    /// Carries out the rollup repairs that are due.
    public func repairOnce(now: Int64) async throws {
        let settle = Self.milliseconds(configuration.rollupSettle)
        let rawCutoff = Schema.dayStart(now) - Int64(configuration.rawRetentionDays) * Schema.dayMilliseconds
        let done = try await maintenance.run { c in try RollupRepair.run(c, now: now, settle: settle, rawCutoff: rawCutoff) }
        if done.minutes > 0 {
            stats.withLock { s in
                s.rollupMinutesRepaired += done.minutes
                s.rollupsRebuilt += done.rollups
            }
            logger.info("rollups rebuilt from raw rows", metadata: ["minutes": "\(done.minutes)", "rollups": "\(done.rollups)"])
        }
    }

    static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func milliseconds(_ d: Duration) -> Int64 {
        d.components.seconds * 1_000 + d.components.attoseconds / 1_000_000_000_000_000
    }

    private static func stopAll(_ r: [BlockingWorker], _ m: BlockingWorker) async {
        for x in r { await x.stop() }
        await m.stop()
    }

    /// A copy of the counters.
    public var statistics: Statistics { stats.withLock { $0 } }

    // MARK: - Writing

    public func write(_ batch: StoreBatch) async throws {
        if batch.isEmpty { return }
        let started = ProcessInfoLite.monotonicNanoseconds()
        watermark.begin(batch.sequence, now: ProcessInfoLite.nowMilliseconds())
        do {
            let lane = lanes[Int(batch.sequence % UInt64(lanes.count))]
            let outcome = try await lane.primary.run { [self] c in try lane.state.write(batch, c, self, second: lane.secondary) }
            let seconds = Double(ProcessInfoLite.monotonicNanoseconds() - started) / 1e9
            watermark.committed(batch.sequence)
            stats.withLock { s in
                if outcome.duplicate {
                    s.duplicateBatchesSkipped += 1
                } else {
                    s.batchesCommitted += 1
                    s.samplesInserted += batch.samples.count - outcome.duplicateSamples
                    s.duplicateSamplesIgnored += outcome.duplicateSamples
                    s.rollupsUpserted += outcome.rollups
                    s.rollupsMerged += outcome.merged
                }
                s.seriesCreated += outcome.newSeries
                s.lastCommitSeconds = seconds
                s.writeMicroseconds += Int(seconds * 1e6)
                s.databaseWaitMicroseconds += Int(outcome.databaseNanoseconds / 1_000)
                s.lastError = ""
            }
        } catch {
            stats.withLock { s in
                s.writeErrors += 1
                s.lastError = String(describing: error)
            }
            throw error
        }
    }

    fileprivate var arrayBinding: Bool { useArrayBinding }
    fileprivate var bulkRows: Int { useArrayBinding ? configuration.bulkRows : min(1_000, configuration.bulkRows) }
    fileprivate var seriesCacheLimit: Int { configuration.seriesCacheLimit }
    /// Lanes: the ``BatchWriter`` keeps this many batches in flight.
    public var maxConcurrentWrites: Int { lanes.count }

    /// Holds this instance's rollup watermark (`rtd_instances.rollups_through`) at the start of
    /// the earliest minute of which the live aggregates hold rollup parts back: no repair
    /// rebuilds that minute (or a later one) before they merge into it.
    public func rollupsHeld(fromMinute: Int64?) {
        watermark.setHeld(fromMinute: fromMinute)
    }
    /// Batches with at least this many samples are split over the lane's two writer connections.
    static let splitThreshold = 16_384

    // MARK: - Reading

    private func reader() -> BlockingWorker {
        readers[nextReader.wrappingAdd(1, ordering: .relaxed).oldValue % readers.count]
    }

    public func history(_ query: HistoryQuery) async throws -> HistoryResult {
        try await reader().run { c in try Self.history(query, c) }
    }

    static func history(_ query: HistoryQuery, _ c: Connection) throws -> HistoryResult {
        var series: [(UInt64, String)] = []
        for row in try c.prepare("SELECT id, labels FROM rtd_series WHERE server_id = ? AND metric_name = ?")
            .select([.text(query.serverID), .text(query.metricName)]) {
            guard let id = row[0].uint64 else { continue }
            let labels = row[1].string ?? ""
            if let wanted = query.labels, wanted != labels { continue }
            series.append((id, labels))
        }
        if query.wantsRaw {
            var raw: [RawPoint] = []
            var tooMany = false
            let limit = query.maxPoints + 1
            let stmt = try c.prepare("SELECT ts, value FROM rtd_samples WHERE series_id = ? AND ts >= ? AND ts < ? ORDER BY ts LIMIT ?")
            for (id, labels) in series where !tooMany {
                for row in try stmt.select([.uint(id), .int(query.from), .int(query.to), .int(Int64(limit))]) {
                    raw.append(RawPoint(timestamp: row[0].int64 ?? 0, value: row[1].double ?? 0, labels: labels))
                }
                if raw.count > query.maxPoints { tooMany = true }
            }
            if !tooMany && (!raw.isEmpty || query.openRollups.isEmpty) {
                raw.sort { $0.timestamp < $1.timestamp }
                return HistoryResult(raw: raw)
            }
        }
        var rollups = query.openRollups
        let stmt = try c.prepare("SELECT minute, sketch FROM rtd_rollups WHERE series_id = ? AND minute >= ? AND minute < ?")
        for (id, labels) in series {
            for row in try stmt.select([.uint(id), .int(MinuteRollup.minute(of: query.from)), .int(query.to)]) {
                guard let minute = row[0].int64, let bytes = row[1].bytes else { continue }
                let sketch = try QuantileSketch(serialized: bytes)
                rollups.append(MinuteRollup(key: SeriesKey(serverID: query.serverID, metricName: query.metricName, labels: labels),
                                            minute: minute, sketch: sketch))
            }
        }
        return HistoryResult.bucketing(rollups, from: query.from, to: query.to, maxPoints: query.maxPoints)
    }

    public func recentRollups(since: Int64) async throws -> [MinuteRollup] {
        try await reader().run { c in
            var out: [MinuteRollup] = []
            let rows = try c.prepare("""
                SELECT s.server_id, s.metric_name, s.labels, r.minute, r.sketch
                FROM rtd_rollups r JOIN rtd_series s ON s.id = r.series_id WHERE r.minute >= ?
                """).select([.int(since)])
            out.reserveCapacity(rows.count)
            for row in rows {
                guard let server = row[0].string, let metric = row[1].string, let minute = row[3].int64,
                      let bytes = row[4].bytes, let sketch = try? QuantileSketch(serialized: bytes) else { continue }
                out.append(MinuteRollup(key: SeriesKey(serverID: server, metricName: metric, labels: row[2].string ?? ""),
                                        minute: minute, sketch: sketch))
            }
            return out
        }
    }

    public func health() async -> StoreHealth {
        let s = statistics
        return StoreHealth(
            healthy: s.lastError.isEmpty,
            backend: "mysql",
            detail: s.lastError.isEmpty ? "\(configuration.endpoint) (\(serverInfo))" : "\(configuration.endpoint): \(s.lastError)",
            counters: [
                "batches_committed": s.batchesCommitted, "duplicate_batches_skipped": s.duplicateBatchesSkipped,
                "duplicate_samples_ignored": s.duplicateSamplesIgnored,
                "samples_inserted": s.samplesInserted, "rollups_upserted": s.rollupsUpserted, "rollups_merged": s.rollupsMerged,
                "series_created": s.seriesCreated, "write_errors": s.writeErrors, "connections_opened": s.connectionsOpened,
                "maintenance_runs": s.maintenanceRuns, "partitions_dropped": s.partitionsDropped,
                "rollups_expired": s.rollupsExpired, "dead_instances_recovered": s.deadInstancesRecovered,
                "rollup_minutes_repaired": s.rollupMinutesRepaired, "rollups_rebuilt": s.rollupsRebuilt, "last_commit_us": Int(s.lastCommitSeconds * 1e6),
                "write_us_total": s.writeMicroseconds, "database_wait_us_total": s.databaseWaitMicroseconds,
            ])
    }

    public func close() async throws {
        let task = maintenanceTask.withLock { t -> Task<Void, Never>? in
            defer { t = nil }
            return t
        }
        task?.cancel()
        await task?.value
        let loops = housekeepingTasks.withLock { t -> [Task<Void, Never>] in
            defer { t = [] }
            return t
        }
        for t in loops { t.cancel() }
        for t in loops { await t.value }
        // A clean stop: every rollup is written (the engine sealed and flushed them before closing the
        // store), so this instance's minutes need no repair.
        let writers = writerIDs
        do { try await heartbeatWorker.run { c in try RollupRepair.unregister(c, writers: writers) } } catch {
            logger.warning("could not remove the instance's heartbeat rows; another instance will take it as dead and repair its recent minutes",
                           metadata: ["error": "\(error)"])
        }
        await Self.stopAll(writerWorkers + readers + [heartbeatWorker], maintenance)
    }

    // MARK: - Maintenance

    /// Prepares day partitions ahead, drops raw-sample partitions past retention, deletes expired
    /// rollups and write-log rows. Runs at start and every ``Configuration/maintenanceInterval``;
    /// public so operators and tests can run it at a chosen time.
    public func runMaintenance(now: Int64) async throws {
        let c = configuration
        let (dropped, expired) = try await maintenance.run { conn in
            try Maintenance.run(conn, now: now, rawRetentionDays: c.rawRetentionDays,
                                rollupRetentionDays: c.rollupRetentionDays, aheadDays: c.partitionsAheadDays,
                                recoveryWindow: 2 * Self.milliseconds(c.rollupSettle) + c.maxFutureMilliseconds)
        }
        stats.withLock { s in
            s.maintenanceRuns += 1
            s.partitionsDropped += dropped
            s.rollupsExpired += expired
        }
        if dropped > 0 || expired > 0 {
            logger.info("retention applied", metadata: ["partitions_dropped": "\(dropped)", "rollups_deleted": "\(expired)"])
        }
    }

    /// Closes the writer's connection (the next write reconnects). For fault-injection tests.
    public func dropWriterConnection() {
        for w in writerWorkers { w.dropConnection() }
    }
}

/// State only the writer thread touches.
private final class WriterState: @unchecked Sendable {
    // @unchecked: used only from the writer BlockingWorker's thread.
    typealias SeriesEntry = SeriesIDCache.Entry
    var seriesIDs = SeriesIDCache()
    var serverNames: [String] = []
    var serverIndex: [String: Int32] = [:]
    /// Per server slot: (first, last) sample time already written to `rtd_servers` (`Int64.max`, `Int64.min` if never).
    var serverSeen: [(first: Int64, last: Int64)] = []

    func serverSlot(_ id: String) -> Int32 {
        if let i = serverIndex[id] { return i }
        let i = Int32(serverNames.count)
        serverNames.append(id)
        serverIndex[id] = i
        serverSeen.append((Int64.max, Int64.min))
        return i
    }
    /// This process's writer identity in `rtd_write_log`.
    let writerID: [UInt8] = (0..<16).map { _ in UInt8.random(in: 0...255) }

    struct Outcome: Sendable {
        var databaseNanoseconds: UInt64 = 0
        var duplicate = false
        /// Raw samples not inserted because the identical sample was stored already (a resend).
        var duplicateSamples = 0
        var rollups = 0
        var merged = 0
        var newSeries = 0
    }

    /// How far a server's last-seen time may lag in `rtd_servers` before it is rewritten, ms.
    static let lastSeenGranularity: Int64 = 10_000

    func write(_ batch: StoreBatch, _ c: Connection, _ store: MySQLStore, second: BlockingWorker) throws -> Outcome {
        let waited = c.clock.nanoseconds
        var outcome = try writeTimed(batch, c, store, secondWorker: second)
        outcome.databaseNanoseconds = c.clock.nanoseconds &- waited
        return outcome
    }

    private func writeTimed(_ batch: StoreBatch, _ c: Connection, _ store: MySQLStore, secondWorker: BlockingWorker) throws -> Outcome {
        var outcome = Outcome()
        let now = ProcessInfoLite.nowMilliseconds()
        // Several rollups of one series and minute in a batch (a sealed minute and late data) are merged first.
        var rollupIndex: [SeriesMinute: Int] = [:]
        var rollups: [MinuteRollup] = []
        for r in batch.rollups where !r.sketch.isEmpty {
            let k = SeriesMinute(key: r.key, minute: r.minute)
            if let i = rollupIndex[k] { rollups[i].sketch.merge(r.sketch) } else {
                rollupIndex[k] = rollups.count
                rollups.append(r)
            }
        }
        if seriesIDs.count + batch.samples.count + rollups.count > store.seriesCacheLimit {
            seriesIDs.removeAll()
            serverNames.removeAll(keepingCapacity: true)
            serverIndex.removeAll(keepingCapacity: true)
            serverSeen.removeAll(keepingCapacity: true)
        }
        // 1. Series ids (autocommit, outside the batch's transaction: series rows are idempotent
        //    metadata and the cache must never hold an id whose insert was rolled back).
        // One pass over the samples: series id and server slot per sample, and the keys not cached yet.
        let samples = batch.samples
        let n = samples.count
        var ids = [UInt64](repeating: 0, count: n)
        var slots = [Int32](repeating: 0, count: n)
        var unresolved: [Int] = []
        seriesIDs.resolve(samples, ids: &ids, servers: &slots, unresolved: &unresolved)
        var missing: [SeriesKey] = []
        var missingSet = Set<SeriesKey>()
        for p in unresolved {
            let k = samples[p].seriesKey
            if missingSet.insert(k).inserted { missing.append(k) }
        }
        for r in rollups where seriesIDs[r.key] == nil && missingSet.insert(r.key).inserted {
            missing.append(r.key)
        }
        if !missing.isEmpty {
            outcome.newSeries = try resolve(missing, c, store, now: now)
            for p in unresolved {
                guard let e = seriesIDs[samples[p].seriesKey] else { throw MySQLError(code: 0, message: "no id for series \(samples[p].seriesKey)") }
                ids[p] = e.id
                slots[p] = e.server
            }
        }

        // 2. The batch: one transaction, or two when it is large (the second half of the raw
        //    samples on the second connection, in parallel). Each has its own write-log row, so a
        //    retry skips whichever half committed before.
        var split = samples.count
        var second: BlockingWorker.Pending<(duplicate: Bool, ignored: Int)>? = nil
        if samples.count >= MySQLStore.splitThreshold {
            split = samples.count / 2
            let tailIDs = Array(ids[split...])
            let tail = samples[split...]
            let writerID = self.writerID, sequence = batch.sequence | (1 << 63), rows = store.bulkRows, array = store.arrayBinding
            second = secondWorker.start { c2 in
                try Self.writeSamplesOnly(c2, writerID: writerID, sequence: sequence, ids: tailIDs, tail: tail,
                                          rowsPerExecute: rows, arrayBinding: array, now: now)
            }
        }
        var firstDuplicate = false
        var failure: (any Error)? = nil
        do {
            try c.execute("START TRANSACTION")
            firstDuplicate = try Self.alreadyWritten(c, writerID: writerID, sequence: batch.sequence, samples: split,
                                                     rollups: rollups.count, minutes: RollupRepair.minutesText(samples[..<split]), now: now)
            if firstDuplicate {
                try c.execute("ROLLBACK")
            } else {
                let inserted = try Self.insertSamples(ids[..<split], samples[..<split].map(\.timestamp), samples[..<split].map(\.value), c,
                                                      rowsPerExecute: store.bulkRows, arrayBinding: store.arrayBinding)
                outcome.duplicateSamples = split - inserted
                if inserted < split { try RollupRepair.requestForResends(c, samples[..<split]) }
                let (upserted, merged) = try upsertRollups(rollups, c, store)
                outcome.rollups = upserted
                outcome.merged = merged
                let servers = try upsertServers(samples, slots, c, store)
                try c.execute("COMMIT")
                for (slot, seen) in servers { serverSeen[Int(slot)] = seen }
            }
        } catch {
            _ = try? c.execute("ROLLBACK")
            failure = error
        }
        // Always collect the second half before returning or throwing.
        var secondDuplicate = true
        if let second {
            switch second.wait() {
            case .success(let r):
                secondDuplicate = r.duplicate
                if failure == nil { outcome.duplicateSamples += r.ignored }
            case .failure(let e): if failure == nil { failure = e }
            }
        }
        if let failure { throw failure }
        outcome.duplicate = firstDuplicate && secondDuplicate
        return outcome
    }

    /// Inserts the write-log row of `(writerID, sequence)` as the first statement of a batch's
    /// transaction. Returns `true` when the row already exists: that batch (or half) committed on
    /// an earlier attempt, and the caller rolls back instead of applying it again.
    static func alreadyWritten(_ c: Connection, writerID: [UInt8], sequence: UInt64, samples: Int, rollups: Int, minutes: [UInt8],
                               now: Int64) throws -> Bool {
        do {
            try c.prepare("INSERT INTO rtd_write_log (writer, sequence, written_at, samples, rollups, minutes) VALUES (?, ?, ?, ?, ?, ?)")
                .execute([.blob(writerID), .uint(sequence), .int(now), .int(Int64(samples)), .int(Int64(rollups)),
                          minutes.isEmpty ? .null : .blob(minutes)])
            return false
        } catch let e as MySQLError where e.isDuplicateKey {
            return true
        }
    }

    /// The second half of a large batch: write-log row, raw samples, commit. Returns whether this
    /// half had been committed before (a retry), and how many of its samples were already stored.
    static func writeSamplesOnly(_ c: Connection, writerID: [UInt8], sequence: UInt64, ids: [UInt64], tail: ArraySlice<MetricSample>,
                                 rowsPerExecute: Int, arrayBinding: Bool, now: Int64) throws -> (duplicate: Bool, ignored: Int) {
        try c.execute("START TRANSACTION")
        do {
            if try alreadyWritten(c, writerID: writerID, sequence: sequence, samples: ids.count, rollups: 0,
                                  minutes: RollupRepair.minutesText(tail), now: now) {
                try c.execute("ROLLBACK")
                return (true, 0)
            }
            let inserted = try insertSamples(ids[...], tail.map(\.timestamp), tail.map(\.value), c, rowsPerExecute: rowsPerExecute,
                                             arrayBinding: arrayBinding)
            if inserted < ids.count { try RollupRepair.requestForResends(c, tail) }
            try c.execute("COMMIT")
            return (false, ids.count - inserted)
        } catch {
            _ = try? c.execute("ROLLBACK")
            throw error
        }
    }

    /// Finds or creates the ids of `keys`: look up first (after a restart every series exists
    /// already, and a read-only lookup costs no commit), insert only what is missing (one bulk
    /// insert, committed on its own: series rows are idempotent metadata), then look those up.
    private func resolve(_ keys: [SeriesKey], _ c: Connection, _ store: MySQLStore, now: Int64) throws -> Int {
        try lookUp(keys, c)
        let missing = keys.filter { seriesIDs[$0] == nil }
        guard !missing.isEmpty else { return 0 }
        var created = 0
        let chunk = 5_000
        var i = 0
        while i < missing.count {
            let part = missing[i..<min(i + chunk, missing.count)]
            i += chunk
            let insertSQL = "INSERT INTO rtd_series (server_id, metric_name, labels, first_seen) VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE id = id"
            if store.arrayBinding {
                created += Int(try c.prepare(insertSQL).executeBulk([
                    .text(part.map(\.serverID)), .text(part.map(\.metricName)), .text(part.map(\.labels)),
                    .int64([Int64](repeating: now, count: part.count)),
                ]))
            } else {
                var j = part.startIndex
                while j < part.endIndex {
                    let sub = part[j..<min(j + 500, part.endIndex)]
                    j += 500
                    let sql = "INSERT INTO rtd_series (server_id, metric_name, labels, first_seen) VALUES "
                        + valueRows(sub.count, columns: 4) + " ON DUPLICATE KEY UPDATE id = id"
                    var values: [SQLValue] = []
                    for k in sub { values += [.text(k.serverID), .text(k.metricName), .text(k.labels), .int(now)] }
                    created += Int(try c.prepare(sql).execute(values))
                }
            }
        }
        try lookUp(missing, c)
        for k in missing where seriesIDs[k] == nil {
            throw MySQLError(code: 0, message: "series \(k) was inserted but cannot be found")
        }
        return created
    }

    /// Caches the ids of those `keys` that exist, looked up by the hash the unique key uses. The
    /// statement always has `chunk` slots (the last key repeats) so it is prepared once.
    private func lookUp(_ keys: [SeriesKey], _ c: Connection) throws {
        let chunk = 256
        let slot = "UNHEX(SHA2(CONCAT_WS(0x00, ?, ?, ?), 256))"
        let selectSQL = "SELECT id, server_id, metric_name, labels FROM rtd_series WHERE key_hash IN ("
            + Array(repeating: slot, count: chunk).joined(separator: ", ") + ")"
        var i = 0
        while i < keys.count {
            let part = keys[i..<min(i + chunk, keys.count)]
            i += chunk
            var values: [SQLValue] = []
            values.reserveCapacity(chunk * 3)
            for j in 0..<chunk {
                let k = part[part.startIndex + min(j, part.count - 1)]
                values += [.text(k.serverID), .text(k.metricName), .text(k.labels)]
            }
            for row in try c.prepare(selectSQL).select(values) {
                guard let id = row[0].uint64, let s = row[1].string, let m = row[2].string else { continue }
                seriesIDs.insert(SeriesKey(serverID: s, metricName: m, labels: row[3].string ?? ""), SeriesEntry(id: id, server: serverSlot(s)))
            }
        }
    }

    /// Inserts raw samples. `INSERT IGNORE` on the primary key `(series_id, ts, value)`: a sample
    /// already stored (an agent resending lines a crashed instance had committed without
    /// acknowledging them) is skipped, not stored twice. Every `ts` falls into a partition (`p_old` and
    /// `p_future` cover both ends), so the only row IGNORE can skip is such a duplicate.
    /// - Returns: rows inserted.
    @discardableResult
    static func insertSamples(_ ids: ArraySlice<UInt64>, _ ts: [Int64], _ values: [Double], _ c: Connection,
                              rowsPerExecute per: Int, arrayBinding: Bool) throws -> Int {
        var inserted = 0
        var start = 0
        let n = ts.count
        while start < n {
            let end = min(start + per, n)
            let idPart = Array(ids[(ids.startIndex + start)..<(ids.startIndex + end)])
            if arrayBinding {
                inserted += try Int(c.prepare("INSERT IGNORE INTO rtd_samples (series_id, ts, value) VALUES (?, ?, ?)")
                    .executeBulk([.uint64(idPart), .int64(Array(ts[start..<end])), .double(Array(values[start..<end]))]))
            } else {
                let sql = "INSERT IGNORE INTO rtd_samples (series_id, ts, value) VALUES "
                    + valueRows(end - start, columns: 3)
                var params: [SQLValue] = []
                params.reserveCapacity((end - start) * 3)
                for k in 0..<(end - start) { params += [.uint(idPart[k]), .int(ts[start + k]), .double(values[start + k])] }
                inserted += try Int(c.prepare(sql).execute(params))
            }
            start = end
        }
        return inserted
    }

    /// Inserts the batch's rollups; where a row for the same series and minute exists (late
    /// data, a retry after a crash, another writer), count/sum/min/max are merged by SQL and the
    /// incoming sketch is parked in `incoming` with `merge_pending = 1`; those rows (found through
    /// their index, locked by the upsert already) then get the merged sketch. Both steps are in the
    /// batch's transaction, so no committed row is ever half-merged. The common case (all rows
    /// new) costs one bulk statement and one empty indexed lookup.
    private func upsertRollups(_ rollups: [MinuteRollup], _ c: Connection, _ store: MySQLStore) throws -> (Int, Int) {
        guard !rollups.isEmpty else { return (0, 0) }
        let ids = rollups.map { seriesIDs[$0.key]!.id }
        let columns = "(series_id, minute, sample_count, value_sum, value_min, value_max, sketch)"
        let onDuplicate = """
             ON DUPLICATE KEY UPDATE sample_count = sample_count + VALUES(sample_count), value_sum = \(MySQLStore.saturatingSumSQL),
            value_min = LEAST(value_min, VALUES(value_min)), value_max = GREATEST(value_max, VALUES(value_max)),
            incoming = VALUES(sketch), merge_pending = 1
            """
        var i = 0
        let per = store.arrayBinding ? 5_000 : 500
        while i < rollups.count {
            let end = min(i + per, rollups.count)
            let part = rollups[i..<end]
            let partIDs = ids[i..<end]
            i = end
            if store.arrayBinding {
                try c.prepare("INSERT INTO rtd_rollups \(columns) VALUES (?, ?, ?, ?, ?, ?, ?)" + onDuplicate).executeBulk([
                    .uint64(Array(partIDs)), .int64(part.map(\.minute)), .uint64(part.map(\.count)),
                    .double(part.map { MySQLStore.storableSum($0.sum) }), .double(part.map(\.min)), .double(part.map(\.max)),
                    .blob(part.map { $0.sketch.serialized() }),
                ])
            } else {
                let sql = "INSERT INTO rtd_rollups \(columns) VALUES "
                    + valueRows(part.count, columns: 7) + onDuplicate
                var values: [SQLValue] = []
                values.reserveCapacity(part.count * 7)
                for (id, r) in zip(partIDs, part) {
                    values += [.uint(id), .int(r.minute), .uint(r.count), .double(MySQLStore.storableSum(r.sum)), .double(r.min), .double(r.max), .blob(r.sketch.serialized())]
                }
                try c.prepare(sql).execute(values)
            }
        }
        // Rows that existed: merge the sketches.
        var merged: [(UInt64, Int64, [UInt8])] = []
        for row in try c.prepare("SELECT series_id, minute, sketch, incoming FROM rtd_rollups WHERE merge_pending = 1 FOR UPDATE").select([]) {
            guard let id = row[0].uint64, let minute = row[1].int64, let stored = row[2].bytes, let incoming = row[3].bytes else { continue }
            var sketch = try QuantileSketch(serialized: stored)
            sketch.merge(try QuantileSketch(serialized: incoming))
            merged.append((id, minute, sketch.serialized()))
        }
        if !merged.isEmpty {
            let update = "UPDATE rtd_rollups SET sketch = ?, incoming = NULL, merge_pending = NULL WHERE series_id = ? AND minute = ?"
            if store.arrayBinding {
                try c.prepare(update).executeBulk([.blob(merged.map(\.2)), .uint64(merged.map(\.0)), .int64(merged.map(\.1))])
            } else {
                for m in merged { try c.prepare(update).execute([.blob(m.2), .uint(m.0), .int(m.1)]) }
            }
        }
        return (rollups.count, merged.count)
    }

    /// Upserts first/last seen for servers whose stored times are missing or stale by more than
    /// ``lastSeenGranularity``. Returns the new values to cache once the transaction commits.
    private func upsertServers(_ samples: [MetricSample], _ slots: [Int32], _ c: Connection, _ store: MySQLStore) throws -> [(Int32, (first: Int64, last: Int64))] {
        guard !samples.isEmpty else { return [] }
        var first = [Int64](repeating: .max, count: serverNames.count)
        var last = [Int64](repeating: .min, count: serverNames.count)
        var newest = [Int](repeating: 0, count: serverNames.count)
        var touched: [Int32] = []
        for p in 0..<samples.count {
            let sv = Int(slots[p])
            let ts = samples[p].timestamp
            if first[sv] == .max { touched.append(Int32(sv)) }
            if ts < first[sv] { first[sv] = ts }
            if ts >= last[sv] { last[sv] = ts; newest[sv] = p }
        }
        var rows: [(slot: Int32, first: Int64, last: Int64, labels: String)] = []
        for sv in touched {
            let i = Int(sv)
            let seen = serverSeen[i]
            if first[i] >= seen.first && last[i] < seen.last &+ Self.lastSeenGranularity && seen.last != .min { continue }
            rows.append((sv, first[i], last[i], samples[newest[i]].labels))
        }
        guard !rows.isEmpty else { return [] }
        rows.sort { serverNames[Int($0.slot)] < serverNames[Int($1.slot)] }  // a stable lock order across writers
        let sql = """
            INSERT INTO rtd_servers (server_id, first_seen, last_seen, labels) VALUES (?, ?, ?, ?)
            ON DUPLICATE KEY UPDATE first_seen = LEAST(first_seen, VALUES(first_seen)),
            labels = IF(VALUES(last_seen) >= last_seen, VALUES(labels), labels),
            last_seen = GREATEST(last_seen, VALUES(last_seen))
            """
        if store.arrayBinding {
            try c.prepare(sql).executeBulk([.text(rows.map { serverNames[Int($0.slot)] }), .int64(rows.map(\.first)),
                                            .int64(rows.map(\.last)), .text(rows.map(\.labels))])
        } else {
            for r in rows { try c.prepare(sql).execute([.text(serverNames[Int(r.slot)]), .int(r.first), .int(r.last), .text(r.labels)]) }
        }
        return rows.map { r in
            let old = serverSeen[Int(r.slot)]
            return (r.slot, (min(r.first, old.first), max(r.last, old.last)))
        }
    }
}

/// `(?, ?, …), (?, ?, …), …`: the placeholder rows of a prepared multi-row `INSERT`.
func valueRows(_ rows: Int, columns: Int) -> String {
    let row = "(" + Array(repeating: "?", count: columns).joined(separator: ", ") + ")"
    return Array(repeating: row, count: rows).joined(separator: ", ")
}

/// A mutex in a class, so closures can share it.
extension MySQLStore {
    /// A sum as a `DOUBLE` column takes it: finite values of +-1e308 add up to infinity, which
    /// MariaDB refuses ("Out of range value", 1264), and a batch the database always refuses
    /// blocked every batch after it. Sums saturate at the largest finite double (the JSON API
    /// already shows a non-finite sum as null); a NaN (+inf and -inf merged) becomes 0.
    static func storableSum(_ sum: Double) -> Double {
        sum.isNaN ? 0 : Swift.min(Swift.max(sum, -.greatestFiniteMagnitude), .greatestFiniteMagnitude)
    }

    /// `value_sum + VALUES(value_sum)`, saturating like ``storableSum(_:)``: the halves are added
    /// (which cannot overflow), clamped to half the largest double and doubled, which is exact
    /// for any sum that does not overflow (a subnormal sum may lose its last bit). A plain
    /// addition past the largest double fails the statement ("DOUBLE value is out of range", 1690).
    static let saturatingSumSQL = "LEAST(GREATEST(value_sum / 2 + VALUES(value_sum) / 2, -8.988465674311579e307), 8.988465674311579e307) * 2"
}

final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<R: Sendable>(_ body: (inout sending Value) throws -> sending R) rethrows -> R { try mutex.withLock(body) }
}

private struct SeriesMinute: Hashable {
    var key: SeriesKey
    var minute: Int64
}
