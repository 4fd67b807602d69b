/// Partition upkeep and retention, run on the maintenance connection.
///
/// - Raw samples: `rtd_samples` is partitioned by UTC day on `ts`. Each run makes sure day
///   partitions exist up to `aheadDays` after today (splitting the empty `p_future`), drops day
///   partitions that end at or before `now − rawRetentionDays`, and empties `p_old` (everything
///   older than the first day partition). Dropping a partition is a metadata operation: it never
///   deletes row by row and holds the table's metadata lock only briefly (the session's
///   `lock_wait_timeout` is 5 s, so it gives up rather than queue in front of inserts for long).
/// - Rollups and the write log: deleted in batches of 5,000 rows, each its own short transaction.
/// - One instance at a time (`GET_LOCK('rtd_maint.<SHA-1 of the database name>')`; a run that finds it taken is skipped):
///   two instances changing partitions at the day's turn read the same list and the second's
///   ALTER failed on a partition the first had just made or dropped.
enum Maintenance {
    static let deleteBatch = 5_000
    /// The maintenance lock of this database: `rtd_maint.` and the SHA-1 of its name (50 characters).
    static let lockName = "CONCAT('rtd_maint.', SHA1(DATABASE()))"

    /// - Parameter recoveryWindow: how far before a live writer's `rollups_through` its write-log
    ///   rows can still be read by ``RollupRepair/recoverDead(_:mine:timeout:settle:maxFuture:)``
    ///   (2 × settle + the future-timestamp bound).
    /// - Returns: day partitions dropped and rollup rows deleted.
    static func run(_ c: Connection, now: Int64, rawRetentionDays: Int, rollupRetentionDays: Int, aheadDays: Int,
                    recoveryWindow: Int64) throws -> (Int, Int) {
        // Named per database (locks are server-wide, and other deployments may share the server),
        // by a hash: lock names are at most 64 characters, database names as long.
        guard try c.query("SELECT GET_LOCK(\(Self.lockName), 0)").first?.first??.hasPrefix("1") == true else { return (0, 0) }
        defer { _ = try? c.query("SELECT RELEASE_LOCK(\(Self.lockName))") }
        let day = Schema.dayMilliseconds
        let rawCutoff = now - Int64(rawRetentionDays) * day
        var dropped = 0
        let parts = try c.query("""
            SELECT PARTITION_NAME, PARTITION_DESCRIPTION FROM information_schema.PARTITIONS
            WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'rtd_samples' ORDER BY PARTITION_ORDINAL_POSITION
            """)
        let named = parts.compactMap { row -> (String, String)? in
            guard let name = row[0], let bound = row[1] else { return nil }
            return (name, bound)
        }
        if named.isEmpty {
            // Not partitioned (e.g. converted by an operator): delete in batches instead.
            try deleteInBatches(c, "DELETE FROM rtd_samples WHERE ts < ? LIMIT \(deleteBatch)", [.int(rawCutoff)])
        } else {
            // 1. Day partitions ahead.
            let highest = named.compactMap { $0.0 == "p_future" ? nil : Int64($0.1) }.max() ?? Schema.dayStart(now)
            let target = Schema.dayStart(now) + Int64(aheadDays + 1) * day
            if highest < target, named.contains(where: { $0.0 == "p_future" }) {
                var defs: [String] = []
                var start = highest
                while start < target {
                    defs.append("PARTITION \(Schema.partitionName(dayStart: start)) VALUES LESS THAN (\(start + day))")
                    start += day
                }
                defs.append("PARTITION p_future VALUES LESS THAN MAXVALUE")
                try c.execute("ALTER TABLE rtd_samples REORGANIZE PARTITION p_future INTO (\(defs.joined(separator: ", ")))")
            }
            // 2. Expired day partitions.
            let expired = named.filter { $0.0 != "p_old" && $0.0 != "p_future" && (Int64($0.1) ?? Int64.max) <= rawCutoff }.map(\.0)
            if !expired.isEmpty {
                try c.execute("ALTER TABLE rtd_samples DROP PARTITION \(expired.joined(separator: ", "))")
                dropped = expired.count
            }
            // 3. p_old holds only samples older than every day partition: empty it when it has rows.
            if let old = named.first(where: { $0.0 == "p_old" }), let bound = Int64(old.1), bound <= rawCutoff,
               !(try c.query("SELECT 1 FROM rtd_samples PARTITION (p_old) LIMIT 1")).isEmpty {
                try c.execute("ALTER TABLE rtd_samples TRUNCATE PARTITION p_old")
            }
        }
        let rollupCutoff = now - Int64(rollupRetentionDays) * day
        let expiredRollups = try deleteInBatches(c, "DELETE FROM rtd_rollups WHERE minute < ? LIMIT \(deleteBatch)", [.int(rollupCutoff)])
        // The write log only has to outlive any retry of a batch: a day is plenty.
        // Not the rows of writers still registered: a dead instance's rows tell which minutes to
        // repair, however long it stayed unclaimed (e.g. the whole deployment was down for days).
        try deleteInBatches(c, "DELETE FROM rtd_write_log WHERE written_at < ? AND writer NOT IN (SELECT writer FROM rtd_instances) LIMIT \(deleteBatch)", [.int(now - day)])
        // A running writer's rows once no recovery can read them (older than its committed
        // rollups by the recovery window): it writes one a flush, for as long as it runs.
        try deleteInBatches(c, """
            DELETE FROM rtd_write_log WHERE written_at < ? AND EXISTS (SELECT 1 FROM rtd_instances i
            WHERE i.writer = rtd_write_log.writer AND rtd_write_log.written_at < i.rollups_through - ?) LIMIT \(deleteBatch)
            """, [.int(now - day), .int(recoveryWindow)])
        return (dropped, expiredRollups)
    }

    @discardableResult
    static func deleteInBatches(_ c: Connection, _ sql: String, _ parameters: [SQLValue]) throws -> Int {
        var total = 0
        for _ in 0..<10_000 {
            let n = Int(try c.prepare(sql).execute(parameters))
            total += n
            if n < deleteBatch { break }
        }
        return total
    }
}
