import MetricsCore

/// Everything the HTTP layer needs to know, with documented defaults.
public struct HTTPServerConfiguration: Sendable {
    /// Address to bind. Default `0.0.0.0`.
    public var host: String
    /// Cleartext port (HTTP/1.1 and h2c prior knowledge on the same port). Default 4002; 0 picks a free port.
    public var port: Int
    /// TLS port (ALPN `h2` and `http/1.1`); `nil` = no TLS listener.
    public var tlsPort: Int?
    /// PEM certificate chain and key for TLS.
    public var tls: TLSFiles?
    /// Longest NDJSON / line-protocol line, bytes. Default 65,536.
    public var maxLineLength: Int
    /// Latest accepted sample timestamp ahead of the server clock, ms; `nil`: no bound. Default 600,000 (10 minutes).
    public var maxTimestampFutureMilliseconds: Int64?
    /// Oldest accepted sample timestamp behind the server clock, ms; `nil`: no bound. Default 604,800,000 (7 days).
    public var maxTimestampAgeMilliseconds: Int64?
    /// Largest buffered (non-streaming) request body, bytes. Default 1 MiB.
    public var maxBufferedBody: Int
    /// Largest gzip-compressed `/write` body, bytes. Default 32 MiB.
    public var maxCompressedBody: Int
    /// Largest inflated `/write` body, bytes. Default 64 MiB (Telegraf batches are far smaller; each
    /// concurrent gzip request may hold this much while it is parsed).
    public var maxDecompressedBody: Int
    /// Bytes of gzip bodies held in memory across the server: compressed while they arrive, then
    /// inflated until their samples are durable. A `/write` that would pass it gets 503 (Telegraf
    /// retries), a stream request ends with an error in its summary; a request's own bytes never
    /// count against it. Default 256 MiB (four inflated bodies of the largest size).
    public var maxGzipMemory: Int = 256 << 20
    /// Open connections allowed in all (every port and protocol); beyond it a new connection is
    /// closed before a byte is read, so a flood of clients cannot take the memory (about 32 KiB
    /// an idle HTTP/2 connection) or the file descriptors the store and the other clients need.
    /// 0: no limit. Default 20,000. (`dashboard-server` also lowers it to fit `ulimit -n`.)
    public var maxConnections: Int = 20_000
    /// Open connections allowed per client IP address; 0: no limit. Default 2,000. Behind a proxy
    /// every connection comes from the proxy's address (HAProxy multiplexes its streams onto few).
    public var maxConnectionsPerAddress: Int
    /// Seconds a connection may read nothing (with no SSE stream open), or an SSE client not read
    /// (socket not writable), before it is closed; a connection must also start a request within
    /// 10 s (or this, if shorter). 0: never. Default 120.
    public var idleTimeoutSeconds: Int
    /// Request-body bytes per second one connection may send; beyond it the server hands back
    /// flow-control credit more slowly (the client is slowed, nothing refused). 0: no limit.
    /// Default 64 MiB/s (about half a core of parsing).
    public var maxBodyBytesPerSecond: Int
    /// Most labels per sample (1...32). Default 32.
    public var maxLabels: Int
    /// Longest label value in bytes (0...256). Default 256.
    public var maxLabelValueLength: Int
    /// HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS. Default 1,000.
    public var maxConcurrentStreams: Int
    /// HTTP/2 per-stream receive window, bytes. Default 1 MiB.
    public var streamWindow: Int
    /// HTTP/2 per-connection receive window, bytes. Default 4 MiB.
    public var connectionWindow: Int
    /// How long shutdown waits for open streams before closing connections, seconds. Default 10.
    public var drainTimeoutSeconds: Int
    /// Who may ingest and who may read (``AccessControl``). Default ``AccessControl/open``: the
    /// library leaves the choice to its user; the `dashboard-server` executable refuses to start
    /// without credentials unless development mode is asked for explicitly.
    public var access: AccessControl
    /// Extra figures for `/api/stats`' `memory` object, read on each request: the executable reports
    /// its allocator's heap here (name and byte counts). Default `nil`: RSS only.
    public var memoryStatistics: (@Sendable () -> (allocator: String, figures: [(String, Int)]))?

    /// PEM files for TLS.
    public struct TLSFiles: Sendable {
        /// Certificate chain (PEM).
        public var certificatePath: String
        /// Private key (PEM).
        public var keyPath: String
        /// Creates the pair.
        public init(certificatePath: String, keyPath: String) {
            self.certificatePath = certificatePath
            self.keyPath = keyPath
        }
    }

    /// Creates a configuration.
    public init(host: String = "0.0.0.0", port: Int = 4002, tlsPort: Int? = nil, tls: TLSFiles? = nil,
                maxLineLength: Int = 65_536, maxBufferedBody: Int = 1 << 20, maxCompressedBody: Int = 32 << 20,
                maxDecompressedBody: Int = 64 << 20, maxConcurrentStreams: Int = 1_000,
                streamWindow: Int = 1 << 20, connectionWindow: Int = 4 << 20, drainTimeoutSeconds: Int = 10,
                access: AccessControl = .open, maxTimestampFutureMilliseconds: Int64? = 600_000,
                maxTimestampAgeMilliseconds: Int64? = 604_800_000, maxConnectionsPerAddress: Int = 2_000,
                idleTimeoutSeconds: Int = 120, maxBodyBytesPerSecond: Int = 64 << 20,
                maxLabels: Int = NameRules.maxLabels, maxLabelValueLength: Int = NameRules.maxLabelValueLength) {
        self.host = host
        self.port = port
        self.tlsPort = tlsPort
        self.tls = tls
        self.maxLineLength = maxLineLength
        self.maxBufferedBody = maxBufferedBody
        self.maxCompressedBody = maxCompressedBody
        self.maxDecompressedBody = maxDecompressedBody
        self.maxConcurrentStreams = maxConcurrentStreams
        self.streamWindow = streamWindow
        self.connectionWindow = connectionWindow
        self.drainTimeoutSeconds = drainTimeoutSeconds
        self.access = access
        self.maxTimestampFutureMilliseconds = maxTimestampFutureMilliseconds
        self.maxTimestampAgeMilliseconds = maxTimestampAgeMilliseconds
        self.maxConnectionsPerAddress = maxConnectionsPerAddress
        self.idleTimeoutSeconds = idleTimeoutSeconds
        self.maxBodyBytesPerSecond = maxBodyBytesPerSecond
        self.maxLabels = min(max(1, maxLabels), NameRules.maxLabels)
        self.maxLabelValueLength = min(max(0, maxLabelValueLength), NameRules.maxLabelValueLength)
    }
}
