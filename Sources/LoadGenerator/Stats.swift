import Histogram

/// Counters and latency histograms of one event loop's agents and viewers (touched only on that
/// loop), merged by the reporter.
struct LoadStats: Sendable {
    var linesSent = 0
    var samplesSent = 0
    var linesAcked = 0
    /// Samples the server reports durable (its acks' `samples`).
    var samplesAcked = 0
    /// Samples of acknowledged lines the server did not store (rejected lines, refused series).
    var samplesRejected = 0
    /// Samples of the lines acks covered (durable + rejected); internal to the accounting.
    var samplesCovered = 0
    var linesRejected = 0
    var rejectedByCode: [String: Int] = [:]
    var linesResent = 0
    var reconnects = 0
    var streamErrors = 0
    /// Reconnects and stream errors by what caused them.
    var errorCauses: [String: Int] = [:]
    var throttledTicks = 0
    var bytesSent = 0
    var openStreams = 0
    var openConnections = 0
    var pendingLines = 0
    /// How much later than its period each generation step of the agents fired, microseconds.
    var timerSlip = Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
    /// Send → acknowledged (committed), microseconds.
    var ackLatency = Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
    // Viewers.
    var viewersConnected = 0
    var sseEvents = 0
    var sseUpdates = 0
    var sseBytes = 0
    var sseUpdateBytes = 0
    var sseMaxUpdateBytes = 0
    var sseInits = 0
    /// Sample timestamp → seen in the first SSE update carrying it (rows that changed in the
    /// update's tick), microseconds.
    var freshness = Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
    /// Sample timestamp → the tick that published it (the part of freshness before the update
    /// lag), microseconds.
    var ageAtTick = Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
    /// Rows received unchanged since an earlier tick (not counted in freshness).
    var rowsResent = 0
    /// Tick timestamp → event received by a viewer, microseconds.
    var updateLag = Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)

    /// Counts a stream error and its cause.
    mutating func streamError(_ cause: String) {
        streamErrors += 1
        errorCauses[cause, default: 0] += 1
    }

    mutating func merge(_ o: LoadStats) {
        linesSent += o.linesSent; samplesSent += o.samplesSent
        linesAcked += o.linesAcked; samplesAcked += o.samplesAcked
        samplesRejected += o.samplesRejected; samplesCovered += o.samplesCovered
        linesRejected += o.linesRejected
        for (k, v) in o.rejectedByCode { rejectedByCode[k, default: 0] += v }
        linesResent += o.linesResent; reconnects += o.reconnects; streamErrors += o.streamErrors
        for (k, v) in o.errorCauses { errorCauses[k, default: 0] += v }
        throttledTicks += o.throttledTicks; bytesSent += o.bytesSent
        openStreams += o.openStreams; openConnections += o.openConnections; pendingLines += o.pendingLines
        ackLatency.add(o.ackLatency)
        timerSlip.add(o.timerSlip)
        viewersConnected += o.viewersConnected
        sseEvents += o.sseEvents; sseUpdates += o.sseUpdates; sseBytes += o.sseBytes
        sseUpdateBytes += o.sseUpdateBytes; sseMaxUpdateBytes = max(sseMaxUpdateBytes, o.sseMaxUpdateBytes); sseInits += o.sseInits
        freshness.add(o.freshness)
        ageAtTick.add(o.ageAtTick)
        rowsResent += o.rowsResent
        updateLag.add(o.updateLag)
    }
}

extension Histogram<UInt64> {
    /// `{"count":…,"p50_ms":…,"p90_ms":…,"p99_ms":…,"p999_ms":…,"max_ms":…}` (values recorded in µs).
    func summary() -> [String: Double] {
        guard totalCount > 0 else { return ["count": 0] }
        func ms(_ v: UInt64) -> Double { (Double(v) / 1000 * 1000).rounded() / 1000 }
        return ["count": Double(totalCount), "p50_ms": ms(valueAtPercentile(50)), "p90_ms": ms(valueAtPercentile(90)),
                "p99_ms": ms(valueAtPercentile(99)), "p999_ms": ms(valueAtPercentile(99.9)), "max_ms": ms(max),
                "mean_ms": (mean / 1000 * 1000).rounded() / 1000]
    }

    /// "p50 1.2ms p99 8.0ms max 31ms" for the progress line.
    func short() -> String {
        guard totalCount > 0 else { return "–" }
        func f(_ v: UInt64) -> String {
            let ms = Double(v) / 1000
            return ms >= 100 ? String(Int(ms.rounded())) + "ms" : String((ms * 10).rounded() / 10) + "ms"
        }
        return "p50 \(f(valueAtPercentile(50))) p99 \(f(valueAtPercentile(99))) max \(f(max))"
    }
}
