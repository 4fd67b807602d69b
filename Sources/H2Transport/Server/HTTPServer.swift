import Logging
import MetricsCore
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization

/// The HTTP server: a cleartext port speaking HTTP/1.1 and h2c prior knowledge, and optionally a
/// TLS port negotiating `h2` or `http/1.1` by ALPN. HTTP/2 is served by nghttp2 inside a NIO
/// channel handler, HTTP/1.1 by NIOHTTP1; both reach the same handlers.
///
/// ```swift
/// let server = HTTPServer(engine: engine, configuration: .init(port: 4002), group: group, logger: logger)
/// let ports = try await server.start()
/// ...
/// await server.shutdown()   // stop accepting, drain streams, close
/// ```
public final class HTTPServer: Sendable {
    /// The ports actually bound (useful with port 0).
    public struct BoundPorts: Sendable {
        /// The cleartext port.
        public var cleartext: Int
        /// The TLS port, if any.
        public var tls: Int?
    }

    private let router: Router
    private let registry = ConnectionRegistry()
    private let group: any EventLoopGroup
    private let logger: Logger
    private let configuration: HTTPServerConfiguration
    private let listeners = Mutex<[any Channel]>([])
    private let meterTask = Mutex<RepeatedTask?>(nil)
    /// Open connections per client address (only kept while a limit is set).
    private let perAddress = AddressCounter()

    /// Creates a server (not yet listening).
    /// - Parameters:
    ///   - engine: the metrics engine the handlers feed and read.
    ///   - configuration: ports, TLS and limits.
    ///   - group: the event loops (one per core is right).
    ///   - logger: for connection-level events.
    ///   - prometheusText: renders `/metrics`.
    public init(engine: MetricsEngine, configuration: HTTPServerConfiguration, group: any EventLoopGroup,
                logger: Logger, prometheusText: @escaping @Sendable () -> String = { "" }) {
        self.router = Router(engine: engine, configuration: configuration, prometheusText: prometheusText)
        self.group = group
        self.logger = logger
        self.configuration = configuration
    }

    /// Server-wide counters.
    public var statistics: ServerStatistics { router.statistics }

    /// Open connections allowed in all (``HTTPServerConfiguration/maxConnections``; 0: no limit).
    public var connectionLimit: Int { configuration.maxConnections }

    /// The peers this instance follows, listed in `/api/stats` (`peers`).
    public func reportPeers(_ feeds: [PeerFeed]) { router.peerFeeds.withLock { $0 = feeds } }

    /// Binds the listeners.
    public func start() async throws -> BoundPorts {
        let router = self.router, registry = self.registry, logger = self.logger
        let http2: @Sendable (Channel, Bool) throws -> Void = { channel, secure in
            try channel.pipeline.syncOperations.addHandler(HTTP2ServerHandler(router: router, registry: registry, logger: logger, secure: secure))
        }
        let http1: @Sendable (Channel, Bool) throws -> Void = { channel, secure in
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: true)
            try channel.pipeline.syncOperations.addHandler(HTTP1ConnectionHandler(router: router, registry: registry, logger: logger, secure: secure))
        }
        let cleartext = try await bootstrap { channel in
            try channel.pipeline.syncOperations.addHandler(ProtocolDetector(http2: { try http2($0, false) }, http1: { try http1($0, false) }))
        }.bind(host: configuration.host, port: configuration.port).get()
        var channels = [cleartext]
        var tlsPort: Int? = nil
        if let tls = configuration.tls, let port = configuration.tlsPort {
            let context = try Self.makeTLSContext(tls)
            let tlsChannel = try await bootstrap { channel in
                try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                try channel.pipeline.syncOperations.addHandler(ApplicationProtocolNegotiationHandler { result, channel in
                    channel.eventLoop.makeCompletedFuture {
                        switch result {
                        case .negotiated("h2"): try http2(channel, true)
                        default: try http1(channel, true)
                        }
                    }
                })
            }.bind(host: configuration.host, port: port).get()
            channels.append(tlsChannel)
            tlsPort = tlsChannel.localAddress?.port
        }
        listeners.withLock { $0 = channels }
        let counters = router.counters, stats = router.statistics, rates = router.rates
        meterTask.withLock {
            $0 = group.next().scheduleRepeatedTask(initialDelay: .zero, delay: .seconds(1)) { _ in
                rates.sample(samples: counters.samplesParsed, bytes: counters.bytesReceived,
                             rejected: counters.linesRejected, requests: stats.requestCount)
            }
        }
        return BoundPorts(cleartext: cleartext.localAddress?.port ?? configuration.port, tls: tlsPort)
    }

    private func bootstrap(_ initializer: @escaping @Sendable (Channel) throws -> Void) -> ServerBootstrap {
        let limit = configuration.maxConnectionsPerAddress, total = configuration.maxConnections
        let perAddress = self.perAddress, statistics = router.statistics
        let idle = configuration.idleTimeoutSeconds
        return ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 256 << 10, high: 1 << 20))
            .childChannelInitializer { channel in
                // Connections in all, then per client address: beyond a limit a connection is
                // closed before a byte is read (and counted), so neither a flood of clients nor one
                // client can take every descriptor.
                // (Compare-and-exchange: a refused connection never holds a place, so one is
                // refused only while `total` are really open.)
                var open = statistics.openCount.load(ordering: .relaxed)
                while true {
                    guard total == 0 || open < total else {
                        statistics.connectionsRefusedLimit.add(1, ordering: .relaxed)
                        return channel.close()
                    }
                    let (exchanged, original) = statistics.openCount.compareExchange(
                        expected: open, desired: open + 1, ordering: .relaxed)
                    if exchanged { break }
                    open = original
                }
                channel.closeFuture.whenComplete { _ in statistics.openCount.wrappingSubtract(1, ordering: .relaxed) }
                if limit > 0, let address = channel.remoteAddress?.ipAddress {
                    guard perAddress.admit(address, limit: limit) else {
                        statistics.connectionsRefused.add(1, ordering: .relaxed)
                        return channel.close()
                    }
                    channel.closeFuture.whenComplete { _ in perAddress.release(address) }
                }
                return channel.eventLoop.makeCompletedFuture {
                    if idle > 0 {
                        try channel.pipeline.syncOperations.addHandler(IdleGuard(
                            idleTimeout: .seconds(Int64(idle)), firstRequestTimeout: .seconds(10)) { reason in
                                switch reason {
                                case .noRequest: statistics.closedNoRequest.add(1, ordering: .relaxed)
                                case .idle: statistics.closedIdle.add(1, ordering: .relaxed)
                                case .stalledReader: statistics.closedStalled.add(1, ordering: .relaxed)
                                }
                            })
                    }
                    try initializer(channel)
                }
            }
    }

    static func makeTLSContext(_ files: HTTPServerConfiguration.TLSFiles) throws -> NIOSSLContext {
        let chain = try NIOSSLCertificate.fromPEMFile(files.certificatePath).map { NIOSSLCertificateSource.certificate($0) }
        let key = try NIOSSLPrivateKey(file: files.keyPath, format: .pem)
        var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
        tls.minimumTLSVersion = .tlsv12
        // TLS 1.2: forward-secret AEAD suites only (TLS 1.3's suites are all of that kind).
        tls.cipherSuites = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
            + "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
        tls.applicationProtocols = ["h2", "http/1.1"]
        return try NIOSSLContext(configuration: tls)
    }

    /// Graceful shutdown: closes the listeners, asks every connection to drain (HTTP/2 GOAWAY,
    /// ingest streams send their final acks and summary, SSE streams end), waits up to
    /// ``HTTPServerConfiguration/drainTimeoutSeconds`` and then closes what is left.
    public func shutdown() async {
        let channels = listeners.withLock { l in
            let c = l
            l = []
            return c
        }
        for c in channels { try? await c.close() }
        meterTask.withLock { $0?.cancel() }
        registry.shutdownAll()
        let registry = self.registry
        let timeout = configuration.drainTimeoutSeconds
        let drained = await withTaskGroup(of: Bool.self) { group in
            group.addTask { await registry.waitUntilEmpty(); return true }
            group.addTask {
                try? await Task.sleep(for: .seconds(timeout))
                return false
            }
            let first = await group.next()!
            if !first {
                registry.forceCloseAll()
                await registry.waitUntilEmpty()
            }
            group.cancelAll()
            return first
        }
        if !drained { logger.warning("drain timeout: closed \(timeout) s after shutdown began") }
    }
}

extension HTTPServer {
    /// Ingestion totals since start.
    public struct IngestTotals: Sendable {
        /// Samples parsed and submitted.
        public var samples: Int
        /// Request-body bytes received on ingest routes.
        public var bytes: Int
        /// Rejected lines by reason code.
        public var rejectionsByCode: [String: Int]
        /// Body parts whose flow-control credit the per-connection body rate delayed.
        public var bodyRateThrottled: Int
    }

    /// Ingestion totals since start.
    public var ingestTotals: IngestTotals {
        IngestTotals(samples: router.counters.samplesParsed, bytes: router.counters.bytesReceived,
                     rejectionsByCode: router.counters.rejectionsByCode,
                     bodyRateThrottled: router.counters.bodyThrottled.load(ordering: .relaxed))
    }
}

/// Open connections per client IP address, for ``HTTPServerConfiguration/maxConnectionsPerAddress``.
final class AddressCounter: Sendable {
    private let counts = Mutex<[String: Int]>([:])

    /// Counts a new connection from `address`; `false` (and nothing counted) when `limit` are open.
    func admit(_ address: String, limit: Int) -> Bool {
        counts.withLock { m in
            let n = m[address, default: 0]
            guard n < limit else { return false }
            m[address] = n + 1
            return true
        }
    }

    /// A connection from `address` closed.
    func release(_ address: String) {
        counts.withLock { m in
            let n = (m[address] ?? 1) - 1
            if n <= 0 { m.removeValue(forKey: address) } else { m[address] = n }
        }
    }
}
