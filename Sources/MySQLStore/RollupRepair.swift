import MetricsCore
import Synchronization

/// Rebuilding minute rollups from raw rows where the two may disagree.
///
/// Raw samples are the record: `rtd_samples` holds every acknowledged sample exactly once. Minute
/// rollups are derived by the live aggregator and can disagree with the raw rows in two ways:
///
/// 1. **An instance died** (SIGKILL, power loss) before sealing its open minutes: their raw rows are
///    committed, their rollups never were. Every running instance keeps a heartbeat row in
///    `rtd_instances` with the time up to which its rollups are committed (`rollups_through`);
///    when a heartbeat is older than the instance timeout, a live instance claims the row (deletes
///    it; only one succeeds) and requests a repair of every minute listed in the dead writer's
///    write-log rows since `rollups_through` minus the settle time.
/// 2. **A resend was folded twice.** An agent resends lines a crashed instance had committed
///    without acknowledging them; `INSERT IGNORE` stores the samples once, but the receiving
///    aggregator counts them again. A batch whose raw insert skipped duplicates requests a repair
///    of its `(minute, server)` pairs, in the batch's own transaction.
///
/// A request waits until it is older than the settle time and every registered instance's rollup
/// watermark is the settle time past the minute's end (the live rollups of that minute are then
/// sealed and committed: the aggregator seals a minute at most about 65 s after its last sample,
/// so the settle time, `--store-rollup-settle`, must exceed that: default 120 s),
/// and is then carried out by whichever instance gets to it: the raw values of each series of
/// the minute are read through the primary key (`series_id IN (…) AND ts` in the minute) and the
/// rollup row is overwritten with their count, sum, min, max and sketch. A request renewed meanwhile
/// (its `requested_at` changed) stays for the next round. Doing a repair twice writes the same row.
///
/// Limit: a late sample for an already repaired minute whose raw row commits just before the
/// repair reads the minute and whose rollup merges just after is counted twice; the window is the
/// time between a batch's commit and the next batch (about a tick).
enum RollupRepair {
    /// Most distinct minutes listed in a write-log row; a batch spanning more lists its first and
    /// last minute as a range (`a-b`), and a repair covers the whole range.
    static let maxListedMinutes = 1_000

    /// The distinct minutes (epoch ms of their start) of `samples`, as the text kept in
    /// `rtd_write_log.minutes`: `m1,m2,…` in minute numbers (ms / 60,000), or `a-b` for a range.
    static func minutesText(_ samples: ArraySlice<MetricSample>) -> [UInt8] {
        var seen = Set<Int64>()
        var last = Int64.min
        var low = Int64.max, high = Int64.min
        for s in samples {
            let m = MinuteRollup.minute(of: s.timestamp) / 60_000
            if m == last { continue }
            last = m
            seen.insert(m)
            low = min(low, m)
            high = max(high, m)
        }
        if seen.isEmpty { return [] }
        if seen.count > maxListedMinutes { return Array("\(low)-\(high)".utf8) }
        return Array(seen.sorted().map(String.init).joined(separator: ",").utf8)
    }

    /// The minutes (epoch ms) a `minutes` text lists.
    static func minutes(from text: String) -> [Int64] {
        if let dash = text.firstIndex(of: "-"), dash != text.startIndex,
           let a = Int64(text[..<dash]), let b = Int64(text[text.index(after: dash)...]), a <= b {
            return (max(a, b - 100_000)...b).map { $0 * 60_000 }  // the newest minutes are the ones likely still open
        }
        return text.split(separator: ",").compactMap { Int64($0).map { $0 * 60_000 } }
    }

    /// Requests a repair of the `(minute, server)` pairs of `samples` (inside the caller's transaction).
    static func requestForResends(_ c: Connection, _ samples: ArraySlice<MetricSample>) throws {
        var pairs = Set<Pair>()
        for s in samples { pairs.insert(Pair(minute: MinuteRollup.minute(of: s.timestamp), server: s.serverID)) }
        try request(c, pairs.sorted())
    }

    struct Pair: Hashable, Comparable {
        var minute: Int64
        var server: String
        static func < (a: Pair, b: Pair) -> Bool { (a.minute, a.server) < (b.minute, b.server) }
    }

    /// The database server's clock in epoch milliseconds: heartbeats and repair requests are
    /// stamped and compared with it, so instances whose clocks disagree still agree on ages.
    static let dbNow = "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)"

    /// Inserts or renews requests, in key order (a stable lock order across writers), stamped with
    /// the database clock.
    static func request(_ c: Connection, _ pairs: [Pair]) throws {
        var i = 0
        while i < pairs.count {
            let part = pairs[i..<min(i + 200, pairs.count)]
            i += part.count
            var values: [SQLValue] = []
            values.reserveCapacity(part.count * 2)
            for p in part { values += [.int(p.minute), .text(p.server)] }
            let rows = Array(repeating: "(?, ?, \(dbNow))", count: part.count).joined(separator: ", ")
            try c.prepare("INSERT INTO rtd_rollup_repairs (minute, server_id, requested_at) VALUES " + rows
                          + " ON DUPLICATE KEY UPDATE requested_at = VALUES(requested_at)").execute(values)
        }
    }

    // MARK: Instances

    /// Registers this process's writers as running, or renews their heartbeat and rollup watermark
    /// (an upsert: a row another instance deleted, taking this one for dead while it was cut off
    /// from the database, comes back). Returns whether a row had to be re-created.
    @discardableResult
    static func heartbeat(_ c: Connection, writers: [[UInt8]], host: String, rollupsThrough: Int64) throws -> Bool {
        var recreated = false
        for w in writers {
            // Affected rows: 1 inserted, 2 updated (0 unchanged cannot happen: the clock moved).
            let n = try c.prepare("""
                INSERT INTO rtd_instances (writer, host, started_at, heartbeat_at, rollups_through) VALUES (?, ?, \(dbNow), \(dbNow), ?)
                ON DUPLICATE KEY UPDATE heartbeat_at = VALUES(heartbeat_at), rollups_through = VALUES(rollups_through)
                """).execute([.blob(w), .text(host), .int(rollupsThrough)])
            if n == 1 { recreated = true }
        }
        return recreated
    }

    /// A clean stop: every rollup is committed, nothing to recover.
    static func unregister(_ c: Connection, writers: [[UInt8]]) throws {
        for w in writers { try c.prepare("DELETE FROM rtd_instances WHERE writer = ?").execute([.blob(w)]) }
    }

    /// Claims writers whose heartbeat (database clock) is older than `timeout` and requests
    /// repairs of the minutes their recent batches wrote. Returns how many it claimed.
    ///
    /// The minutes: those listed by the dead writer's batches written since its rollup watermark
    /// minus twice `settle` (a minute stays open in an aggregator until up to `settle` after its
    /// end), and, of its batches written up to `maxFuture` earlier, the minutes that had not
    /// ended `settle` before the watermark (samples stamped ahead of
    /// the clock keep a minute open after the batch that brought them).
    static func recoverDead(_ c: Connection, mine: [[UInt8]], timeout: Int64, settle: Int64, maxFuture: Int64) throws -> Int {
        let dead = try c.prepare("SELECT writer, rollups_through FROM rtd_instances WHERE heartbeat_at < \(dbNow) - ?").select([.int(timeout)])
        var claimed = 0
        for row in dead {
            guard let writer = row[0].bytes, !mine.contains(writer), let through = row[1].int64 else { continue }
            try c.execute("START TRANSACTION")
            do {
                // Only one instance deletes the row; it does the recovery.
                guard try c.prepare("DELETE FROM rtd_instances WHERE writer = ?").execute([.blob(writer)]) == 1 else {
                    try c.execute("ROLLBACK")
                    continue
                }
                let recent = through - 2 * max(settle, 0)
                var minutes = Set<Int64>()
                for r in try c.prepare("SELECT minutes, written_at FROM rtd_write_log WHERE writer = ? AND written_at >= ?")
                    .select([.blob(writer), .int(recent - maxFuture)]) {
                    guard let text = r[0].string, let at = r[1].int64 else { continue }
                    for m in Self.minutes(from: text) where at >= recent || m + 60_000 + settle >= through {
                        minutes.insert(m)
                    }
                }
                try request(c, minutes.sorted().map { Pair(minute: $0, server: "") })
                try c.execute("COMMIT")
                claimed += 1
            } catch {
                _ = try? c.execute("ROLLBACK")
                throw error
            }
        }
        return claimed
    }

    // MARK: Carrying out requests

    /// What one round of repairs did.
    struct Done {
        var minutes = 0
        var rollups = 0
    }

    /// Carries out the requests older than `settle`: rebuilds the rollups of each requested minute
    /// (of the requested servers, or of every series) from raw rows. Requests for minutes older than
    /// `rawCutoff` (raw rows gone) are dropped.
    static func run(_ c: Connection, now: Int64, settle: Int64, rawCutoff: Int64) throws -> Done {
        var done = Done()
        // Due: requested at least `settle` ago (database clock), its minute ended at least `settle`
        // ago, and every registered instance has committed the rollups it could still hold for the
        // minute (its watermark is `settle` past the minute's end). A rollup committed after the
        // rebuild would be merged on top of it. An instance that died holds the minimum back until
        // it is claimed.
        let watermarkRow = try c.query("SELECT MIN(rollups_through) FROM rtd_instances")
        let oldestWatermark = watermarkRow.first.flatMap { $0.first ?? nil }.flatMap { Int64($0) } ?? Int64.max
        let due = try c.prepare("""
            SELECT minute, server_id, requested_at FROM rtd_rollup_repairs
            WHERE requested_at <= \(dbNow) - ? AND minute <= ? AND minute <= ? ORDER BY minute LIMIT 10000
            """).select([.int(settle), .int(now - settle - 60_000), .int(oldestWatermark == .max ? .max : oldestWatermark - 60_000 - settle)])
        var byMinute: [Int64: [(server: String, requestedAt: Int64)]] = [:]
        for row in due {
            guard let m = row[0].int64, let at = row[2].int64 else { continue }
            byMinute[m, default: []].append((row[1].string ?? "", at))
        }
        for (minute, requests) in byMinute.sorted(by: { $0.key < $1.key }) {
            if minute + 60_000 > rawCutoff {
                var ids: [UInt64] = []
                if requests.contains(where: { $0.server.isEmpty }) {
                    ids = try c.prepare("SELECT id FROM rtd_series").select([]).compactMap { $0[0].uint64 }
                } else {
                    ids = try lookUpIDs(c, servers: requests.map(\.server))
                }
                done.rollups += try rebuild(c, minute: minute, series: ids)
                done.minutes += 1
            }
            for r in requests {
                try c.prepare("DELETE FROM rtd_rollup_repairs WHERE minute = ? AND server_id = ? AND requested_at = ?")
                    .execute([.int(minute), .text(r.server), .int(r.requestedAt)])
            }
        }
        return done
    }

    /// Rows per `IN (…)` list: fixed, so each statement is prepared once per connection (short
    /// lists repeat their last value).
    static let chunk = 500

    static func inList(_ n: Int) -> String { Array(repeating: "?", count: n).joined(separator: ", ") }

    private static func lookUpIDs(_ c: Connection, servers: [String]) throws -> [UInt64] {
        var out: [UInt64] = []
        var i = 0
        while i < servers.count {
            let part = servers[i..<min(i + chunk, servers.count)]
            i += part.count
            let values: [SQLValue] = (0..<chunk).map { .text(part[part.startIndex + min($0, part.count - 1)]) }
            out += try c.prepare("SELECT id FROM rtd_series WHERE server_id IN (\(inList(chunk)))").select(values).compactMap { $0[0].uint64 }
        }
        return out
    }

    /// Overwrites the rollups of `minute` for `series` with what their raw rows say.
    private static func rebuild(_ c: Connection, minute: Int64, series: [UInt64]) throws -> Int {
        var written = 0
        var i = 0
        while i < series.count {
            let part = series[i..<min(i + chunk, series.count)]
            i += part.count
            var values: [SQLValue] = (0..<chunk).map { .uint(part[part.startIndex + min($0, part.count - 1)]) }
            values += [.int(minute), .int(minute + 60_000)]
            var sketches: [UInt64: QuantileSketch] = [:]
            for row in try c.prepare("SELECT series_id, value FROM rtd_samples WHERE series_id IN (\(inList(chunk))) AND ts >= ? AND ts < ?")
                .select(values) {
                guard let id = row[0].uint64, let v = row[1].double else { continue }
                sketches[id, default: QuantileSketch(relativeAccuracy: 0.01)].add(v)
            }
            guard !sketches.isEmpty else { continue }
            var rows: [SQLValue] = []
            for (id, sketch) in sketches.sorted(by: { $0.key < $1.key }) {
                rows += [.uint(id), .int(minute), .uint(sketch.count), .double(MySQLStore.storableSum(sketch.sum)), .double(sketch.min), .double(sketch.max),
                         .blob(sketch.serialized())]
            }
            try c.prepare("""
                INSERT INTO rtd_rollups (series_id, minute, sample_count, value_sum, value_min, value_max, sketch) VALUES
                """ + valueRows(sketches.count, columns: 7) + """
                 ON DUPLICATE KEY UPDATE sample_count = VALUES(sample_count), value_sum = VALUES(value_sum),
                value_min = VALUES(value_min), value_max = VALUES(value_max), sketch = VALUES(sketch), incoming = NULL, merge_pending = NULL
                """).execute(rows)
            written += sketches.count
        }
        return written
    }
}

/// The time up to which every rollup handed to the store is committed: the first-attempt start of
/// the oldest batch not yet committed, or now when none is pending. (A batch carries every rollup
/// queued before it was taken, so once it commits, every rollup queued before its first attempt is
/// in the database; a batch retried through a database outage holds the watermark back.) Rollup
/// parts the live aggregates still hold back hold it at the start of their earliest minute.
final class RollupWatermark: Sendable {
    private let pending = Mutex<[UInt64: Int64]>([:])
    /// ``MetricStore/rollupsHeld(fromMinute:)``: the earliest minute of which the live aggregates
    /// still hold rollup parts back.
    private let held = Mutex<Int64?>(nil)

    init() {}

    func setHeld(fromMinute: Int64?) {
        held.withLock { $0 = fromMinute }
    }

    func begin(_ sequence: UInt64, now: Int64) {
        pending.withLock { p in if p[sequence] == nil { p[sequence] = now } }
    }

    func committed(_ sequence: UInt64) {
        _ = pending.withLock { $0.removeValue(forKey: sequence) }
    }

    func value(now: Int64) -> Int64 {
        let batches = pending.withLock { $0.values.min() ?? now }
        return min(batches, held.withLock { $0 } ?? now)
    }
}
