import FuzzSupport
import MetricsCore

// Like FuzzNDJSON, for Influx line protocol; byte 1 also picks the timestamp precision.
@_cdecl("FuzzLineProtocol_main")
public func entry(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv) { data, size in fuzz(data, size) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt { fuzz(data, size) }

func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data, size >= 2 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let seed = bytes[0], mode = bytes[1]
    let body = bytes[2...]
    let lineLimit = [64, 256, 4096, 65_536][Int(mode & 3)]
    let defaultID: String? = mode & 4 != 0 ? "web-default" : nil
    let policy: ServerIDPolicy? = mode & 8 != 0 ? try! ServerIDPolicy(patterns: ["web-*", "db-01"]) : nil
    let precision: TimestampPrecision = [.nanoseconds, .microseconds, .milliseconds, .seconds][Int((mode >> 4) & 3)]
    let window: Int64? = mode & 0x40 != 0 ? 600_000 : nil
    let limits = ParseLimits(maxLineLength: lineLimit, allowedServers: policy, maxFutureMilliseconds: window, maxAgeMilliseconds: window)
    func run(_ parts: [ArraySlice<UInt8>]) -> Parsed {
        var p = LineProtocolParser(precision: precision, defaultServerID: defaultID, limits: limits)
        return collect(parts, parse: { p.parse($0, now: 1_700_000_000_000, into: &$1) },
                       finish: { p.finish(now: 1_700_000_000_000, into: &$0) })
    }
    let whole = run([body])
    checkInvariants(whole, lineLimit: lineLimit)
    if let policy { for s in whole.samples { precondition(policy.allows(s.serverID), "policy bypassed: \(s.serverID)") } }
    if let window { for s in whole.samples { precondition(abs(s.timestamp - 1_700_000_000_000) <= window, "window bypassed: \(s.timestamp)") } }
    let split = run(chunks(body, seed: seed))
    precondition(whole == split, "chunking changed the result:\nwhole \(whole)\nsplit \(split)")
    return 0
}
