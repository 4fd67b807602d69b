import FuzzSupport
import MetricsCore

// LineProtocolParser, every timestamp precision: like FuzzNDJSON (input layout: ParserCase).
@_cdecl("FuzzLineProtocol_main")
public func entry(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    runFuzzer(argc, argv) { data, size in fuzz(data, size) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt { fuzz(data, size) }

func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let c = ParserCase(data, size) else { return 0 }
    c.check { parts in
        var p = LineProtocolParser(precision: c.precision, defaultServerID: c.defaultServerID, limits: c.limits)
        return collect(parts, parse: { p.parse($0, now: ParserCase.now, into: &$1) },
                       finish: { p.finish(now: ParserCase.now, into: &$0) })
    }
    return 0
}
