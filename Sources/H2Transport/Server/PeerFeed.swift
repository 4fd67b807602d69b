import Foundation
import Logging
import MetricsCore
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// Follows one peer instance's own series and merges them into the local ``Broadcaster``, so this
/// instance's dashboards show the whole fleet (Docs/scale-out.md).
///
/// It holds `GET /api/dashboard/stream?origin=local&fleet=0` on the peer over HTTP/1.1 (the peer's
/// cleartext port, on loopback or a private network), turns every row of every event into a
/// ``SeriesSnapshot``, and hands them to ``Broadcaster/submitRemote(_:origin:)``. `origin=local`
/// keeps a peer from echoing what it merged itself. After a lost connection it reconnects (after
/// 1 s, doubling to 30 s while the peer stays unreachable or refuses, with jitter); the peer's
/// fresh `init` restores everything and removes what the peer no longer has. A stream silent for
/// ``idleTimeout`` (the peer sends a heartbeat at least every 20 s) is taken for dead and
/// reconnected, so a peer lost without a reset (power, network split) is noticed. Series of a peer
/// that is gone stop changing and show as stale after the stale threshold.
///
/// Hand-written on NIOHTTP1's client codec because it is one GET and a line scanner: a general
/// HTTP client would bring its own event loops and pools for no gain.
public final class PeerFeed: Sendable {
    /// The peer's base URL, e.g. `http://10.0.0.2:4002`.
    public let peer: String
    private let host: String
    private let port: Int
    private let broadcaster: Broadcaster
    private let group: any EventLoopGroup
    private let logger: Logger
    private let state = Mutex(State())

    struct State {
        var channel: (any Channel)?
        var stopped = false
        var connected = false
        var events = 0
        var rows = 0
        /// The next reconnect delay (doubles while failing, back to 1 s once an event arrives).
        var retryDelay: Int64 = 1_000
        /// Event bytes waiting on the decoding queue.
        var queuedBytes = 0
    }

    /// Event bytes that may wait to be decoded; past it the stream is dropped (the reconnect's
    /// `init` brings the peer's current state): decoding slower than the peer sends must not
    /// grow memory, as reading stopped doing once decoding left the event loop.
    static let maxQueuedBytes = 128 << 20

    /// A stream with no byte for this long is closed and reconnected.
    static let idleTimeout: TimeAmount = .seconds(45)
    /// The longest `data:` line kept while it arrives (a 100,000-row `init` is ~35 MB).
    static let maxLineBytes = 256 << 20

    private let token: String?
    /// Events are decoded here, in order, off the event loop: a peer's `init` of 100,000 rows is
    /// ~35 MB of JSON, and decoding it on the loop stalled the agents whose connections share it.
    private let decoding = DispatchQueue(label: "rtd.peer-feed")

    /// Creates a feed; ``start()`` connects.
    /// - Parameters:
    ///   - token: A `view` secret of the peer (sent as `Authorization: Bearer`), when peers
    ///     require credentials.
    /// - Throws: when `peer` is not `http://HOST:PORT`.
    public init(peer: String, broadcaster: Broadcaster, group: any EventLoopGroup, logger: Logger, token: String? = nil) throws {
        guard let c = URLComponents(string: peer), c.scheme == "http", let host = c.host, let port = c.port else {
            throw PeerError.invalidURL(peer)
        }
        self.peer = peer
        self.token = token
        self.host = host
        self.port = port
        self.broadcaster = broadcaster
        self.group = group
        self.logger = logger
    }

    /// Why a peer URL was refused.
    public enum PeerError: Error, CustomStringConvertible {
        /// Not `http://HOST:PORT`.
        case invalidURL(String)
        public var description: String {
            switch self { case .invalidURL(let u): return "peer URL must be http://HOST:PORT, got '\(u)'" }
        }
    }

    /// Whether the stream to the peer is open, and events and rows received since start.
    public var status: (connected: Bool, events: Int, rows: Int) { state.withLock { ($0.connected, $0.events, $0.rows) } }

    /// Connects (and keeps reconnecting until ``stop()``).
    public func start() { connect() }

    /// Closes the stream; no reconnects after this.
    public func stop() {
        let ch: (any Channel)? = state.withLock { s in
            s.stopped = true
            return s.channel
        }
        ch?.close(promise: nil)
    }

    private func connect() {
        guard !state.withLock({ $0.stopped }) else { return }
        let request = "/api/dashboard/stream?origin=local&fleet=0&limit=100000"
        let host = self.host
        ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.socketOption(.so_keepalive), value: 1)
            .connectTimeout(.seconds(3))
            .channelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: Self.idleTimeout))
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(SSEReader(feed: self))
                }
            }
            .connect(host: host, port: port)
            .whenComplete { [self] result in
                switch result {
                case .success(let ch):
                    let stopped: Bool = state.withLock { s in
                        s.channel = ch
                        return s.stopped
                    }
                    if stopped { ch.close(promise: nil); return }
                    var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: request)
                    head.headers.add(name: "host", value: "\(host):\(port)")
                    head.headers.add(name: "accept", value: "text/event-stream")
                    if let token { head.headers.add(name: "authorization", value: "Bearer \(token)") }
                    ch.write(HTTPClientRequestPart.head(head), promise: nil)
                    ch.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
                    ch.closeFuture.whenComplete { [self] _ in disconnected() }
                case .failure:
                    retry()
                }
            }
    }

    private func disconnected() {
        let was: Bool = state.withLock { s in
            let was = s.connected
            s.connected = false
            s.channel = nil
            return was
        }
        if was { logger.warning("peer stream lost; reconnecting", metadata: ["peer": "\(peer)"]) }
        retry()
    }

    private func retry() {
        let delay: Int64? = state.withLock { s in
            guard !s.stopped else { return nil }
            let d = s.retryDelay
            s.retryDelay = min(30_000, d * 2)
            return d
        }
        guard let delay else { return }
        // Jitter: instances following one restarted peer do not all ask for its `init` at once.
        let jittered = delay / 2 + Int64.random(in: 0...(delay / 2))
        group.next().scheduleTask(in: .milliseconds(jittered)) { [self] in connect() }
    }

    fileprivate func opened(status: UInt) {
        if status == 200 {
            state.withLock { $0.connected = true }
            logger.info("following peer", metadata: ["peer": "\(peer)"])
        } else {
            logger.warning("peer refused the stream", metadata: ["peer": "\(peer)", "status": "\(status)"])
        }
    }

    /// One complete SSE `data:` payload, handed to the decoding queue.
    fileprivate func received(_ data: Data, isInit: Bool) {
        let overflow: (any Channel)? = state.withLock { s in
            if s.queuedBytes + data.count > Self.maxQueuedBytes { return s.channel }
            s.queuedBytes += data.count
            return nil
        }
        if let overflow {
            logger.warning("peer events arrive faster than they are decoded; reconnecting", metadata: ["peer": "\(peer)"])
            overflow.close(promise: nil)
            return
        }
        decoding.async { [self] in
            event(data, isInit: isInit)
            state.withLock { $0.queuedBytes -= data.count }
        }
    }

    /// Decodes and merges one event; `isInit`: an `init` event (the peer's whole list).
    private func event(_ data: Data, isInit: Bool) {
        guard let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let rows = obj["data"] as? [[String: Any]] else { return }
        var snapshots: [SeriesSnapshot] = []
        snapshots.reserveCapacity(rows.count)
        for r in rows { if let s = Self.snapshot(r) { snapshots.append(s) } }
        state.withLock { s in
            s.events += 1
            s.rows += snapshots.count
            s.retryDelay = 1_000
        }
        if isInit && obj["truncated"] as? Bool != true {
            // The peer's complete list: what this instance still holds from it and the list lacks
            // left while the stream was down (or the peer restarted), and leaves now.
            broadcaster.replaceRemote(snapshots, origin: peer)
        } else if !snapshots.isEmpty {
            broadcaster.submitRemote(snapshots, origin: peer)
        }
        // Series the peer no longer has (idle expiry there) leave this fleet view too.
        if let removed = obj["removed"] as? [[String: Any]] {
            let keys = removed.compactMap { r -> SeriesKey? in
                guard let server = r["server_id"] as? String, let metric = r["metric_name"] as? String else { return nil }
                return SeriesKey(serverID: server, metricName: metric, labels: r["labels"] as? String ?? "")
            }
            broadcaster.submitRemoteRemoval(keys, origin: peer)
        }
    }

    /// A series row of the SSE contract (Docs/wire-protocol.md) back into a snapshot.
    static func snapshot(_ r: [String: Any]) -> SeriesSnapshot? {
        func d(_ k: String) -> Double? { (r[k] as? NSNumber)?.doubleValue }
        func u(_ k: String) -> UInt64 { UInt64(exactly: (max(0, min(d(k) ?? 0, 1e18))).rounded(.down)) ?? 0 }
        guard let server = r["server_id"] as? String, let metric = r["metric_name"] as? String,
              let last = d("last"), let ts = d("lastUpdate") else { return nil }
        let key = SeriesKey(serverID: server, metricName: metric, labels: r["labels"] as? String ?? "")
        let c1 = u("count1m"), c5 = u("count5m")
        let w1 = c1 > 0 ? WindowStats(count: c1, sum: (d("avg") ?? 0) * Double(c1), min: d("min") ?? last, max: d("max") ?? last) : WindowStats()
        let w5 = c5 > 0 ? WindowStats(count: c5, sum: (d("avg5m") ?? 0) * Double(c5), min: d("min5m") ?? last, max: d("max5m") ?? last) : WindowStats()
        let total = WindowStats(count: u("count"), sum: .nan, min: .nan, max: .nan)
        return SeriesSnapshot(key: key, last: last, lastTimestamp: Int64(ts), total: total, window1m: w1, window5m: w5,
                              p50: d("p50"), p95: d("p95"), p99: d("p99"), changedSeq: 0)
    }
}

/// Splits the peer's SSE response into events and hands each `data:` payload to the feed.
private final class SSEReader: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    private let feed: PeerFeed
    private var pending: [UInt8] = []
    private var ok = false
    /// The current event's type (`event:` line), `message` until one is given.
    private var eventType = "message"

    init(feed: PeerFeed) { self.feed = feed }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            ok = head.status == .ok
            feed.opened(status: head.status.code)
            if !ok { context.close(promise: nil) }
        case .body(var buf):
            guard ok else { return }
            pending.append(contentsOf: buf.readBytes(length: buf.readableBytes) ?? [])
            scan()
            if pending.count > PeerFeed.maxLineBytes { context.close(promise: nil) }  // no newline in sight: not our contract
        case .end:
            context.close(promise: nil)
        }
    }

    /// Bytes of `pending` already searched for a newline (a snapshot's data line can be megabytes
    /// long and arrive in many reads: each byte is looked at once).
    private var scanned = 0
    private static let prefix: [UInt8] = Array("data: ".utf8)
    private static let eventPrefix: [UInt8] = Array("event: ".utf8)

    /// `event:` and `data:` lines (one data line per event in our contract); a blank line ends an event.
    private func scan() {
        var start = 0
        var i = scanned
        while i < pending.count {
            if pending[i] == 0x0A {
                let line = pending[start..<i]
                if line.starts(with: Self.prefix) {
                    feed.received(Data(line.dropFirst(Self.prefix.count)), isInit: eventType == "init")
                } else if line.starts(with: Self.eventPrefix) {
                    eventType = String(decoding: line.dropFirst(Self.eventPrefix.count), as: UTF8.self)
                } else if line.isEmpty {
                    eventType = "message"
                }
                start = i + 1
            }
            i += 1
        }
        if start > 0 { pending.removeFirst(start) }
        scanned = pending.count
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)  // silent past the heartbeat interval: a dead peer or path
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
