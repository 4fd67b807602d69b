import FuzzSupport
import MetricsCore

// The SSE query (`/api/dashboard/stream?…`) as the server hands it to SubscriptionFilter: items
// split on `&` and `=` (already percent-decoded). Oracle: no crash or hang; an accepted filter
// answers questions about arbitrary series without trapping.
@_cdecl("FuzzSubscription_main")
public func entry(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv) { data, size in fuzz(data, size) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt { fuzz(data, size) }

func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data else { return 0 }
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let items: [(String, String)] = text.split(separator: "&", omittingEmptySubsequences: false).map { part in
        if let eq = part.firstIndex(of: "=") { return (String(part[..<eq]), String(part[part.index(after: eq)...])) }
        return (String(part), "")
    }
    guard let filter = try? SubscriptionFilter(query: items, tickMilliseconds: 1000) else { return 0 }
    for (server, metric, labels) in [("web-01", "cpu", ""), ("db-01", "mem", "dc=eu"), (text, text, text)] {
        _ = filter.matches(SeriesKey(serverID: server, metricName: metric, labels: labels))
    }
    return 0
}
