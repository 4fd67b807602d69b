import Foundation
import Synchronization
@testable import MetricsCore

// Shared helpers for the MetricsCore tests (Aggregation, Storage, Ingest, Broadcast, Engine).
// Everything lives in the `CoreTestSupport` namespace so it cannot clash with other test files of
// the target.

enum CoreTestSupport {
    /// The seeded generator shared with the parsing tests (``SplitMix64``), with the
    /// distributions below, so every random test is reproducible.
    typealias SeededRNG = SplitMix64

    /// The value at the rank `QuantileSketch.quantile(q)` targets: `floor(q * (n - 1))` of the sorted values.
    static func exactQuantile(_ sorted: [Double], _ q: Double) -> Double {
        precondition(!sorted.isEmpty)
        if q <= 0 { return sorted[0] }
        if q >= 1 { return sorted[sorted.count - 1] }
        return sorted[Int((q * Double(sorted.count - 1)).rounded(.down))]
    }

    /// Whether `estimate` is within relative error `alpha` of `exact` (plus floating-point slack).
    static func withinRelative(_ estimate: Double, _ exact: Double, _ alpha: Double) -> Bool {
        abs(estimate - exact) <= alpha * abs(exact) * (1 + 1e-9) + 1e-12
    }

    /// Whether two sums agree up to floating-point reassociation.
    static func sumsAgree(_ a: Double, _ b: Double, scale: Double) -> Bool {
        abs(a - b) <= 1e-9 * Swift.max(1, scale)
    }

    /// Stats of a list of values, computed naively.
    static func stats(_ values: [Double]) -> WindowStats {
        var w = WindowStats()
        for v in values { w.add(v) }
        return w
    }

    static func sample(_ server: String, _ metric: String, _ value: Double, _ ts: Int64, labels: String = "") -> MetricSample {
        MetricSample(serverID: server, metricName: metric, value: value, timestamp: ts, labels: labels)
    }

    static func snapshot(_ server: String, _ metric: String, last: Double, seq: UInt64, labels: String = "",
                         timestamp: Int64 = 1_700_000_000_000) -> SeriesSnapshot {
        var w = WindowStats()
        w.add(last)
        return SeriesSnapshot(key: SeriesKey(serverID: server, metricName: metric, labels: labels), last: last,
                              lastTimestamp: timestamp, total: w, window1m: w, window5m: w,
                              p50: last, p95: last, p99: last, changedSeq: seq)
    }

    /// A minute-aligned epoch-ms base, plus an offset, for deterministic timestamps.
    static let baseMinute: Int64 = 1_700_000_040_000 - (1_700_000_040_000 % 60_000)

    // MARK: - SSE

    /// One parsed Server-Sent Event.
    struct SSEEvent {
        var id: String?
        var event: String?
        var retry: Int?
        var data: String
        /// The `data:` payload parsed with Foundation.
        var json: [String: Any]

        var type: String? { json["type"] as? String }
        var seq: Int? { (json["seq"] as? NSNumber)?.intValue }
        var rows: [[String: Any]] { (json["data"] as? [[String: Any]]) ?? [] }
        var fleet: [[String: Any]] { (json["fleet"] as? [[String: Any]]) ?? [] }
        var truncated: Bool { (json["truncated"] as? Bool) ?? false }
        /// `server_id/metric_name{labels}` of every row, in order.
        var rowKeys: [String] {
            rows.map { r in
                let base = "\(r["server_id"] as? String ?? "?")/\(r["metric_name"] as? String ?? "?")"
                if let l = r["labels"] as? String { return base + "{\(l)}" }
                return base
            }
        }
        func row(_ key: String) -> [String: Any]? { zip(rowKeys, rows).first { $0.0 == key }?.1 }
    }

    /// A JSON number from a Foundation-parsed object.
    static func number(_ obj: [String: Any]?, _ key: String) -> Double? { (obj?[key] as? NSNumber)?.doubleValue }

    enum SSEError: Error { case notUTF8, notTerminated, noData, badJSON(String) }

    /// Parses one complete SSE frame (`id:`, `event:`, `retry:`, `data:` lines, blank-line terminated).
    static func parseSSE(_ bytes: [UInt8]) throws -> SSEEvent {
        guard let text = String(validating: bytes, as: UTF8.self) else { throw SSEError.notUTF8 }
        guard text.hasSuffix("\n\n") else { throw SSEError.notTerminated }
        var id: String?, event: String?, retry: Int?
        var dataLines: [String] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let field = String(line[..<colon])
            var value = line[line.index(after: colon)...]
            if value.first == " " { value = value.dropFirst() }
            switch field {
            case "id": id = String(value)
            case "event": event = String(value)
            case "retry": retry = Int(value)
            case "data": dataLines.append(String(value))
            default: break
            }
        }
        guard !dataLines.isEmpty else { throw SSEError.noData }
        let data = dataLines.joined(separator: "\n")
        guard let obj = try JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any] else {
            throw SSEError.badJSON(data)
        }
        return SSEEvent(id: id, event: event, retry: retry, data: data, json: obj)
    }

    // MARK: - Async plumbing

    /// A thread-safe list that callbacks append to.
    final class Recorder<T: Sendable>: Sendable {
        private let items = Mutex<[T]>([])
        func append(_ t: T) { items.withLock { $0.append(t) } }
        var all: [T] { items.withLock { $0 } }
        var count: Int { items.withLock { $0.count } }
    }

    /// A gate that tasks wait on until it is opened (no timers involved).
    final class Gate: Sendable {
        private struct State {
            var open = false
            var waiters: [CheckedContinuation<Void, Never>] = []
        }
        private let state = Mutex(State())

        init(open: Bool = false) { state.withLock { $0.open = open } }

        func wait() async {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now: Bool = state.withLock { s in
                    if s.open { return true }
                    s.waiters.append(c)
                    return false
                }
                if now { c.resume() }
            }
        }

        func open() {
            let w: [CheckedContinuation<Void, Never>] = state.withLock { s in
                s.open = true
                defer { s.waiters.removeAll() }
                return s.waiters
            }
            for c in w { c.resume() }
        }
    }

    /// A store that records every batch, optionally holds each write until a gate opens, and can
    /// fail a number of times first. `history` and `recentRollups` are served by an inner `MemoryStore`.
    actor TestStore: MetricStore {
        private(set) var batches: [StoreBatch] = []
        private(set) var attempts = 0
        private var failuresLeft: Int
        private let gate: Gate?
        private let attemptGates: [Int: Gate]
        let inner = MemoryStore()
        /// Yields the sample count of every write attempt as it starts.
        nonisolated let writeStarted: AsyncStream<Int>
        private let writeStartedContinuation: AsyncStream<Int>.Continuation
        private(set) var closed = false
        nonisolated let concurrentWrites: Int
        nonisolated var maxConcurrentWrites: Int { concurrentWrites }

        struct Failure: Error, CustomStringConvertible {
            var attempt: Int
            var description: String { "injected failure \(attempt)" }
        }

        /// - Parameters:
        ///   - gate: every write waits for it.
        ///   - failures: the first `failures` attempts throw (after passing the gates).
        ///   - attemptGates: attempt number (1-based) → a gate only that attempt waits for.
        ///   - concurrentWrites: ``MetricStore/maxConcurrentWrites``.
        init(gate: Gate? = nil, failures: Int = 0, attemptGates: [Int: Gate] = [:], concurrentWrites: Int = 1) {
            self.concurrentWrites = concurrentWrites
            self.gate = gate
            self.attemptGates = attemptGates
            self.failuresLeft = failures
            (writeStarted, writeStartedContinuation) = AsyncStream<Int>.makeStream()
        }

        func write(_ batch: StoreBatch) async throws {
            attempts += 1
            let attempt = attempts
            writeStartedContinuation.yield(batch.samples.count)
            if let gate { await gate.wait() }
            if let g = attemptGates[attempt] { await g.wait() }
            if failuresLeft > 0 {
                failuresLeft -= 1
                throw Failure(attempt: attempt)
            }
            batches.append(batch)
            try await inner.write(batch)
        }

        func history(_ query: HistoryQuery) async throws -> HistoryResult { try await inner.history(query) }
        func recentRollups(since: Int64) async throws -> [MinuteRollup] { try await inner.recentRollups(since: since) }
        func health() async -> StoreHealth { await inner.health() }
        func close() async throws { closed = true }

        var allSamples: [MetricSample] { batches.flatMap(\.samples) }
        var allRollups: [MinuteRollup] { batches.flatMap(\.rollups) }
    }
}

extension SplitMix64 {
    /// Uniform in the open interval (0, 1).
    mutating func unit() -> Double {
        (Double(next() >> 11) + 0.5) / 9_007_199_254_740_992.0
    }

    /// Standard normal (Box–Muller).
    mutating func normal() -> Double {
        let u1 = unit(), u2 = unit()
        return (-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * Double.pi * u2)
    }

    mutating func lognormal(mu: Double, sigma: Double) -> Double { Foundation.exp(mu + sigma * normal()) }
    mutating func pareto(scale: Double, shape: Double) -> Double { scale / Foundation.pow(unit(), 1 / shape) }
    mutating func exponential(rate: Double) -> Double { -Foundation.log(unit()) / rate }
    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &self) }
    mutating func chance(_ p: Double) -> Bool { unit() < p }
}
