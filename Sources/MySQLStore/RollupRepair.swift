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
/// A request waits until it is older than the settle time (the live rollups of those minutes are
/// then sealed and written: the aggregator seals a minute at most about 65 s after its last sample)
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
    /// How far before a dead writer's rollup watermark its batches are looked at, beyond the settle
    /// time: more than the longest a minute stays open in the aggregator (seal delay + 60 s).
    static let lookback: Int64 = 120_000

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
            return (a...min(b, a + 100_000)).map { $0 * 60_000 }
        }
        return text.split(separator: ",").compactMap { Int64($0).map { $0 * 60_000 } }
    }

    /// Requests a repair of the `(minute, server)` pairs of `samples` (inside the caller's transaction).
    static func requestForResends(_ c: Connection, _ samples: ArraySlice<MetricSample>, now: Int64) throws {
        var pairs = Set<Pair>()
        for s in samples { pairs.insert(Pair(minute: MinuteRollup.minute(of: s.timestamp), server: s.serverID)) }
        try request(c, pairs.sorted(), now: now)
    }

    struct Pair: Hashable, Comparable {
        var minute: Int64
        var server: String
        static func < (a: Pair, b: Pair) -> Bool { (a.minute, a.server) < (b.minute, b.server) }
    }

    /// Inserts or renews requests, in key order (a stable lock order across writers).
    static func request(_ c: Connection, _ pairs: [Pair], now: Int64) throws {
        var i = 0
        while i < pairs.count {
            let part = pairs[i..<min(i + 200, pairs.count)]
            i += part.count
            var values: [SQLValue] = []
            values.reserveCapacity(part.count * 3)
            for p in part { values += [.int(p.minute), .text(p.server), .int(now)] }
            try c.prepare("INSERT INTO rtd_rollup_repairs (minute, server_id, requested_at) VALUES " + valueRows(part.count, columns: 3)
                          + " ON DUPLICATE KEY UPDATE requested_at = GREATEST(requested_at, VALUES(requested_at))").execute(values)
        }
    }

    // MARK: Instances

    /// Registers this process's writers as running.
    static func register(_ c: Connection, writers: [[UInt8]], host: String, now: Int64) throws {
        for w in writers {
            try c.prepare("REPLACE INTO rtd_instances (writer, host, started_at, heartbeat_at, rollups_through) VALUES (?, ?, ?, ?, ?)")
                .execute([.blob(w), .text(host), .int(now), .int(now), .int(now)])
        }
    }

    /// Renews the heartbeat and the rollup watermark of this process's writers.
    static func heartbeat(_ c: Connection, writers: [[UInt8]], now: Int64, rollupsThrough: Int64) throws {
        for w in writers {
            try c.prepare("UPDATE rtd_instances SET heartbeat_at = ?, rollups_through = ? WHERE writer = ?")
                .execute([.int(now), .int(rollupsThrough), .blob(w)])
        }
    }

    /// A clean stop: every rollup is committed, nothing to recover.
    static func unregister(_ c: Connection, writers: [[UInt8]]) throws {
        for w in writers { try c.prepare("DELETE FROM rtd_instances WHERE writer = ?").execute([.blob(w)]) }
    }

    /// Claims writers whose heartbeat is older than `timeout` and requests repairs of the minutes
    /// their recent batches wrote. Returns how many it claimed.
    static func recoverDead(_ c: Connection, mine: [[UInt8]], now: Int64, timeout: Int64, settle: Int64) throws -> Int {
        let dead = try c.prepare("SELECT writer, rollups_through FROM rtd_instances WHERE heartbeat_at < ?").select([.int(now - timeout)])
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
                var minutes = Set<Int64>()
                // Its batches since its rollups were last known committed, and a seal delay before:
                // a minute stays open in the aggregator until up to ~65 s after its last sample.
                for r in try c.prepare("SELECT minutes FROM rtd_write_log WHERE writer = ? AND written_at >= ?")
                    .select([.blob(writer), .int(through - max(settle, 0) - lookback)]) {
                    if let text = r[0].string { minutes.formUnion(Self.minutes(from: text)) }
                }
                try request(c, minutes.sorted().map { Pair(minute: $0, server: "") }, now: now)
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
        // Due: requested at least `settle` ago, and the minute ended at least `settle` ago (no
        // instance still holds it open: its rollup would be merged on top of the rebuilt one).
        let due = try c.prepare("""
            SELECT minute, server_id, requested_at FROM rtd_rollup_repairs WHERE requested_at <= ? AND minute <= ? ORDER BY minute LIMIT 10000
            """).select([.int(now - settle), .int(now - settle - 60_000)])
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
        let key = SeriesKey(serverID: "-", metricName: "-")
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
                let r = MinuteRollup(key: key, minute: minute, sketch: sketch)
                rows += [.uint(id), .int(minute), .uint(r.count), .double(r.sum), .double(r.min), .double(r.max), .blob(sketch.serialized())]
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
/// the oldest batch not yet committed, or of the newest committed batch when none is pending.
/// (A batch carries every rollup queued before it was taken, so once it commits, every rollup
/// queued before its first attempt is in the database.)
final class RollupWatermark: Sendable {
    private struct State {
        var pending: [UInt64: Int64] = [:]
        var committedThrough: Int64
    }
    private let state: Mutex<State>

    init(now: Int64) { state = Mutex(State(committedThrough: now)) }

    func begin(_ sequence: UInt64, now: Int64) {
        state.withLock { s in if s.pending[sequence] == nil { s.pending[sequence] = now } }
    }

    func committed(_ sequence: UInt64) {
        state.withLock { s in
            if let started = s.pending.removeValue(forKey: sequence) { s.committedThrough = max(s.committedThrough, started) }
        }
    }

    var value: Int64 {
        state.withLock { s in min(s.committedThrough, s.pending.values.min() ?? .max) }
    }
}
