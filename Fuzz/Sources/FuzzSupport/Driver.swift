/// libFuzzer's driver, started from the executable's entry point.
///
/// SwiftPM links every executable target on Linux with `--defsym main=<Module>_main`, and
/// `-parse-as-library` (needed so libFuzzer owns the input loop) emits no `<Module>_main`; each
/// target therefore defines `<Module>_main` itself (`@_cdecl`) and hands control to
/// `LLVMFuzzerRunDriver`, libFuzzer's documented entry for programs with their own `main`.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

/// Runs libFuzzer with the process arguments and `callback` as the test function.
public func runFuzzer(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
                      _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt {
    var c = argc
    var v = argv
    return LLVMFuzzerRunDriver(&c, &v, callback)
}
