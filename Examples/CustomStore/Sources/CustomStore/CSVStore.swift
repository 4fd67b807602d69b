import Foundation
import MetricsCore

/// A `MetricStore` that appends raw samples and minute rollups to two CSV files.
///
/// What a backend must honour (see `MetricStore`):
/// - `write(_:)` returns only when the batch is durable by the store's own standard: here the
///   rows are appended and `fsync`ed. The server acknowledges samples to agents right after.
/// - A failed write must leave nothing applied, because the writer retries the same batch
///   (the writer never repeats a batch that succeeded): here both files' lengths are noted
///   before the batch is appended, and any failure (an append, or the `fsync` after it) cuts
///   both files back to those lengths before the error is thrown, so a retry cannot count a
///   sample twice.
/// - Rollups are mergeable: several rows may exist for one series and minute (late data);
///   `history` merges them. Sketches are stored with `QuantileSketch.serialized()` (hex).
public actor CSVStore: MetricStore {
    private let samplesFile: FileHandle
    private let rollupsFile: FileHandle
    private let rollupsPath: URL
    private var written = 0

    public init(directory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        func open(_ name: String, header: String) throws -> FileHandle {
            let url = directory.appendingPathComponent(name)
            if !FileManager.default.fileExists(atPath: url.path) {
                try Data((header + "\n").utf8).write(to: url)
            }
            let h = try FileHandle(forWritingTo: url)
            try h.seekToEnd()
            return h
        }
        samplesFile = try open("samples.csv", header: "server_id,metric_name,labels,ts,value")
        rollupsFile = try open("rollups.csv", header: "server_id,metric_name,labels,minute,count,sum,min,max,sketch_hex")
        rollupsPath = directory.appendingPathComponent("rollups.csv")
    }

    public func write(_ batch: StoreBatch) async throws {
        var samples = ""
        for s in batch.samples {
            samples += "\(s.serverID),\(s.metricName),\"\(s.labels)\",\(s.timestamp),\(s.value)\n"
        }
        var rollups = ""
        for r in batch.rollups {
            let hex = r.sketch.serialized().map { String(format: "%02x", $0) }.joined()
            rollups += "\(r.key.serverID),\(r.key.metricName),\"\(r.key.labels)\",\(r.minute),\(r.count),\(r.sum),\(r.min),\(r.max),\(hex)\n"
        }
        let samplesEnd = try samplesFile.offset(), rollupsEnd = try rollupsFile.offset()
        do {
            try samplesFile.write(contentsOf: Data(samples.utf8))
            try rollupsFile.write(contentsOf: Data(rollups.utf8))
            try samplesFile.synchronize()
            try rollupsFile.synchronize()
        } catch {
            // Nothing of a failed batch stays: the retry appends it whole, once.
            try? samplesFile.truncate(atOffset: samplesEnd)
            try? rollupsFile.truncate(atOffset: rollupsEnd)
            throw error
        }
        written += batch.samples.count
    }

    public func history(_ query: HistoryQuery) async throws -> HistoryResult {
        var rollups = query.openRollups
        let text = try String(contentsOf: rollupsPath, encoding: .utf8)
        for line in text.split(separator: "\n").dropFirst() {
            // server,metric,"labels",minute,count,sum,min,max,hex (labels never contain `"`)
            let quoted = line.split(separator: "\"", omittingEmptySubsequences: false)
            guard quoted.count == 3 else { continue }
            let head = quoted[0].split(separator: ",", omittingEmptySubsequences: false)
            let tail = quoted[2].split(separator: ",").map(String.init)
            guard head.count >= 2, tail.count == 6, String(head[0]) == query.serverID, String(head[1]) == query.metricName,
                  query.labels == nil || query.labels == String(quoted[1]),
                  let minute = Int64(tail[0]), minute >= MinuteRollup.minute(of: query.from), minute < query.to else { continue }
            var bytes: [UInt8] = []
            var hex = tail[5][...]
            while hex.count >= 2, let b = UInt8(hex.prefix(2), radix: 16) { bytes.append(b); hex = hex.dropFirst(2) }
            let key = SeriesKey(serverID: query.serverID, metricName: query.metricName, labels: String(quoted[1]))
            rollups.append(MinuteRollup(key: key, minute: minute, sketch: try QuantileSketch(serialized: bytes)))
        }
        return HistoryResult.bucketing(rollups, from: query.from, to: query.to, maxPoints: query.maxPoints)
    }

    public func health() async -> StoreHealth {
        StoreHealth(healthy: true, backend: "csv", detail: "\(written) samples appended")
    }

    public func close() async throws {
        try samplesFile.close()
        try rollupsFile.close()
    }
}
