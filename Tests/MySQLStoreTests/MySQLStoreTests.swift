import Foundation
import Testing
@testable import MetricsCore
@testable import MySQLStore

@Suite("MySQLEndpoint")
struct MySQLEndpointTests {
    @Test("TCP, socket and percent-encoded forms parse; bad URLs are refused with a reason")
    func parsing() throws {
        let a = try MySQLEndpoint(url: "mysql://rtd:s%40cret@db.example:3307/metrics")
        #expect(a.user == "rtd" && a.password == "s@cret" && a.host == "db.example" && a.port == 3307 && a.database == "metrics")
        #expect(a.description == "mysql://rtd@db.example:3307/metrics", "no password in logs")
        let b = try MySQLEndpoint(url: "mariadb://root@localhost/rtd?socket=/tmp/x%20y/sock&read_timeout=5")
        #expect(b.socket == "/tmp/x y/sock" && b.password == "" && b.port == 3306 && b.readTimeout == 5)
        let c = try MySQLEndpoint(url: "mysql://u:p@[::1]:4000/d")
        #expect(c.host == "::1" && c.port == 4000)
        let bads: [String] = ["postgres://u@h/d", "mysql://h/d", "mysql://u@h", "mysql://u@h:99999/d", "mysql://u@h/d;drop",
                              "mysql://u@h/d?nope=1", "mysql://u@h/d?read_timeout=0", "mysql://u@h/d?socket=%zz"]
        for bad in bads {
            #expect(throws: MySQLError.self, "\(bad)") { try MySQLEndpoint(url: bad) }
        }
    }
}

@Suite("Rollup repair bookkeeping")
struct RollupRepairBookkeepingTests {
    static func sample(_ ts: Int64) -> MetricSample { MetricSample(serverID: "s", metricName: "m", value: 1, timestamp: ts) }

    @Test("a batch's minutes are listed once each, in order, and read back as minute starts")
    func minutesList() {
        let base: Int64 = 1_700_000_040_000  // a minute start
        let batch = [base + 59_999, base, base + 60_000, base + 5, base - 1, base + 60_001].map(Self.sample)
        let text = String(decoding: RollupRepair.minutesText(batch[...]), as: UTF8.self)
        #expect(text == "\(base / 60_000 - 1),\(base / 60_000),\(base / 60_000 + 1)")
        #expect(RollupRepair.minutes(from: text) == [base - 60_000, base, base + 60_000])
        #expect(RollupRepair.minutesText([][...]).isEmpty)
    }

    @Test("a batch spanning more minutes than are listed is kept as a range, and the range reads back whole")
    func minutesRange() {
        let n = RollupRepair.maxListedMinutes + 1
        let batch = (0..<n).map { Self.sample(Int64($0) * 60_000) }
        let text = String(decoding: RollupRepair.minutesText(batch[...]), as: UTF8.self)
        #expect(text == "0-\(n - 1)")
        #expect(RollupRepair.minutes(from: text) == (0..<Int64(n)).map { $0 * 60_000 })
        #expect(RollupRepair.minutes(from: "garbage,12").count == 1)
    }

    @Test("the rollup watermark never passes a batch still in flight, and retries keep their first start")
    func watermark() {
        let w = RollupWatermark()
        #expect(w.value(now: 100) == 100, "nothing pending: every rollup handed over is committed")
        w.begin(1, now: 200)
        w.begin(2, now: 300)
        w.committed(2)  // lane 2 finished first: batch 1 (taken earlier) is still pending
        #expect(w.value(now: 500) == 200)
        w.begin(1, now: 400)  // a retry of batch 1 keeps its first start
        #expect(w.value(now: 500) == 200)
        w.committed(1)
        #expect(w.value(now: 600) == 600)
    }
}

@Suite("MySQLStore against MariaDB", .enabled(if: MySQLTestSupport.enabled), .serialized)
struct MySQLStoreTests {
    typealias S = MySQLTestSupport
    static let now = ProcessInfoLite.nowMilliseconds()
    static let minute = MinuteRollup.minute(of: now) - 10 * 60_000

    static func samples(_ n: Int, servers: Int = 3, from ts: Int64 = minute) -> [MetricSample] {
        var out: [MetricSample] = []
        for i in 0..<n {
            let metric: String = i % 2 == 0 ? "cpu" : "mem"
            let labels: String = i % 4 == 1 ? "dc=eu,rack=r\(i % 3)" : ""
            out.append(MetricSample(serverID: "srv-\(i % servers)", metricName: metric, value: Double(i) * 0.5,
                                    timestamp: ts + Int64(i), labels: labels))
        }
        return out
    }

    @Test("the schema is created and versioned; a second start applies nothing and keeps the data")
    func migrations() async throws {
        let e = try S.freshDatabase()
        defer { S.dropDatabase(e) }
        let first = try await MySQLStore(configuration: .init(endpoint: e))
        try await first.write(StoreBatch(samples: Self.samples(10), sequence: 1))
        try await first.close()
        #expect(try S.scalar(e, "SELECT MAX(version) FROM rtd_schema_migrations") == Int64(Schema.latestVersion))
        let tables = Set(try S.query(e, "SHOW TABLES").compactMap { $0[0] })
        #expect(tables.isSuperset(of: ["rtd_series", "rtd_servers", "rtd_samples", "rtd_rollups", "rtd_write_log", "rtd_schema_migrations"]))
        let second = try await MySQLStore(configuration: .init(endpoint: e))
        try await second.close()
        #expect(try S.scalar(e, "SELECT COUNT(*) FROM rtd_schema_migrations") == Int64(Schema.migrations.count))
        #expect(try S.scalar(e, "SELECT COUNT(*) FROM rtd_samples") == 10)
        // Day partitions exist from the retention horizon to two days ahead.
        let parts = try S.query(e, "SELECT PARTITION_NAME FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA = '\(e.database)' AND TABLE_NAME = 'rtd_samples'").compactMap { $0[0] }
        #expect(parts.contains(Schema.partitionName(dayStart: Schema.dayStart(Self.now) + 2 * Schema.dayMilliseconds)))
        #expect(parts.first == "p_old" && parts.last == "p_future")
    }

    @Test("partition names are UTC calendar days")
    func partitionNames() {
        #expect(Schema.partitionName(dayStart: 0) == "p_19700101")
        #expect(Schema.partitionName(dayStart: 1_709_164_800_000) == "p_20240229")  // leap day
        #expect(Schema.partitionName(dayStart: 1_798_675_200_000) == "p_20261231")
    }

    @Test("samples, rollups, servers and series round-trip exactly", arguments: [MySQLStore.BulkMode.arrayBinding, .multiRow])
    func roundTrip(mode: MySQLStore.BulkMode) async throws {
        try await S.withStore({ $0.bulkMode = mode; $0.bulkRows = 700 }) { store, e in
            let batch1 = Self.samples(2_500)
            let rollups = [S.rollup("srv-0", "cpu", minute: Self.minute, values: [1, 2, 3]),
                           S.rollup("srv-1", "mem", minute: Self.minute, values: [10], labels: "dc=eu,rack=r1")]
            try await store.write(StoreBatch(samples: batch1, rollups: rollups, sequence: 1))
            try await store.write(StoreBatch(samples: Self.samples(500, from: Self.minute + 10_000), sequence: 2))
            let all = batch1 + Self.samples(500, from: Self.minute + 10_000)
            #expect(try S.scalar(e, "SELECT COUNT(*) FROM rtd_samples") == Int64(all.count))
            // Every sample, exactly: compare the multiset of (server, metric, labels, ts, value).
            let rows = try S.query(e, """
                SELECT s.server_id, s.metric_name, s.labels, x.ts, x.value FROM rtd_samples x JOIN rtd_series s ON s.id = x.series_id
                """)
            let got = rows.map { "\($0[0]!)|\($0[1]!)|\($0[2]!)|\($0[3]!)|\(Double($0[4]!)!)" }.sorted()
            let want = all.map { "\($0.serverID)|\($0.metricName)|\($0.labels)|\($0.timestamp)|\($0.value)" }.sorted()
            #expect(got == want)
            #expect(try S.scalar(e, "SELECT COUNT(*) FROM rtd_series") == 3 * 2 + 3)  // plain series + labelled ones
            #expect(try S.scalar(e, "SELECT COUNT(*) FROM rtd_servers") == 3)
            let srv = try S.query(e, "SELECT first_seen, last_seen FROM rtd_servers WHERE server_id = 'srv-0'")
            let mine = all.filter { $0.serverID == "srv-0" }.map(\.timestamp)
            // first_seen is exact; last_seen may trail the newest sample by the refresh granularity.
            #expect(Int64(srv[0][0]!) == mine.min())
            let lastSeen = Int64(srv[0][1]!)!
            #expect(lastSeen <= mine.max()! && mine.max()! - lastSeen < 10_000)
            let r = try S.query(e, "SELECT sample_count, value_sum, value_min, value_max FROM rtd_rollups ORDER BY sample_count DESC")
            #expect(r.count == 2 && r[0] == ["3", "6", "1", "3"])
            #expect(store.statistics.batchesCommitted == 2 && store.statistics.samplesInserted == 3_000)

            // History: rollups for a long range, raw samples for a short one.
            let h = try await store.history(HistoryQuery(serverID: "srv-0", metricName: "cpu", from: Self.minute - 3_600_000, to: Self.now, raw: .never))
            #expect(h.raw == nil && h.points.count == 1 && h.points[0].count == 3 && h.points[0].timestamp == Self.minute)
            let raw = try await store.history(HistoryQuery(serverID: "srv-0", metricName: "cpu", from: Self.minute, to: Self.minute + 60_000, maxPoints: 5_000))
            let expected = all.filter { $0.serverID == "srv-0" && $0.metricName == "cpu" }
            #expect(raw.raw?.count == expected.count)
            #expect(raw.raw?.map(\.timestamp) == expected.map(\.timestamp).sorted())
            // Too many raw points for max_points: minute rollups instead.
            let capped = try await store.history(HistoryQuery(serverID: "srv-0", metricName: "cpu", from: Self.minute, to: Self.minute + 60_000, maxPoints: 10))
            #expect(capped.raw == nil)
            // Warm-up reads the rollups back.
            let warm = try await store.recentRollups(since: Self.minute)
            #expect(Set(warm.map(\.key)) == Set(rollups.map(\.key)))
            #expect(warm.first { $0.key.labels == "dc=eu,rack=r1" }?.sketch == rollups[1].sketch)
        }
    }

    @Test("a batch retried with the same sequence is applied once")
    func idempotentRetry() async throws {
        try await S.withStore { store, e in
            let batch = StoreBatch(samples: Self.samples(1_000), rollups: [S.rollup("srv-0", "cpu", minute: Self.minute, values: [5])], sequence: 7)
            try await store.write(batch)
            try await store.write(batch)  // as if the first COMMIT's reply had been lost
            #expect(try S.scalar(e, "SELECT COUNT(*) FROM rtd_samples") == 1_000)
            #expect(try S.scalar(e, "SELECT sample_count FROM rtd_rollups") == 1)
            #expect(store.statistics.duplicateBatchesSkipped == 1)
            try await store.write(StoreBatch(samples: Self.samples(1_000, from: Self.minute + 1_000), sequence: 8))
            #expect(try S.scalar(e, "SELECT COUNT(*) FROM rtd_samples") == 2_000, "a new sequence is a new batch")
            #expect(store.statistics.duplicateSamplesIgnored == 0)
        }
    }

    @Test("migrations 2 and 3 upgrade a version-1 database holding duplicate samples: one of each is kept")
    func migrationFromVersionOne() async throws {
        try await S.withStore { store, e in
            try await store.write(StoreBatch(samples: Self.samples(100), sequence: 1))
            try await store.close()
            // Back to version 1's shape, with every sample stored twice (the old at-least-once resend).
            for sql in ["ALTER TABLE rtd_samples DROP PRIMARY KEY, ADD KEY series_ts (series_id, ts)",
                        "INSERT INTO rtd_samples SELECT * FROM rtd_samples", "ALTER TABLE rtd_write_log DROP COLUMN minutes",
                        "DROP TABLE rtd_instances", "DROP TABLE rtd_rollup_repairs", "DELETE FROM rtd_schema_migrations WHERE version >= 2"] {
                _ = try S.query(e, sql)
            }
            #expect(try S.scalar(e, "SELECT COUNT(*) FROM rtd_samples") == 200)
            let reopened = try await MySQLStore(configuration: MySQLStore.Configuration(endpoint: e, maintenanceInterval: .seconds(3_600)))
            #expect(try S.scalar(e, "SELECT COUNT(*) FROM rtd_samples") == 100)
            #expect(try S.scalar(e, "SELECT MAX(version) FROM rtd_schema_migrations") == 3, "versions 2 and 3 applied")
            try await reopened.write(StoreBatch(samples: Self.samples(100), sequence: 2))
            #expect(try S.scalar(e, "SELECT COUNT(*) FROM rtd_samples") == 100)
            try await reopened.close()
        }
    }

    @Test("two write lanes: a BatchWriter with two batches in flight stores every sample once and acknowledges in order")
    func twoWriteLanes() async throws {
        try await S.withStore({ $0.writeLanes = 2 }) { store, e in
            #expect(store.maxConcurrentWrites == 2)
            let writer = BatchWriter(store: store, aggregator: nil, configuration: .init(maxBatchSamples: 3_000))
            let run = Task { await writer.run() }
            let order = Locked<[Int]>([])
            await withTaskGroup(of: Void.self) { group in
                for k in 0..<20 {
                    let samples = Self.samples(2_000, servers: 50, from: Self.minute + Int64(k) * 2_000)
                    group.addTask {
                        let outcome = await writer.write(samples)
                        #expect(outcome == .durable)
                        order.withLock { $0.append(k) }
                    }
                }
            }
            writer.close()
            await run.value
            let stored = try S.scalar(e, "SELECT COUNT(*) FROM rtd_samples")
            #expect(stored == 40_000)
            #expect(writer.statistics.batchesWritten >= 10)
            #expect(store.statistics.duplicateSamplesIgnored == 0)
        }
    }

    @Test("samples resent in a new batch (an agent resending after a crash) are stored once; new ones beside them are kept")
    func resentSamplesStoredOnce() async throws {
        try await S.withStore { store, e in
            try await store.write(StoreBatch(samples: Self.samples(1_000), sequence: 1))
            // The same 1,000 samples again (committed, but the ack was lost with the instance),
            // followed by 500 new ones, in one batch with a new sequence.
            try await store.write(StoreBatch(samples: Self.samples(1_500), sequence: 2))
            #expect(try S.scalar(e, "SELECT COUNT(*) FROM rtd_samples") == 1_500)
            #expect(try S.scalar(e, "SELECT COUNT(*) FROM (SELECT series_id, ts FROM rtd_samples GROUP BY series_id, ts HAVING COUNT(*) > 1) d") == 0)
            #expect(store.statistics.duplicateSamplesIgnored == 1_000)
            #expect(store.statistics.samplesInserted == 1_500)
            // Large enough to be split over two connections: both halves skip what is stored.
            let big = Self.samples(MySQLStore.splitThreshold + 2_000)
            try await store.write(StoreBatch(samples: big, sequence: 3))
            #expect(try S.scalar(e, "SELECT COUNT(*) FROM rtd_samples") == Int64(big.count))
            #expect(store.statistics.duplicateSamplesIgnored == 2_500)
        }
    }

    @Test("a large batch is split over two connections; a retry re-applies only the half that did not commit")
    func splitBatchRetry() async throws {
        try await S.withStore { store, e in
            let n = 40_000
            let batch = StoreBatch(samples: Self.samples(n), sequence: 3)
            try await store.write(batch)
            #expect(try S.scalar(e, "SELECT COUNT(*) FROM rtd_samples") == Int64(n))
            #expect(try S.scalar(e, "SELECT COUNT(*) FROM rtd_write_log") == 2, "one write-log row per half")
            try await store.write(batch)
            #expect(try S.scalar(e, "SELECT COUNT(*) FROM rtd_samples") == Int64(n))
            #expect(store.statistics.duplicateBatchesSkipped == 1)
            // As if the second half's transaction had been lost: only it is written again.
            let second = UInt64(3) | (1 << 63)
            let c = try Connection(e)
            defer { c.close() }
            try c.execute("DELETE FROM rtd_write_log WHERE sequence = \(second)")
            try c.execute("DELETE FROM rtd_samples WHERE ts >= \(Self.minute + Int64(n / 2))")
            #expect(try S.scalar(e, "SELECT COUNT(*) FROM rtd_samples") == Int64(n / 2))
            try await store.write(batch)
            #expect(try S.scalar(e, "SELECT COUNT(*) FROM rtd_samples") == Int64(n))
            #expect(try S.scalar(e, "SELECT COUNT(DISTINCT ts) FROM rtd_samples") == Int64(n), "no sample twice")
        }
    }

    @Test("late rollups merge with stored ones and equal a naive recomputation from raw rows")
    func rollupMerge() async throws {
        try await S.withStore { store, e in
            var all: [Double] = []
            for seq in 1...6 {
                // Reproducible, well-spread values: a multiplicative sequence mod 10,007.
                let values = (0..<200).map { k in Double((seq * 200 + k) * 7_919 % 10_007) / 100 }
                all += values
                let samples = values.enumerated().map { MetricSample(serverID: "s", metricName: "m", value: $1, timestamp: Self.minute + Int64(seq * 1_000 + $0)) }
                // Two rollups of the same minute in one batch, and more in later batches.
                let half = values.count / 2
                try await store.write(StoreBatch(samples: samples, rollups: [
                    S.rollup("s", "m", minute: Self.minute, values: Array(values[..<half])),
                    S.rollup("s", "m", minute: Self.minute, values: Array(values[half...])),
                ], sequence: UInt64(seq)))
            }
            let row = try S.query(e, "SELECT sample_count, value_sum, value_min, value_max FROM rtd_rollups")
            #expect(row.count == 1)
            let naive = try S.query(e, "SELECT COUNT(*), SUM(value), MIN(value), MAX(value) FROM rtd_samples")[0]
            #expect(row[0][0] == naive[0] && row[0][0] == "\(all.count)")
            #expect(abs(Double(row[0][1]!)! - Double(naive[1]!)!) < 1e-6)
            #expect(Double(row[0][2]!)! == all.min() && Double(row[0][3]!)! == all.max())
            #expect(store.statistics.rollupsMerged == 5)
            // The stored sketch's median is within 1 % of the exact one.
            let h = try await store.history(HistoryQuery(serverID: "s", metricName: "m", from: Self.minute, to: Self.minute + 60_000, raw: .never))
            let sorted = all.sorted()
            let exact = sorted[Int((0.5 * Double(sorted.count - 1)).rounded(.down))]
            #expect(abs(h.points[0].p50 - exact) <= 0.01 * exact + 1e-9)
        }
    }

    @Test("retention drops expired day partitions, empties p_old and deletes old rollups; recent data stays")
    func retention() async throws {
        try await S.withStore({ $0.rawRetentionDays = 3; $0.rollupRetentionDays = 5 }) { store, e in
            let day = Schema.dayMilliseconds
            let old = Self.samples(100, from: Self.now - 10 * day)       // p_old
            let edge = Self.samples(100, from: Schema.dayStart(Self.now) - 3 * day + 1_000)  // oldest day partition
            let recent = Self.samples(100, from: Self.now - 60_000)
            try await store.write(StoreBatch(samples: old + edge + recent, rollups: [
                S.rollup("srv-0", "cpu", minute: MinuteRollup.minute(of: Self.now - 6 * day), values: [1]),
                S.rollup("srv-0", "cpu", minute: MinuteRollup.minute(of: Self.now - 4 * day), values: [1]),
            ], sequence: 1))
            #expect(try S.scalar(e, "SELECT COUNT(*) FROM rtd_samples") == 300)
            try await store.runMaintenance(now: Self.now)
            #expect(try S.scalar(e, "SELECT COUNT(*) FROM rtd_samples") == 200, "p_old emptied")
            #expect(try S.scalar(e, "SELECT COUNT(*) FROM rtd_rollups") == 1, "the 6-day-old rollup is gone")
            // A day later the edge partition has aged out too; partitions ahead are added.
            try await store.runMaintenance(now: Self.now + day)
            #expect(try S.scalar(e, "SELECT COUNT(*) FROM rtd_samples") == 100)
            #expect(store.statistics.partitionsDropped >= 1)
            let parts = try S.query(e, "SELECT PARTITION_NAME FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA = '\(e.database)' AND TABLE_NAME = 'rtd_samples'").compactMap { $0[0] }
            #expect(parts.contains(Schema.partitionName(dayStart: Schema.dayStart(Self.now) + 3 * day)))
            // New samples still land after the partition changes.
            try await store.write(StoreBatch(samples: Self.samples(10, from: Self.now), sequence: 2))
            #expect(try S.scalar(e, "SELECT COUNT(*) FROM rtd_samples") == 110)
        }
    }

    @Test("maintenance trims a running writer's write log past the recovery window, and skips a run while another instance holds its lock")
    func writeLogTrimAndLock() async throws {
        try await S.withStore { store, e in
            let now = ProcessInfoLite.nowMilliseconds()
            let day = Schema.dayMilliseconds
            try await store.write(StoreBatch(samples: Self.samples(10, from: now - 60_000), sequence: 1))
            let writer = try #require(try S.query(e, "SELECT HEX(writer) FROM rtd_instances LIMIT 1").first?.first ?? nil)
            let c = try Connection(e)
            defer { c.close() }
            try c.execute("UPDATE rtd_instances SET rollups_through = \(now)")
            // A row from three days ago (no recovery reads it) and one from a minute ago.
            try c.execute("INSERT INTO rtd_write_log (writer, sequence, written_at, samples, rollups) VALUES (UNHEX('\(writer)'), 1001, \(now - 3 * day), 0, 0), (UNHEX('\(writer)'), 1002, \(now - 60_000), 0, 0)")
            #expect(try S.scalar(e, "SELECT COUNT(*) FROM rtd_write_log WHERE sequence IN (1001, 1002)") == 2)
            // Another instance is running maintenance: this run is skipped.
            #expect(try c.query("SELECT GET_LOCK(\(Maintenance.lockName), 0)").first?.first ?? nil == "1")
            try await store.runMaintenance(now: now)
            #expect(try S.scalar(e, "SELECT COUNT(*) FROM rtd_write_log WHERE sequence IN (1001, 1002)") == 2)
            _ = try c.query("SELECT RELEASE_LOCK(\(Maintenance.lockName))")
            try await store.runMaintenance(now: now)
            #expect(try S.scalar(e, "SELECT COUNT(*) FROM rtd_write_log WHERE sequence = 1001") == 0, "past the recovery window: trimmed")
            #expect(try S.scalar(e, "SELECT COUNT(*) FROM rtd_write_log WHERE sequence = 1002") == 1, "recent: kept")
        }
    }

    @Test("a killed connection fails the write; the retry reconnects and applies the batch once")
    func killedConnection() async throws {
        try await S.withStore { store, e in
            try await store.write(StoreBatch(samples: Self.samples(100), sequence: 1))
            // Kill every connection of this database but our own, as a DBA or a failover would.
            let admin = try Connection(e)
            defer { admin.close() }
            for row in try admin.query("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = '\(e.database)' AND ID <> CONNECTION_ID()") {
                _ = try? admin.execute("KILL CONNECTION \(row[0]!)")
            }
            // Sequence 3: the same writer lane as batch 1 (lanes take sequence % lanes), so it meets
            // the killed connection.
            let batch = StoreBatch(samples: Self.samples(100, from: Self.minute + 5_000), sequence: 3)
            var failures = 0
            while true {
                do {
                    try await store.write(batch)
                    break
                } catch let error as MySQLError {
                    #expect(error.isConnectionLevel)
                    failures += 1
                    try #require(failures < 5)
                }
            }
            #expect(failures >= 1, "the killed connection must surface as an error, not be hidden")
            #expect(try S.scalar(e, "SELECT COUNT(*) FROM rtd_samples") == 200)
            #expect(store.statistics.connectionsOpened >= 2)
        }
    }
}
