// swift-tools-version:6.0
import PackageDescription

// A separate package that embeds RealtimeDashboard's core without any server:
// it depends on the repository by path and imports only MetricsCore.
let package = Package(
    name: "EmbeddedAggregator",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "RealtimeDashboard", path: "../.."),
    ],
    targets: [
        .executableTarget(
            name: "EmbeddedAggregator",
            dependencies: [.product(name: "MetricsCore", package: "RealtimeDashboard")]
        ),
    ]
)
