import Foundation
import MetricsCore

/// The database schema and its versioned migrations.
///
/// Tables (all InnoDB, names prefixed `rtd_` so they can share a database):
/// - `rtd_schema_migrations`: one row per applied migration.
/// - `rtd_series`: one row per series (server id, metric name, canonical labels) with a stable
///   numeric id; `key_hash` (SHA-256 of the three, computed by the server) is the unique key,
///   because the full key can be longer than an index allows.
/// - `rtd_servers`: one row per server id: first and last sample time seen, and the labels of its
///   most recently written sample.
/// - `rtd_samples`: raw samples `(series_id, ts, value)`, the primary key (an identical sample sent
///   again is stored once), partitioned by day on `ts` (UTC) so retention drops whole partitions
///   instead of deleting rows. `p_old` holds anything older than
///   the oldest day partition, `p_future` anything beyond the newest.
/// - `rtd_rollups`: minute rollups, unique on `(series_id, minute)`, with count/sum/min/max as
///   columns (for SQL users) and the mergeable quantile sketch as a blob. `incoming` and
///   `merge_pending` are only ever non-NULL inside a writer's transaction (a sketch waiting to be
///   merged into a row that already existed); committed rows never have them set.
/// - `rtd_write_log`: one row per committed batch `(writer, sequence)`: how a retried batch whose
///   first attempt did commit is recognised and not applied twice; `minutes` lists the minutes its
///   raw samples fell into (schema version 3).
/// - `rtd_instances`: one row per running writer (heartbeat, and the time up to which its rollups
///   are committed), removed at a clean stop; a row whose heartbeat stopped is a dead instance.
/// - `rtd_rollup_repairs`: `(minute, server_id)` whose rollups must be rebuilt from raw rows
///   (`server_id` empty: every server), with the time of the latest request.
///
/// Every statement works on MariaDB 10.11 and MySQL 8 (`VALUES()` in `ON DUPLICATE KEY UPDATE` is
/// deprecated but supported in MySQL 8.0.20+; MariaDB does not support the row-alias form).
enum Schema {
    struct Migration {
        let version: Int
        let description: String
        /// Statements; `{P}` is replaced by the initial partition list of `rtd_samples`.
        let statements: [String]
        /// Statements for MySQL where they differ from MariaDB's (`nil`: the same).
        var mysqlStatements: [String]? = nil

        /// This migration with MySQL statements derived from MariaDB's by `rewrite`.
        func withMySQL(_ rewrite: (String) -> String) -> Migration {
            var m = self
            m.mysqlStatements = statements.map(rewrite)
            return m
        }
    }

    static let migrations: [Migration] = [
        Migration(version: 1, description: "series, servers, samples (daily partitions), rollups, write log", statements: [
            """
            CREATE TABLE IF NOT EXISTS rtd_series (
              id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
              server_id VARBINARY(200) NOT NULL,
              metric_name VARBINARY(200) NOT NULL,
              labels VARBINARY(16000) NOT NULL DEFAULT '',
              key_hash BINARY(32) AS (UNHEX(SHA2(CONCAT_WS(0x00, server_id, metric_name, labels), 256))) STORED,
              first_seen BIGINT NOT NULL,
              UNIQUE KEY series_key (key_hash),
              KEY server_metric (server_id, metric_name)
            ) ENGINE=InnoDB
            """,
            """
            CREATE TABLE IF NOT EXISTS rtd_servers (
              server_id VARBINARY(200) NOT NULL PRIMARY KEY,
              first_seen BIGINT NOT NULL,
              last_seen BIGINT NOT NULL,
              labels VARBINARY(16000) NOT NULL DEFAULT ''
            ) ENGINE=InnoDB
            """,
            """
            CREATE TABLE IF NOT EXISTS rtd_samples (
              series_id BIGINT UNSIGNED NOT NULL,
              ts BIGINT NOT NULL,
              value DOUBLE NOT NULL,
              KEY series_ts (series_id, ts)
            ) ENGINE=InnoDB
            PARTITION BY RANGE (ts) ({P})
            """,
            """
            CREATE TABLE IF NOT EXISTS rtd_rollups (
              series_id BIGINT UNSIGNED NOT NULL,
              minute BIGINT NOT NULL,
              sample_count BIGINT UNSIGNED NOT NULL,
              value_sum DOUBLE NOT NULL,
              value_min DOUBLE NOT NULL,
              value_max DOUBLE NOT NULL,
              sketch BLOB NOT NULL,
              incoming BLOB NULL,
              merge_pending TINYINT NULL,
              PRIMARY KEY (series_id, minute),
              KEY minute (minute),
              KEY merge_pending (merge_pending)
            ) ENGINE=InnoDB
            """,
            """
            CREATE TABLE IF NOT EXISTS rtd_write_log (
              writer BINARY(16) NOT NULL,
              sequence BIGINT UNSIGNED NOT NULL,
              written_at BIGINT NOT NULL,
              samples INT UNSIGNED NOT NULL,
              rollups INT UNSIGNED NOT NULL,
              PRIMARY KEY (writer, sequence),
              KEY written_at (written_at)
            ) ENGINE=InnoDB
            """,
        ]),
        // Raw samples become idempotent: the primary key (series_id, ts, value) lets `INSERT IGNORE`
        // skip a resent sample that is stored already (an agent resending lines a crashed instance
        // had committed without acknowledging them), while different values of one series in the
        // same millisecond are all kept. It replaces the secondary index (history reads use the
        // same prefix), so it also saves space, and it measured as fast to insert or faster.
        // MariaDB's ALTER IGNORE keeps one of any identical rows already stored; MySQL 8 has no
        // ALTER IGNORE, so there the migration fails on a table holding identical rows (remove them first).
        Migration(version: 2, description: "rtd_samples: primary key (series_id, ts, value); resent samples stored once", statements: [
            "ALTER IGNORE TABLE rtd_samples DROP KEY series_ts, ADD PRIMARY KEY (series_id, ts, value)",
        ], mysqlStatements: [
            "ALTER TABLE rtd_samples DROP KEY series_ts, ADD PRIMARY KEY (series_id, ts, value)",
        ]),
        // Rollup repair: minute rollups are rebuilt from raw rows where they may disagree with them
        // (an instance died before sealing its open minutes; an agent's resend was folded twice).
        // Each batch's write-log row lists the minutes its raw samples fell into; running instances
        // keep a heartbeat row, so a dead one's recent minutes can be found; repair requests wait
        // in rtd_rollup_repairs until they settle.
        // DDL commits on its own, so a start that dies between this ALTER and the version row
        // runs the migration again: `IF NOT EXISTS` makes that a no-op on MariaDB (it failed with
        // "duplicate column", 1060, and the server would not start). MySQL 8 has no such clause:
        // there the column must be dropped by hand in that case.
        Migration(version: 3, description: "rollup repair: write-log minutes, instance heartbeats, repair requests", statements: [
            "ALTER TABLE rtd_write_log ADD COLUMN IF NOT EXISTS minutes VARBINARY(12000) NULL",
            """
            CREATE TABLE IF NOT EXISTS rtd_instances (
              writer BINARY(16) NOT NULL PRIMARY KEY,
              host VARBINARY(255) NOT NULL DEFAULT '',
              started_at BIGINT NOT NULL,
              heartbeat_at BIGINT NOT NULL,
              rollups_through BIGINT NOT NULL
            ) ENGINE=InnoDB
            """,
            """
            CREATE TABLE IF NOT EXISTS rtd_rollup_repairs (
              minute BIGINT NOT NULL,
              server_id VARBINARY(200) NOT NULL,
              requested_at BIGINT NOT NULL,
              PRIMARY KEY (minute, server_id),
              KEY requested_at (requested_at)
            ) ENGINE=InnoDB
            """,
        ]).withMySQL { $0.replacingOccurrences(of: "ADD COLUMN IF NOT EXISTS", with: "ADD COLUMN") },
    ]

    /// The newest schema version this build knows.
    static var latestVersion: Int { migrations.last?.version ?? 0 }

    static let dayMilliseconds: Int64 = 86_400_000

    static func dayStart(_ ms: Int64) -> Int64 {
        let d = ms / dayMilliseconds
        return (ms < 0 && ms % dayMilliseconds != 0 ? d - 1 : d) * dayMilliseconds
    }

    /// `p_YYYYMMDD` for the UTC day starting at `dayStart`.
    static func partitionName(dayStart: Int64) -> String {
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = dayStart / dayMilliseconds + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        let y = yoe + era * 400 + (m <= 2 ? 1 : 0)
        func two(_ v: Int64) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "p_\(y)\(two(m))\(two(d))"
    }

    /// The partition list for a new `rtd_samples`: `p_old` below `oldest`, one per day up to `until`, `p_future`.
    static func initialPartitions(oldest: Int64, until: Int64) -> String {
        var parts = ["PARTITION p_old VALUES LESS THAN (\(oldest))"]
        var day = oldest
        while day < until {
            parts.append("PARTITION \(partitionName(dayStart: day)) VALUES LESS THAN (\(day + dayMilliseconds))")
            day += dayMilliseconds
        }
        parts.append("PARTITION p_future VALUES LESS THAN MAXVALUE")
        return parts.joined(separator: ", ")
    }

    /// Creates or upgrades the schema. Several instances may start at once: a named lock
    /// (`GET_LOCK`) serialises them, and every migration is recorded once.
    /// - Returns: the versions applied now (empty when the schema was current).
    static func migrate(_ c: Connection, now: Int64, rawRetentionDays: Int, aheadDays: Int) throws -> [Int] {
        let got = try c.query("SELECT GET_LOCK('rtd_schema_migration', 60)")
        guard got.first?.first??.hasPrefix("1") == true else {
            throw MySQLError(code: 0, message: "could not take the schema migration lock within 60 s")
        }
        defer { _ = try? c.query("SELECT RELEASE_LOCK('rtd_schema_migration')") }
        try c.execute("""
            CREATE TABLE IF NOT EXISTS rtd_schema_migrations (
              version INT NOT NULL PRIMARY KEY,
              description VARCHAR(200) NOT NULL,
              applied_at BIGINT NOT NULL
            ) ENGINE=InnoDB
            """)
        let current = Int(try c.query("SELECT COALESCE(MAX(version), 0) FROM rtd_schema_migrations").first?.first?.flatMap { $0 } ?? "0") ?? 0
        guard current <= latestVersion else {
            throw MySQLError(code: 0, message: "database schema version \(current) is newer than this build knows (\(latestVersion)); upgrade the server")
        }
        var applied: [Int] = []
        let today = dayStart(now)
        let partitions = initialPartitions(oldest: today - Int64(rawRetentionDays) * dayMilliseconds,
                                           until: today + Int64(aheadDays + 1) * dayMilliseconds)
        for m in migrations where m.version > current {
            for sql in (c.isMariaDB ? m.statements : m.mysqlStatements ?? m.statements) {
                try c.execute(sql.replacingOccurrences(of: "{P}", with: partitions))
            }
            try c.prepare("INSERT INTO rtd_schema_migrations (version, description, applied_at) VALUES (?, ?, ?)")
                .execute([.int(Int64(m.version)), .text(m.description), .int(now)])
            applied.append(m.version)
        }
        return applied
    }
}
