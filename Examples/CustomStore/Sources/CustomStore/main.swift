// Runs the engine on the CSV store: write samples durably, shut down (which seals and writes
// every open minute), then read the files and the history back through the store.
import Foundation
import MetricsCore

let dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("rtd-csv-\(getpid())")
defer { try? FileManager.default.removeItem(at: dir) }
let store = try CSVStore(directory: dir)
let engine = MetricsEngine(store: store, configuration: .init(broadcaster: .init(tickMilliseconds: 50)))
let now = ProcessInfoLite.nowMilliseconds()
let minute = MinuteRollup.minute(of: now) - 120_000

var samples: [MetricSample] = []
for i in 0..<600 {
    let labels: String = i % 3 == 0 ? "dev=sda" : ""
    let ts: Int64 = minute + Int64(i) * 100
    samples.append(MetricSample(serverID: "db-\(i % 2)", metricName: "disk_io", value: Double(i % 50), timestamp: ts, labels: labels))
}
await withDiscardingTaskGroup { group in
    group.addTask { await engine.run() }
    let outcome = await engine.writer.write(samples)
    precondition(outcome == .durable, "the batch must be durable in the CSV files")
    engine.shutdown()
}
// After run() returned, every sample and every sealed minute is in the files.
let rawLines = try String(contentsOf: dir.appendingPathComponent("samples.csv"), encoding: .utf8).split(separator: "\n").count - 1
let rollupLines = try String(contentsOf: dir.appendingPathComponent("rollups.csv"), encoding: .utf8).split(separator: "\n").count - 1
print("samples.csv: \(rawLines) rows, rollups.csv: \(rollupLines) rows")
precondition(rawLines == 600, "every acknowledged sample is in samples.csv")

let reopened = try CSVStore(directory: dir)
let history = try await reopened.history(HistoryQuery(serverID: "db-0", metricName: "disk_io", from: minute, to: now))
let total = history.points.reduce(0) { $0 + $1.count }
print("history db-0/disk_io: \(history.points.count) points, \(total) samples, p95 of first minute \(history.points.first?.p95 ?? .nan)")
precondition(total == 300, "history from the CSV rollups covers all 300 samples of db-0")
print("OK: a custom MetricStore plugged into MetricsEngine")
