// swift-tools-version:6.0
import PackageDescription

// libFuzzer targets for the untrusted-input boundaries of MetricsCore: the NDJSON and Influx
// line-protocol parsers and the SSE subscription filter. Build and run with scripts/fuzz/run.sh
// (swift build -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library; each target's entry
// point hands over to libFuzzer's driver, see Sources/FuzzSupport/Driver.swift).
let package = Package(
    name: "RealtimeDashboardFuzz",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "RealtimeDashboard", path: ".."),
    ],
    targets: [
        .target(name: "FuzzSupport", dependencies: [.product(name: "MetricsCore", package: "RealtimeDashboard")]),
        .executableTarget(name: "FuzzNDJSON", dependencies: ["FuzzSupport", .product(name: "MetricsCore", package: "RealtimeDashboard")]),
        .executableTarget(name: "FuzzLineProtocol", dependencies: ["FuzzSupport", .product(name: "MetricsCore", package: "RealtimeDashboard")]),
        .executableTarget(name: "FuzzSubscription", dependencies: ["FuzzSupport", .product(name: "MetricsCore", package: "RealtimeDashboard")]),
    ]
)
