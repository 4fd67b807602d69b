import Synchronization

/// Connection and request counters for `/api/stats` and `/metrics`.
public final class ServerStatistics: Sendable {
    let h1Connections = Atomic<Int>(0)
    let h2Connections = Atomic<Int>(0)
    let requests = Atomic<Int>(0)
    let protocolErrors = Atomic<Int>(0)
    let authMissing = Atomic<Int>(0)
    let authInvalid = Atomic<Int>(0)
    let authForbidden = Atomic<Int>(0)
    let connectionsRefused = Atomic<Int>(0)
    let connectionsRefusedLimit = Atomic<Int>(0)
    let openCount = Atomic<Int>(0)
    let closedNoRequest = Atomic<Int>(0)
    let closedIdle = Atomic<Int>(0)
    let closedStalled = Atomic<Int>(0)

    init() {}

    /// Open HTTP/1.1 connections.
    public var http1Connections: Int { h1Connections.load(ordering: .relaxed) }
    /// Open HTTP/2 connections.
    public var http2Connections: Int { h2Connections.load(ordering: .relaxed) }
    /// Requests since start.
    public var requestCount: Int { requests.load(ordering: .relaxed) }
    /// Connections closed for protocol errors since start.
    public var protocolErrorCount: Int { protocolErrors.load(ordering: .relaxed) }
    /// Accepted connections open now, whatever their protocol (counted from accept, before a
    /// byte is read; what ``HTTPServerConfiguration/maxConnections`` bounds).
    public var openConnections: Int { openCount.load(ordering: .relaxed) }
    /// Connections closed at once because ``HTTPServerConfiguration/maxConnections`` were open.
    public var refusedAtLimitCount: Int { connectionsRefusedLimit.load(ordering: .relaxed) }
    /// Connections closed at once because their client address had `maxConnectionsPerAddress` open.
    public var refusedConnectionCount: Int { connectionsRefused.load(ordering: .relaxed) }
    /// Connections the idle guard closed, by reason: `no_request` (none within 10 s of
    /// accepting), `idle` (nothing read for the idle timeout, no SSE stream open), `stalled_reader`
    /// (an SSE client that stopped reading for the idle timeout).
    public var idleClosures: [String: Int] {
        ["no_request": closedNoRequest.load(ordering: .relaxed), "idle": closedIdle.load(ordering: .relaxed),
         "stalled_reader": closedStalled.load(ordering: .relaxed)]
    }
    /// Requests refused by access control since start, by reason: `missing` (no credential,
    /// 401), `invalid` (a credential that matched nothing, 401), `forbidden` (the other role's, 403).
    public var authRejections: [String: Int] {
        ["missing": authMissing.load(ordering: .relaxed), "invalid": authInvalid.load(ordering: .relaxed),
         "forbidden": authForbidden.load(ordering: .relaxed)]
    }
}
