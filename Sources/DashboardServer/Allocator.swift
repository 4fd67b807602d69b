#if canImport(CJemalloc)
import CJemalloc

/// The process allocator: jemalloc on Linux, linked into this executable (see `Package.swift`).
///
/// Measured with tiny POSTs (`h2load -c 10 -m 100`, 10-line bodies) and 200,000 series against
/// glibc's malloc on the same binary: ~5–10 % less server CPU per request (the aggregator frees on
/// its own thread what the event loops allocated, which glibc's per-thread caches handle badly) and
/// ~26 % less RSS per series (Docs/benchmarks.md). The C boundary is `mallctl` only, reading
/// size_t counters by name.
enum Allocator {
    static let name = "jemalloc"

    /// Heap figures for `/api/stats`: bytes the program holds (`allocated`), in pages the
    /// allocator uses (`active`), resident (`resident`, metadata included) and mapped (`mapped`).
    static func statistics() -> [(String, Int)] {
        // Statistics are snapshots taken when the epoch advances.
        var epoch: UInt64 = 1
        _ = mallctl("epoch", nil, nil, &epoch, MemoryLayout<UInt64>.size)
        func read(_ name: String) -> Int {
            var value = 0
            var length = MemoryLayout<Int>.size
            return mallctl(name, &value, &length, nil, 0) == 0 ? value : -1
        }
        return [("heap_allocated_bytes", read("stats.allocated")), ("heap_active_bytes", read("stats.active")),
                ("heap_resident_bytes", read("stats.resident")), ("heap_mapped_bytes", read("stats.mapped"))]
    }
}
#else
/// The platform's allocator (no statistics are read).
enum Allocator {
    static let name = "system"
    static func statistics() -> [(String, Int)] { [] }
}
#endif
