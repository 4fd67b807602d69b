// swift-tools-version:6.1
import PackageDescription

// Microbenchmarks of MetricsCore's hot paths (ordo-one/benchmark).
// Run: cd Benchmarks && swift package --allow-writing-to-package-directory benchmark
let package = Package(
    name: "RealtimeDashboardBenchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "RealtimeDashboard", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // A plain wall-clock harness (no malloc interposer): end-to-end core throughput the way the
        // server runs it, parsing on one thread while the sharded aggregator folds on the pool.
        .executableTarget(
            name: "CoreThroughput",
            dependencies: [.product(name: "MetricsCore", package: "RealtimeDashboard")],
            path: "Sources/CoreThroughput"
        ),
        // Heap bytes per live series in the steady state (aggregator and broadcaster), via mallinfo2.
        .executableTarget(
            name: "SeriesMemory",
            dependencies: [.product(name: "MetricsCore", package: "RealtimeDashboard"), "CHeapInfo"],
            path: "Sources/SeriesMemory"
        ),
        .target(name: "CHeapInfo", path: "Sources/CHeapInfo"),
        .executableTarget(
            name: "CoreBenchmarks",
            dependencies: [
                .product(name: "MetricsCore", package: "RealtimeDashboard"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/CoreBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
