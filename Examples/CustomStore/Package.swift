// swift-tools-version:6.0
import PackageDescription

// Another storage backend plugged into RealtimeDashboard by conforming to `MetricStore`:
// a CSV-file store. Depends on the repository by path and imports only MetricsCore.
let package = Package(
    name: "CustomStore",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "RealtimeDashboard", path: "../.."),
    ],
    targets: [
        .executableTarget(
            name: "CustomStore",
            dependencies: [.product(name: "MetricsCore", package: "RealtimeDashboard")]
        ),
    ]
)
