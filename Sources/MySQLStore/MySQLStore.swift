import Logging
import MetricsCore
import Synchronization

/// A durable ``MetricStore`` on MariaDB (10.11) or MySQL (8) through MariaDB Connector/C.
///
/// ## Threads
/// Connector/C blocks, so every call runs on a ``BlockingWorker``: a dedicated thread owning one
/// connection. One writer (the ``BatchWriter`` never writes concurrently), ``Configuration/readers``
/// readers for history and warm-up, and one maintenance connection (migrations, partitions, retention).
///
/// ## A write
/// 1. Series ids: unknown series are inserted into `rtd_series` (autocommit, idempotent) and their
///    ids cached; the cache is bounded (``Configuration/seriesCacheLimit``; cleared when full).
/// 2. One transaction: a row in `rtd_write_log` for `(writer id, batch sequence)` — if it already
///    exists, an earlier attempt of this batch committed (e.g. the connection died while `COMMIT`'s
///    reply was in flight) and the batch is skipped; the raw samples (array binding on MariaDB,
///    multi-row prepared inserts on MySQL); the minute rollups, merged with what is stored
///    (`SELECT … FOR UPDATE`, merge the sketches, upsert); the servers' first/last seen.
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

        /// Creates a configuration.
        public init(endpoint: MySQLEndpoint, rawRetentionDays: Int = 7, rollupRetentionDays: Int = 90,
                    maintenanceInterval: Duration = .seconds(600), partitionsAheadDays: Int = 2,
                    bulkMode: BulkMode = .auto, bulkRows: Int = 10_000, readers: Int = 2, seriesCacheLimit: Int = 2_000_000) {
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
        /// Duration of the last commit, seconds.
        public var lastCommitSeconds: Double = 0
        /// Last error, empty after a success.
        public var lastError = ""
    }

    private let configuration: Configuration
    private let logger: Logger
    private let writer: BlockingWorker
    private let readers: [BlockingWorker]
    private let maintenance: BlockingWorker
    private let writerState: WriterState
    private let stats = Locked(Statistics())
    private let nextReader = Atomic<Int>(0)
    private let serverInfo: String
    private let useArrayBinding: Bool
    private let maintenanceTask: Mutex<Task<Void, Never>?> = Mutex(nil)

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
        writer = BlockingWorker(name: "mysql-writer", endpoint: configuration.endpoint, onConnect: session)
        readers = (0..<configuration.readers).map { i in
            BlockingWorker(name: "mysql-reader-\(i)", endpoint: configuration.endpoint, onConnect: session)
        }
        maintenance = BlockingWorker(name: "mysql-maintenance", endpoint: configuration.endpoint, onConnect: { c in
            try session(c)
            // DDL (partition changes) must not queue in front of ingestion for long.
            try c.execute("SET SESSION lock_wait_timeout = 5")
        })
        writerState = WriterState()
        let now = ProcessInfoLite.nowMilliseconds()
        let (version, isMariaDB, applied): (String, Bool, [Int])
        do {
            (version, isMariaDB, applied) = try await maintenance.run { [configuration] c in
                let applied = try Schema.migrate(c, now: now, rawRetentionDays: configuration.rawRetentionDays,
                                                 aheadDays: configuration.partitionsAheadDays)
                return (c.serverVersion, c.isMariaDB, applied)
            }
        } catch {
            await Self.stopAll(writer, readers, maintenance)
            throw error
        }
        serverInfo = version
        switch configuration.bulkMode {
        case .auto: useArrayBinding = isMariaDB
        case .arrayBinding:
            guard isMariaDB else {
                await Self.stopAll(writer, readers, maintenance)
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
        try await runMaintenance(now: now)
        let interval = configuration.maintenanceInterval
        let task = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                guard let self, !Task.isCancelled else { return }
                do {
                    try await self.runMaintenance(now: ProcessInfoLite.nowMilliseconds())
                } catch {
                    self.logger.warning("store maintenance failed", metadata: ["error": "\(error)"])
                }
            }
        }
        maintenanceTask.withLock { $0 = task }
    }

    private static func stopAll(_ w: BlockingWorker, _ r: [BlockingWorker], _ m: BlockingWorker) async {
        await w.stop()
        for x in r { await x.stop() }
        await m.stop()
    }

    /// A copy of the counters.
    public var statistics: Statistics { stats.withLock { $0 } }

    // MARK: - Writing

    public func write(_ batch: StoreBatch) async throws {
        if batch.isEmpty { return }
        let started = ProcessInfoLite.monotonicNanoseconds()
        do {
            let outcome = try await writer.run { [self] c in try writerState.write(batch, c, self) }
            let seconds = Double(ProcessInfoLite.monotonicNanoseconds() - started) / 1e9
            stats.withLock { s in
                if outcome.duplicate {
                    s.duplicateBatchesSkipped += 1
                } else {
                    s.batchesCommitted += 1
                    s.samplesInserted += batch.samples.count
                    s.rollupsUpserted += outcome.rollups
                    s.rollupsMerged += outcome.merged
                }
                s.seriesCreated += outcome.newSeries
                s.lastCommitSeconds = seconds
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
                "samples_inserted": s.samplesInserted, "rollups_upserted": s.rollupsUpserted, "rollups_merged": s.rollupsMerged,
                "series_created": s.seriesCreated, "write_errors": s.writeErrors, "connections_opened": s.connectionsOpened,
                "maintenance_runs": s.maintenanceRuns, "partitions_dropped": s.partitionsDropped,
                "rollups_expired": s.rollupsExpired, "last_commit_us": Int(s.lastCommitSeconds * 1e6),
            ])
    }

    public func close() async throws {
        let task = maintenanceTask.withLock { t -> Task<Void, Never>? in
            defer { t = nil }
            return t
        }
        task?.cancel()
        await task?.value
        await Self.stopAll(writer, readers, maintenance)
    }

    // MARK: - Maintenance

    /// Prepares day partitions ahead, drops raw-sample partitions past retention, deletes expired
    /// rollups and write-log rows. Runs at start and every ``Configuration/maintenanceInterval``;
    /// public so operators and tests can run it at a chosen time.
    public func runMaintenance(now: Int64) async throws {
        let c = configuration
        let (dropped, expired) = try await maintenance.run { conn in
            try Maintenance.run(conn, now: now, rawRetentionDays: c.rawRetentionDays,
                                rollupRetentionDays: c.rollupRetentionDays, aheadDays: c.partitionsAheadDays)
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
    public func dropWriterConnection() { writer.dropConnection() }
}

/// State only the writer thread touches.
private final class WriterState: @unchecked Sendable {
    // @unchecked: used only from the writer BlockingWorker's thread.
    var seriesIDs: [SeriesKey: UInt64] = [:]
    /// Per server: (first, last) sample time already written to `rtd_servers`.
    var serverSeen: [String: (Int64, Int64)] = [:]
    /// This process's writer identity in `rtd_write_log`.
    let writerID: [UInt8] = (0..<16).map { _ in UInt8.random(in: 0...255) }

    struct Outcome: Sendable {
        var duplicate = false
        var rollups = 0
        var merged = 0
        var newSeries = 0
    }

    /// How far a server's last-seen time may lag in `rtd_servers` before it is rewritten, ms.
    static let lastSeenGranularity: Int64 = 10_000

    func write(_ batch: StoreBatch, _ c: Connection, _ store: MySQLStore) throws -> Outcome {
        var outcome = Outcome()
        let now = ProcessInfoLite.nowMilliseconds()
        // 1. Series ids (autocommit, outside the batch's transaction: series rows are idempotent
        //    metadata and the cache must never hold an id whose insert was rolled back).
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
        if seriesIDs.count + batch.samples.count + rollups.count > store.seriesCacheLimit { seriesIDs.removeAll(keepingCapacity: true) }
        var missing: [SeriesKey] = []
        var missingSet = Set<SeriesKey>()
        for s in batch.samples {
            let k = s.seriesKey
            if seriesIDs[k] == nil && missingSet.insert(k).inserted { missing.append(k) }
        }
        for r in rollups where seriesIDs[r.key] == nil && missingSet.insert(r.key).inserted {
            missing.append(r.key)
        }
        if !missing.isEmpty { outcome.newSeries = try resolve(missing, c, store, now: now) }

        // 2. The batch, in one transaction.
        try c.execute("START TRANSACTION")
        do {
            do {
                try c.prepare("INSERT INTO rtd_write_log (writer, sequence, written_at, samples, rollups) VALUES (?, ?, ?, ?, ?)")
                    .execute([.blob(writerID), .uint(batch.sequence), .int(now), .int(Int64(batch.samples.count)), .int(Int64(rollups.count))])
            } catch let e as MySQLError where e.isDuplicateKey {
                try c.execute("ROLLBACK")
                outcome.duplicate = true
                return outcome
            }
            try insertSamples(batch.samples, c, store)
            let (upserted, merged) = try upsertRollups(rollups, c, store)
            outcome.rollups = upserted
            outcome.merged = merged
            let servers = try upsertServers(batch.samples, c, store)
            try c.execute("COMMIT")
            for (id, seen) in servers { serverSeen[id] = seen }
        } catch {
            _ = try? c.execute("ROLLBACK")
            throw error
        }
        return outcome
    }

    private func resolve(_ keys: [SeriesKey], _ c: Connection, _ store: MySQLStore, now: Int64) throws -> Int {
        var created = 0
        let chunk = 256
        var i = 0
        while i < keys.count {
            let part = Array(keys[i..<min(i + chunk, keys.count)])
            i += chunk
            let insertSQL = "INSERT INTO rtd_series (server_id, metric_name, labels, first_seen) VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE id = id"
            if store.arrayBinding {
                created += Int(try c.prepare(insertSQL).executeBulk([
                    .text(part.map(\.serverID)), .text(part.map(\.metricName)), .text(part.map(\.labels)),
                    .int64([Int64](repeating: now, count: part.count)),
                ]))
            } else {
                let sql = "INSERT INTO rtd_series (server_id, metric_name, labels, first_seen) VALUES "
                    + Array(repeating: "(?, ?, ?, ?)", count: part.count).joined(separator: ", ") + " ON DUPLICATE KEY UPDATE id = id"
                var values: [SQLValue] = []
                for k in part { values += [.text(k.serverID), .text(k.metricName), .text(k.labels), .int(now)] }
                created += Int(try c.prepare(sql).execute(values))
            }
            // Look the ids up by the same hash the unique key uses. The statement always has
            // `chunk` slots (the last key repeats) so it is prepared once.
            let slot = "UNHEX(SHA2(CONCAT_WS(0x00, ?, ?, ?), 256))"
            let selectSQL = "SELECT id, server_id, metric_name, labels FROM rtd_series WHERE key_hash IN ("
                + Array(repeating: slot, count: chunk).joined(separator: ", ") + ")"
            var values: [SQLValue] = []
            values.reserveCapacity(chunk * 3)
            for j in 0..<chunk {
                let k = part[min(j, part.count - 1)]
                values += [.text(k.serverID), .text(k.metricName), .text(k.labels)]
            }
            for row in try c.prepare(selectSQL).select(values) {
                guard let id = row[0].uint64, let s = row[1].string, let m = row[2].string else { continue }
                seriesIDs[SeriesKey(serverID: s, metricName: m, labels: row[3].string ?? "")] = id
            }
            for k in part where seriesIDs[k] == nil {
                throw MySQLError(code: 0, message: "series \(k) was inserted but cannot be found")
            }
        }
        return created
    }

    private func insertSamples(_ samples: [MetricSample], _ c: Connection, _ store: MySQLStore) throws {
        guard !samples.isEmpty else { return }
        let rowsPerExecute = store.bulkRows
        var ids: [UInt64] = [], ts: [Int64] = [], values: [Double] = []
        ids.reserveCapacity(min(samples.count, rowsPerExecute))
        ts.reserveCapacity(ids.capacity)
        values.reserveCapacity(ids.capacity)
        // Consecutive samples often belong to the same series: skip the dictionary then.
        var lastKey: SeriesKey? = nil
        var lastID: UInt64 = 0
        func flush() throws {
            guard !ids.isEmpty else { return }
            if store.arrayBinding {
                try c.prepare("INSERT INTO rtd_samples (series_id, ts, value) VALUES (?, ?, ?)").executeBulk([.uint64(ids), .int64(ts), .double(values)])
            } else {
                let sql = "INSERT INTO rtd_samples (series_id, ts, value) VALUES "
                    + Array(repeating: "(?, ?, ?)", count: ids.count).joined(separator: ", ")
                var params: [SQLValue] = []
                params.reserveCapacity(ids.count * 3)
                for k in ids.indices { params += [.uint(ids[k]), .int(ts[k]), .double(values[k])] }
                try c.prepare(sql).execute(params)
            }
            ids.removeAll(keepingCapacity: true)
            ts.removeAll(keepingCapacity: true)
            values.removeAll(keepingCapacity: true)
        }
        for s in samples {
            let id: UInt64
            if let lk = lastKey, lk.matches(s) {
                id = lastID
            } else {
                let k = s.seriesKey
                guard let found = seriesIDs[k] else { throw MySQLError(code: 0, message: "no id for series \(k)") }
                id = found
                lastKey = k
                lastID = found
            }
            ids.append(id)
            ts.append(s.timestamp)
            values.append(s.value)
            if ids.count == rowsPerExecute { try flush() }
        }
        try flush()
    }

    private func upsertRollups(_ rollups: [MinuteRollup], _ c: Connection, _ store: MySQLStore) throws -> (Int, Int) {
        guard !rollups.isEmpty else { return (0, 0) }
        var merged = 0
        var out = rollups
        // Merge with stored rollups of the same series and minute (late data, or a second writer),
        // under row locks so concurrent writers cannot interleave.
        var index: [RollupKey: Int] = [:]
        var ids: [UInt64] = []
        for (i, r) in out.enumerated() {
            let id = seriesIDs[r.key]!
            ids.append(id)
            index[RollupKey(id: id, minute: r.minute)] = i
        }
        let chunk = 256
        let selectSQL = "SELECT series_id, minute, sketch FROM rtd_rollups WHERE (series_id, minute) IN ("
            + Array(repeating: "(?, ?)", count: chunk).joined(separator: ", ") + ") FOR UPDATE"
        var i = 0
        while i < out.count {
            let end = min(i + chunk, out.count)
            var values: [SQLValue] = []
            values.reserveCapacity(chunk * 2)
            for j in 0..<chunk {
                let k = min(i + j, end - 1)
                values += [.uint(ids[k]), .int(out[k].minute)]
            }
            for row in try c.prepare(selectSQL).select(values) {
                guard let id = row[0].uint64, let minute = row[1].int64, let bytes = row[2].bytes,
                      let at = index[RollupKey(id: id, minute: minute)] else { continue }
                let stored = try QuantileSketch(serialized: bytes)
                out[at].sketch.merge(stored)
                merged += 1
            }
            i = end
        }
        let upsert = """
            INSERT INTO rtd_rollups (series_id, minute, sample_count, value_sum, value_min, value_max, sketch)
            VALUES (?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE sample_count = VALUES(sample_count),
            value_sum = VALUES(value_sum), value_min = VALUES(value_min), value_max = VALUES(value_max), sketch = VALUES(sketch)
            """
        i = 0
        let per = store.arrayBinding ? 5_000 : 500
        while i < out.count {
            let part = out[i..<min(i + per, out.count)]
            let partIDs = ids[i..<min(i + per, out.count)]
            i += per
            if store.arrayBinding {
                try c.prepare(upsert).executeBulk([
                    .uint64(Array(partIDs)), .int64(part.map(\.minute)), .uint64(part.map(\.count)),
                    .double(part.map(\.sum)), .double(part.map(\.min)), .double(part.map(\.max)),
                    .blob(part.map { $0.sketch.serialized() }),
                ])
            } else {
                let sql = """
                    INSERT INTO rtd_rollups (series_id, minute, sample_count, value_sum, value_min, value_max, sketch) VALUES
                    """ + " " + Array(repeating: "(?, ?, ?, ?, ?, ?, ?)", count: part.count).joined(separator: ", ") + """
                     ON DUPLICATE KEY UPDATE sample_count = VALUES(sample_count),
                    value_sum = VALUES(value_sum), value_min = VALUES(value_min), value_max = VALUES(value_max), sketch = VALUES(sketch)
                    """
                var values: [SQLValue] = []
                for (id, r) in zip(partIDs, part) {
                    values += [.uint(id), .int(r.minute), .uint(r.count), .double(r.sum), .double(r.min), .double(r.max), .blob(r.sketch.serialized())]
                }
                try c.prepare(sql).execute(values)
            }
        }
        return (out.count, merged)
    }

    /// Upserts first/last seen for servers whose stored times are missing or stale by more than
    /// ``lastSeenGranularity``. Returns the new values to cache once the transaction commits.
    private func upsertServers(_ samples: [MetricSample], _ c: Connection, _ store: MySQLStore) throws -> [(String, (Int64, Int64))] {
        guard !samples.isEmpty else { return [] }
        var seen: [String: (first: Int64, last: Int64, labels: String)] = [:]
        var lastServer = ""
        for s in samples {
            if s.serverID == lastServer, var e = seen[s.serverID] {
                if s.timestamp < e.first { e.first = s.timestamp }
                if s.timestamp >= e.last { e.last = s.timestamp; e.labels = s.labels }
                seen[s.serverID] = e
                continue
            }
            lastServer = s.serverID
            if var e = seen[s.serverID] {
                if s.timestamp < e.first { e.first = s.timestamp }
                if s.timestamp >= e.last { e.last = s.timestamp; e.labels = s.labels }
                seen[s.serverID] = e
            } else {
                seen[s.serverID] = (s.timestamp, s.timestamp, s.labels)
            }
        }
        var rows: [(String, Int64, Int64, String)] = []
        for (id, e) in seen {
            if let (first, last) = serverSeen[id], e.first >= first, e.last < last + Self.lastSeenGranularity { continue }
            rows.append((id, e.first, e.last, e.labels))
        }
        guard !rows.isEmpty else { return [] }
        rows.sort { $0.0 < $1.0 }  // a stable lock order across writers
        let sql = """
            INSERT INTO rtd_servers (server_id, first_seen, last_seen, labels) VALUES (?, ?, ?, ?)
            ON DUPLICATE KEY UPDATE first_seen = LEAST(first_seen, VALUES(first_seen)),
            labels = IF(VALUES(last_seen) >= last_seen, VALUES(labels), labels),
            last_seen = GREATEST(last_seen, VALUES(last_seen))
            """
        if store.arrayBinding {
            try c.prepare(sql).executeBulk([.text(rows.map(\.0)), .int64(rows.map(\.1)), .int64(rows.map(\.2)), .text(rows.map(\.3))])
        } else {
            for r in rows { try c.prepare(sql).execute([.text(r.0), .int(r.1), .int(r.2), .text(r.3)]) }
        }
        return rows.map { r in
            let old = serverSeen[r.0]
            return (r.0, (min(r.1, old?.0 ?? r.1), max(r.2, old?.1 ?? r.2)))
        }
    }
}

/// A mutex in a class, so closures can share it.
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<R: Sendable>(_ body: (inout sending Value) throws -> sending R) rethrows -> R { try mutex.withLock(body) }
}

private struct RollupKey: Hashable {
    var id: UInt64
    var minute: Int64
}

private struct SeriesMinute: Hashable {
    var key: SeriesKey
    var minute: Int64
}
