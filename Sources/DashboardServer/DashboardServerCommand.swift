import ArgumentParser
import Foundation
import H2Transport
import Logging
import Metrics
import MetricsCore
import MySQLStore
import NIOCore
import NIOPosix
import Prometheus
import ServiceLifecycle

/// `dashboard-server`: configuration and wiring only. Every option has an environment variable.
@main
struct DashboardServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dashboard-server",
        abstract: "RealtimeDashboard: HTTP/2 metrics ingestion, live aggregation and a live dashboard.",
        discussion: "Every option can also be set by the environment variable named in its help (RTD_...). Flags win.")

    @Option(help: "Address to bind (RTD_HOST).")
    var host: String = env("RTD_HOST") ?? "0.0.0.0"

    @Option(help: "Cleartext port: HTTP/1.1 and h2c prior knowledge; 0 picks a free port (RTD_PORT).")
    var port: Int = env("RTD_PORT").flatMap(Int.init) ?? 4002

    @Option(help: "TLS port, ALPN h2 and http/1.1; used with --tls-cert/--tls-key or --tls-self-signed (RTD_TLS_PORT).")
    var tlsPort: Int = env("RTD_TLS_PORT").flatMap(Int.init) ?? 4443

    @Option(help: "PEM certificate chain for TLS (RTD_TLS_CERT).")
    var tlsCert: String?

    @Option(help: "PEM private key for TLS (RTD_TLS_KEY).")
    var tlsKey: String?

    @Flag(help: "Generate a self-signed development certificate at start (needs openssl) (RTD_TLS_SELF_SIGNED=1).")
    var tlsSelfSigned: Bool = env("RTD_TLS_SELF_SIGNED") == "1"

    @Option(help: """
        Storage backend (RTD_STORE): 'memory' (default, embedded and bounded), or MariaDB/MySQL as \
        mysql://user:pass@host:port/db or mysql://user:pass@localhost/db?socket=/path/mysqld.sock \
        (a password left out of the URL is read from RTD_STORE_PASSWORD).
        """)
    var store: String = env("RTD_STORE") ?? "memory"

    @Option(help: "MySQL store: days of raw samples kept, in whole UTC days (RTD_RAW_RETENTION_DAYS).")
    var rawRetentionDays: Int = env("RTD_RAW_RETENTION_DAYS").flatMap(Int.init) ?? 7

    @Option(help: "MySQL store: days of minute rollups kept (RTD_ROLLUP_RETENTION_DAYS).")
    var rollupRetentionDays: Int = env("RTD_ROLLUP_RETENTION_DAYS").flatMap(Int.init) ?? 90

    @Option(help: "MySQL store: seconds between partition upkeep / retention runs (RTD_STORE_MAINTENANCE_INTERVAL).")
    var storeMaintenanceInterval: Int = env("RTD_STORE_MAINTENANCE_INTERVAL").flatMap(Int.init) ?? 600

    @Option(help: "MySQL store: raw insert method: auto, array (MariaDB array binding) or multirow (RTD_STORE_BULK).")
    var storeBulk: String = env("RTD_STORE_BULK") ?? "auto"

    @Option(help: "MySQL store: seconds to keep retrying the first connection at start (RTD_STORE_CONNECT_WAIT).")
    var storeConnectWait: Int = env("RTD_STORE_CONNECT_WAIT").flatMap(Int.init) ?? 30

    @Option(help: "MySQL store: batches written concurrently, each lane on its own two connections; 2 hides commit latency when the database has its own cores (RTD_STORE_WRITE_LANES).")
    var storeWriteLanes: Int = env("RTD_STORE_WRITE_LANES").flatMap(Int.init) ?? 1

    @Option(help: "MySQL: seconds without a heartbeat after which another instance takes an instance as dead and rebuilds its unsealed minutes' rollups from raw rows (RTD_STORE_INSTANCE_TIMEOUT).")
    var storeInstanceTimeout: Int = env("RTD_STORE_INSTANCE_TIMEOUT").flatMap(Int.init) ?? 60

    @Option(help: "MySQL: seconds a rollup repair request waits before it is carried out (RTD_STORE_ROLLUP_SETTLE).")
    var storeRollupSettle: Int = env("RTD_STORE_ROLLUP_SETTLE").flatMap(Int.init) ?? 120

    @Option(help: "MySQL: seconds between heartbeats and rounds of due rollup repairs (RTD_STORE_REPAIR_INTERVAL).")
    var storeRepairInterval: Int = env("RTD_STORE_REPAIR_INTERVAL").flatMap(Int.init) ?? 10

    @Option(help: "Dashboard tick in milliseconds (RTD_TICK_MS).")
    var tickMs: Int = env("RTD_TICK_MS").flatMap(Int.init) ?? 1000

    @Option(help: "How many times per tick changed series are snapshotted ahead of the tick, the tick included, so its update leaves sooner; 1 turns it off (RTD_STAGES_PER_TICK).")
    var stagesPerTick: Int = env("RTD_STAGES_PER_TICK").flatMap(Int.init) ?? 8

    @Option(help: "Peer instances whose agents' series this instance merges into its dashboards, comma-separated http://HOST:PORT (their cleartext ports) (RTD_PEERS).")
    var peers: String = env("RTD_PEERS") ?? ""

    @Option(help: """
        Credentials file: one 'ingest|view NAME SECRET [SERVER-IDS]' per line (Docs/security.md); keep it out of the \
        repository, readable by the server only (RTD_AUTH_FILE). RTD_INGEST_TOKEN and RTD_VIEW_TOKEN add one secret each.
        """)
    var authFile: String?

    @Flag(help: "Development mode: no authentication, anyone who reaches the ports can write and read (RTD_NO_AUTH=1).")
    var noAuth: Bool = env("RTD_NO_AUTH") == "1"

    @Option(help: "Seconds without data after which the dashboard shows a server as stale; clients may ask otherwise with stale= (RTD_STALE_AFTER).")
    var staleAfter: Int = env("RTD_STALE_AFTER").flatMap(Int.init) ?? 30

    @Option(help: "Latest accepted sample timestamp ahead of the server clock, seconds; 0: no bound (RTD_MAX_FUTURE).")
    var maxFuture: Int = env("RTD_MAX_FUTURE").flatMap(Int.init) ?? 600

    @Option(help: "Oldest accepted sample timestamp behind the server clock, seconds; 0: no bound (RTD_MAX_AGE).")
    var maxAge: Int = env("RTD_MAX_AGE").flatMap(Int.init) ?? 604_800

    @Option(help: "Open connections in all; beyond it new ones are closed at once; lowered to fit the open-file limit less 256 descriptors, or a quarter of a smaller limit (the soft limit is first raised to the hard one); 0: only that bound; default 20000 (RTD_MAX_CONNECTIONS).")
    var maxConnections: Int?

    /// `--max-connections`, else `RTD_MAX_CONNECTIONS`; `nil` when neither is given (the default
    /// applies, and lowering it to fit the file limit is not worth a warning).
    private var askedConnections: Int? { maxConnections ?? env("RTD_MAX_CONNECTIONS").flatMap(Int.init) }

    @Option(help: "Open connections per client IP address; beyond it new ones are closed at once; 0: no limit (RTD_MAX_CONNECTIONS_PER_ADDRESS).")
    var maxConnectionsPerAddress: Int = env("RTD_MAX_CONNECTIONS_PER_ADDRESS").flatMap(Int.init) ?? 2_000

    @Option(help: "Seconds a connection may send nothing (no SSE stream open), or an SSE client not read, before it is closed; 0: never (RTD_IDLE_TIMEOUT).")
    var idleTimeout: Int = env("RTD_IDLE_TIMEOUT").flatMap(Int.init) ?? 120

    @Option(help: "Request-body bytes per second per connection; a faster client is slowed through flow control; 0: no limit (RTD_MAX_BODY_RATE).")
    var maxBodyRate: Int = env("RTD_MAX_BODY_RATE").flatMap(Int.init) ?? 64 << 20

    @Option(help: "Bytes of gzip request bodies held in memory across the server (compressed while they arrive, inflated until durable); past it /write answers 503 and a stream request ends with an error (RTD_MAX_GZIP_MEMORY).")
    var maxGzipMemory: Int = env("RTD_MAX_GZIP_MEMORY").flatMap(Int.init) ?? 256 << 20

    @Option(help: "Most labels (tags) per sample, 1...32; lines with more are rejected invalid_labels (RTD_MAX_LABELS).")
    var maxLabels: Int = env("RTD_MAX_LABELS").flatMap(Int.init) ?? 32

    @Option(help: "Longest label (tag) value in bytes, 0...256; lines with a longer one are rejected invalid_labels (RTD_MAX_LABEL_VALUE_LENGTH).")
    var maxLabelValueLength: Int = env("RTD_MAX_LABEL_VALUE_LENGTH").flatMap(Int.init) ?? 256

    @Option(help: "HTTP/2 streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS) (RTD_MAX_CONCURRENT_STREAMS).")
    var maxConcurrentStreams: Int = env("RTD_MAX_CONCURRENT_STREAMS").flatMap(Int.init) ?? 1_000

    @Option(help: "Dashboard (SSE) subscribers at once; further ones get 503 (RTD_MAX_SSE_CLIENTS).")
    var maxSSEClients: Int = env("RTD_MAX_SSE_CLIENTS").flatMap(Int.init) ?? 10_000

    @Option(help: "Bytes of events queued per SSE subscriber before its backlog is coalesced into one snapshot (RTD_SSE_QUEUE_BYTES).")
    var sseQueueBytes: Int = env("RTD_SSE_QUEUE_BYTES").flatMap(Int.init) ?? 8 << 20

    @Option(help: "Longest accepted NDJSON/line-protocol line in bytes (RTD_MAX_LINE_LENGTH).")
    var maxLineLength: Int = env("RTD_MAX_LINE_LENGTH").flatMap(Int.init) ?? 65_536

    @Option(help: "Bound on samples buffered before the store; beyond it clients are paused (RTD_BUFFER_CAPACITY).")
    var bufferCapacity: Int = env("RTD_BUFFER_CAPACITY").flatMap(Int.init) ?? 1_048_576

    @Option(help: "Largest batch handed to the store, samples (RTD_MAX_BATCH).")
    var maxBatch: Int = env("RTD_MAX_BATCH").flatMap(Int.init) ?? 65_536

    @Option(help: "Most live series; samples of further new series are rejected and counted (RTD_MAX_SERIES).")
    var maxSeries: Int = env("RTD_MAX_SERIES").flatMap(Int.init) ?? 1_000_000

    @Option(help: """
        Seconds without a sample after which a series leaves the live aggregates and the dashboard (its open minute \
        is written first; it comes back with its next sample); 0 keeps every series (RTD_SERIES_IDLE_TIMEOUT).
        """)
    var seriesIdleTimeout: Int = env("RTD_SERIES_IDLE_TIMEOUT").flatMap(Int.init) ?? 900

    @Option(help: "Memory store: raw samples kept in its ring (RTD_MEMORY_SAMPLES).")
    var memorySamples: Int = env("RTD_MEMORY_SAMPLES").flatMap(Int.init) ?? 1_000_000

    @Option(help: "Memory store: minutes of rollups kept per series (RTD_RETENTION_MINUTES).")
    var retentionMinutes: Int = env("RTD_RETENTION_MINUTES").flatMap(Int.init) ?? 1_440

    @Option(help: "Memory store: minute rollups kept in all, ~140 bytes each; past it the oldest minutes go first (RTD_MEMORY_ROLLUPS).")
    var memoryRollups: Int = env("RTD_MEMORY_ROLLUPS").flatMap(Int.init) ?? 10_000_000

    @Option(help: "Seconds shutdown waits for open streams before closing them (RTD_DRAIN_TIMEOUT).")
    var drainTimeout: Int = env("RTD_DRAIN_TIMEOUT").flatMap(Int.init) ?? 10

    @Option(help: "Event-loop threads; default one per core (RTD_THREADS).")
    var threads: Int = env("RTD_THREADS").flatMap(Int.init) ?? System.coreCount

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical (RTD_LOG_LEVEL).")
    var logLevel: String = env("RTD_LOG_LEVEL") ?? "info"

    private var certPath: String? { tlsCert ?? env("RTD_TLS_CERT") }
    private var keyPath: String? { tlsKey ?? env("RTD_TLS_KEY") }

    func validate() throws {
        guard (0...65_535).contains(port), (0...65_535).contains(tlsPort) else { throw ValidationError("ports must be in 0...65535") }
        guard (certPath == nil) == (keyPath == nil) else { throw ValidationError("--tls-cert and --tls-key go together") }
        guard tickMs >= 10 else { throw ValidationError("--tick-ms must be at least 10") }
        guard (1...100).contains(stagesPerTick) else { throw ValidationError("--stages-per-tick must be 1...100") }
        guard (1...86_400).contains(staleAfter) else { throw ValidationError("--stale-after must be 1...86400 seconds") }
        guard maxLineLength >= 256 else { throw ValidationError("--max-line-length must be at least 256") }
        guard maxGzipMemory >= 1 else { throw ValidationError("--max-gzip-memory must be at least 1 byte") }
        guard maxBodyRate == 0 || maxBodyRate >= 4096 else { throw ValidationError("--max-body-rate must be 0 (no limit) or ≥ 4096 bytes/s") }
        guard (1...32).contains(maxLabels) else { throw ValidationError("--max-labels must be 1...32") }
        guard (0...256).contains(maxLabelValueLength) else { throw ValidationError("--max-label-value-length must be 0...256") }
        guard (0...31_536_000).contains(seriesIdleTimeout) else { throw ValidationError("--series-idle-timeout must be 0...31536000 seconds") }
        guard idleTimeout >= 0 else { throw ValidationError("--idle-timeout must be ≥ 0 (0: never)") }
        guard (askedConnections ?? 0) >= 0 else { throw ValidationError("--max-connections must be ≥ 0 (0: only the open-file limit)") }
        guard maxConnectionsPerAddress >= 0 else { throw ValidationError("--max-connections-per-address must be ≥ 0 (0: no limit)") }
        guard (1...100_000).contains(maxConcurrentStreams) else { throw ValidationError("--max-concurrent-streams must be 1...100000") }
        guard maxSSEClients >= 1, sseQueueBytes >= 64 << 10 else { throw ValidationError("--max-sse-clients ≥ 1 and --sse-queue-bytes ≥ 65536") }
        guard maxFuture >= 0, maxAge >= 0 else { throw ValidationError("--max-future and --max-age must be ≥ 0 (0: no bound)") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown --log-level \(logLevel)") }
        if store != "memory" {
            do { _ = try MySQLEndpoint(url: store) } catch { throw ValidationError("--store: \(error)") }
        }
        guard MySQLStore.BulkMode(rawValue: storeBulk) != nil else { throw ValidationError("--store-bulk must be auto, array or multirow") }
        guard rawRetentionDays >= 1, rollupRetentionDays >= 1 else { throw ValidationError("retention must be at least one day") }
        guard retentionMinutes >= 1 else { throw ValidationError("--retention-minutes must be at least 1") }
        guard memoryRollups >= 1_000 else { throw ValidationError("--memory-rollups must be at least 1000") }
        guard (1...8).contains(storeWriteLanes) else { throw ValidationError("--store-write-lanes must be 1...8") }
        guard storeMaintenanceInterval >= 1 else { throw ValidationError("--store-maintenance-interval must be at least 1 second") }
        guard storeRepairInterval >= 1 else { throw ValidationError("--store-repair-interval must be at least 1 second") }
        guard storeInstanceTimeout >= 2 * storeRepairInterval else {
            throw ValidationError("--store-instance-timeout must be at least twice --store-repair-interval (the heartbeat period)")
        }
        guard storeRollupSettle >= 1 else { throw ValidationError("--store-rollup-settle must be at least 1 second (a few dashboard ticks)") }
    }

    /// The credentials from `--auth-file`, `RTD_INGEST_TOKEN` and `RTD_VIEW_TOKEN`, or open access
    /// with `--no-auth`. Neither: refuse to start (development mode must be asked for).
    func accessControl() throws -> AccessControl {
        var credentials: [AccessControl.Credential] = []
        if let authFile = authFile ?? env("RTD_AUTH_FILE") {
            let text: String
            do { text = try String(contentsOfFile: authFile, encoding: .utf8) } catch {
                throw ValidationError("--auth-file \(authFile): \(error.localizedDescription)")
            }
            do { credentials = try AccessControl(fileContents: text).credentials } catch {
                throw ValidationError("--auth-file \(authFile): \(error.description)")
            }
        }
        do {
            if let t = env("RTD_INGEST_TOKEN") { credentials.append(try .init(role: .ingest, name: "env-ingest", secret: t)) }
            if let t = env("RTD_VIEW_TOKEN") { credentials.append(try .init(role: .view, name: "env-view", secret: t)) }
        } catch {
            throw ValidationError("RTD_INGEST_TOKEN / RTD_VIEW_TOKEN: \(error.description)")
        }
        if noAuth {
            guard credentials.isEmpty else { throw ValidationError("--no-auth and credentials (--auth-file, RTD_*_TOKEN) exclude each other") }
            return .open
        }
        guard !credentials.isEmpty else {
            throw ValidationError("""
                no credentials: give --auth-file (or RTD_INGEST_TOKEN / RTD_VIEW_TOKEN), see Docs/security.md; \
                or --no-auth to run without authentication (development only)
                """)
        }
        return AccessControl(credentials: credentials)
    }

    func run() async throws {
        let access = try accessControl()
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "dashboard-server")
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))

        var tls: HTTPServerConfiguration.TLSFiles? = nil
        var devCertDirectory: String? = nil
        defer { if let devCertDirectory { try? FileManager.default.removeItem(atPath: devCertDirectory) } }
        if let certPath, let keyPath {
            tls = .init(certificatePath: certPath, keyPath: keyPath)
        } else if tlsSelfSigned {
            // A fresh private directory (mkdtemp, mode 0700), removed at exit: a predictable name
            // let another local user create it first and plant the key.
            var template = Array((NSTemporaryDirectory() + "rtd-devcert-XXXXXX").utf8CString)
            let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) } != nil
            guard made else { throw ValidationError("cannot create a directory for the development certificate") }
            let dir = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            devCertDirectory = dir
            tls = try DevelopmentCertificate.generate(in: dir)
            logger.warning("TLS uses a self-signed development certificate", metadata: ["cert": "\(tls!.certificatePath)"])
        }

        if access.isEnabled {
            let ingest = access.credentials.filter { $0.role == .ingest }.count
            logger.info("authentication on", metadata: ["ingest_credentials": "\(ingest)", "view_credentials": "\(access.credentials.count - ingest)"])
        } else {
            logger.warning("""
                AUTHENTICATION IS OFF (--no-auth, development mode): anyone who can reach \(host):\(port)\(tls != nil ? " or :\(tlsPort)" : "") \
                can write samples and read every dashboard. Use --auth-file for anything but a laptop.
                """)
        }
        let backend = try await makeStore(logger: logger)
        let engine = MetricsEngine(store: backend, configuration: .init(
            aggregator: .init(maxSeries: maxSeries, idleSeriesTimeout: Int64(seriesIdleTimeout) * 1000),
            writer: .init(maxBatchSamples: maxBatch, bufferCapacity: bufferCapacity),
            broadcaster: .init(tickMilliseconds: tickMs, subscriberQueueBytes: sseQueueBytes, maxSubscribers: maxSSEClients,
                               staleMilliseconds: staleAfter * 1000, idleRemoteSeriesMilliseconds: seriesIdleTimeout * 1000),
            stagesPerTick: stagesPerTick))
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        let exporter = PrometheusExporter(registry: registry, engine: engine)
        var httpConfiguration = HTTPServerConfiguration(host: host, port: port, tlsPort: tls == nil ? nil : tlsPort, tls: tls,
            maxLineLength: maxLineLength, maxConcurrentStreams: maxConcurrentStreams,
            drainTimeoutSeconds: drainTimeout, access: access,
            maxTimestampFutureMilliseconds: maxFuture == 0 ? nil : Int64(maxFuture) * 1000,
            maxTimestampAgeMilliseconds: maxAge == 0 ? nil : Int64(maxAge) * 1000,
            maxConnectionsPerAddress: maxConnectionsPerAddress, idleTimeoutSeconds: idleTimeout,
            maxBodyBytesPerSecond: maxBodyRate, maxLabels: maxLabels,
            maxLabelValueLength: maxLabelValueLength)
        httpConfiguration.maxGzipMemory = maxGzipMemory
        let fileLimit = FileLimit.raiseSoftLimit()
        let requestedConnections = askedConnections ?? 20_000
        httpConfiguration.maxConnections = FileLimit.connectionLimit(requested: requestedConnections, fileLimit: fileLimit)
        if let fileLimit, requestedConnections == 0 || httpConfiguration.maxConnections < requestedConnections {
            // A warning when a limit asked for was lowered; the default lowered a little, or the
            // file limit asked for with 0, is the usual case: info.
            logger.log(level: (askedConnections ?? 0) > 0 ? .warning : .info,
                       "connections limited to \(httpConfiguration.maxConnections): the process may open \(fileLimit) files (ulimit -n), \(FileLimit.reserve(for: fileLimit)) kept for the store and the rest")
        }
        httpConfiguration.memoryStatistics = { (Allocator.name, Allocator.statistics()) }
        let server = HTTPServer(
            engine: engine, configuration: httpConfiguration,
            group: group, logger: logger, prometheusText: { exporter.render() })
        exporter.server = server

        let feeds = try peers.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            .map { try PeerFeed(peer: $0, broadcaster: engine.broadcaster, group: group, logger: logger, token: env("RTD_PEER_TOKEN")) }
        server.reportPeers(feeds)
        let serviceGroup = ServiceGroup(
            services: [EngineService(engine: engine), HTTPService(server: server, logger: logger, host: host), PeerService(feeds: feeds)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger)
        try await serviceGroup.run()
        try await group.shutdownGracefully()
        logger.info("stopped cleanly")
    }
}

extension DashboardServerCommand {
    /// The configured store; a MySQL store is retried for `--store-connect-wait` seconds at start.
    func makeStore(logger: Logger) async throws -> any MetricStore {
        if store == "memory" {
            return MemoryStore(configuration: .init(maxSamples: memorySamples, retentionMinutes: retentionMinutes, maxRollups: memoryRollups))
        }
        var endpoint = try MySQLEndpoint(url: store)
        if endpoint.password.isEmpty, let pw = env("RTD_STORE_PASSWORD") { endpoint.password = pw }
        let configuration = MySQLStore.Configuration(
            endpoint: endpoint, rawRetentionDays: rawRetentionDays, rollupRetentionDays: rollupRetentionDays,
            maintenanceInterval: .seconds(storeMaintenanceInterval), bulkMode: MySQLStore.BulkMode(rawValue: storeBulk) ?? .auto,
            writeLanes: storeWriteLanes, instanceTimeout: .seconds(storeInstanceTimeout),
            rollupSettle: .seconds(storeRollupSettle), repairInterval: .seconds(storeRepairInterval),
            maxFutureMilliseconds: maxFuture == 0 ? 86_400_000 : Int64(maxFuture) * 1000)
        let deadline = ContinuousClock.now + .seconds(storeConnectWait)
        while true {
            do {
                return try await MySQLStore(configuration: configuration, logger: Logger(label: "mysql-store"))
            } catch let e as MySQLError where e.isConnectionLevel && e.code != 0 && ContinuousClock.now < deadline {
                logger.warning("database not reachable yet; retrying", metadata: ["endpoint": "\(endpoint)", "error": "\(e)"])
                try await Task.sleep(for: .seconds(1))
            }
        }
    }
}

func env(_ name: String) -> String? {
    ProcessInfo.processInfo.environment[name].flatMap { $0.isEmpty ? nil : $0 }
}

/// Runs the engine's flush and tick loops; on shutdown (after the HTTP service drained) flushes everything to the store.
struct EngineService: Service {
    let engine: MetricsEngine

    func run() async throws {
        // Cancellation (another service failed, e.g. the port was taken) must stop the engine as
        // graceful shutdown does: its loops wait on signals that return at once in a cancelled
        // task, so without this they spun on every core and the process ignored SIGTERM.
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await engine.run()
            } onGracefulShutdown: {
                engine.shutdown()
            }
        } onCancel: {
            engine.shutdown()
        }
    }
}

/// Follows the peers (`--peers`) until shutdown.
struct PeerService: Service {
    let feeds: [PeerFeed]

    func run() async throws {
        for f in feeds { f.start() }
        try? await gracefulShutdown()
        for f in feeds { f.stop() }
    }
}

/// Listens until graceful shutdown, then stops accepting and drains open streams.
struct HTTPService: Service {
    let server: HTTPServer
    let logger: Logger
    let host: String

    func run() async throws {
        let ports = try await server.start()
        let shown = host == "0.0.0.0" || host == "::" ? "127.0.0.1" : host
        var lines = [
            "RealtimeDashboard is running (memory store)",
            "  dashboard     http://\(shown):\(ports.cleartext)/",
            "  ingest        POST http://\(shown):\(ports.cleartext)/api/metrics/stream   (NDJSON; HTTP/1.1 or h2c prior knowledge)",
            "  influx        POST http://\(shown):\(ports.cleartext)/write                (line protocol, Telegraf [[outputs.influxdb]])",
            "  live (SSE)    http://\(shown):\(ports.cleartext)/api/dashboard/stream",
            "  history       http://\(shown):\(ports.cleartext)/api/history?server_id=&metric_name=",
            "  stats         http://\(shown):\(ports.cleartext)/api/stats   health /health   prometheus /metrics",
        ]
        if let tls = ports.tls { lines.append("  TLS           https://\(shown):\(tls)/   (ALPN h2, http/1.1)") }
        print(lines.joined(separator: "\n"))
        print("listening cleartext=\(ports.cleartext) tls=\(ports.tls.map(String.init) ?? "none")")
        fflush(nil)
        try? await gracefulShutdown()
        logger.info("shutting down: draining connections")
        await server.shutdown()
    }
}
