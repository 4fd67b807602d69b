// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "RealtimeDashboard",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "MetricsCore", targets: ["MetricsCore"]),
        .library(name: "H2Transport", targets: ["H2Transport"]),
        .library(name: "MySQLStore", targets: ["MySQLStore"]),
        .executable(name: "dashboard-server", targets: ["DashboardServer"]),
        .executable(name: "metrics-loadgen", targets: ["LoadGenerator"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/adam-fowler/compress-nio", from: "1.5.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        // The C boundary to libnghttp2 (Debian 1.52). H2Transport (server) and LoadGenerator (client) import it.
        .systemLibrary(
            name: "CNGHTTP2",
            pkgConfig: "libnghttp2",
            providers: [.apt(["libnghttp2-dev"])]
        ),
        // The C boundary to MariaDB Connector/C (Debian libmariadb-dev 3.3). Only MySQLStore imports it.
        .systemLibrary(
            name: "CMariaDB",
            pkgConfig: "libmariadb",
            providers: [.apt(["libmariadb-dev"])]
        ),
        // jemalloc as the server's allocator (Debian libjemalloc-dev 5.3, the allocator nghttpd and
        // h2load link too). Linked into the executable only: the libraries stay allocator-neutral.
        .systemLibrary(
            name: "CJemalloc",
            pkgConfig: "jemalloc",
            providers: [.apt(["libjemalloc-dev"])]
        ),
        // Model, parsers, aggregation, storage protocol, broadcaster. No NIO, no SQL.
        .target(
            name: "MetricsCore",
            dependencies: [
                .product(name: "DequeModule", package: "swift-collections"),
            ]
        ),
        // HTTP/2 (nghttp2) + HTTP/1.1 (NIOHTTP1) + TLS (swift-nio-ssl) serving: ingestion, SSE, HTTP API.
        .target(
            name: "H2Transport",
            dependencies: [
                "CNGHTTP2",
                "MetricsCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "CompressNIO", package: "compress-nio"),
            ],
            resources: [.copy("Resources/public")]
        ),
        // Durable storage on MariaDB/MySQL: a MetricStore over Connector/C, blocking calls on its own threads.
        .target(
            name: "MySQLStore",
            dependencies: [
                "CMariaDB",
                "MetricsCore",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The executable: configuration and wiring only.
        .executableTarget(
            name: "DashboardServer",
            dependencies: [
                .target(name: "CJemalloc", condition: .when(platforms: [.linux])),
                "MetricsCore",
                "H2Transport",
                "MySQLStore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // The load generator: agents over HTTP/2 (nghttp2 in client mode on NIO), SSE viewers, HDR histograms.
        .executableTarget(
            name: "LoadGenerator",
            dependencies: [
                "CNGHTTP2",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "DequeModule", package: "swift-collections"),
            ]
        ),
        .testTarget(
            name: "MetricsCoreTests",
            dependencies: ["MetricsCore"]
        ),
        .testTarget(
            name: "MySQLStoreTests",
            dependencies: ["MySQLStore", "MetricsCore"]
        ),
        .testTarget(
            name: "H2TransportTests",
            dependencies: [
                "H2Transport",
                "MetricsCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
    ]
)
