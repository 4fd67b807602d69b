import NIOCore
import Synchronization

/// Open connections, so shutdown can ask each to drain on its own event loop.
final class ConnectionRegistry: Sendable {
    struct Token: Hashable, Sendable { let id: UInt64 }
    private struct Entry: Sendable {
        let eventLoop: any EventLoop
        let shutdown: @Sendable () -> Void
        let forceClose: @Sendable () -> Void
    }
    private struct State {
        var next: UInt64 = 0
        var entries: [UInt64: Entry] = [:]
        var waiters: [CheckedContinuation<Void, Never>] = []
        var shuttingDown = false
    }
    private let state = Mutex(State())

    /// Registers a connection; `shutdown` runs on `eventLoop` when the server drains. A
    /// connection registered after draining started is asked to shut down at once.
    func register(eventLoop: any EventLoop, shutdown: @escaping @Sendable () -> Void,
                  forceClose: @escaping @Sendable () -> Void) -> Token {
        let (token, draining): (Token, Bool) = state.withLock { s in
            s.next += 1
            s.entries[s.next] = Entry(eventLoop: eventLoop, shutdown: shutdown, forceClose: forceClose)
            return (Token(id: s.next), s.shuttingDown)
        }
        if draining { eventLoop.execute { shutdown() } }
        return token
    }

    func unregister(_ token: Token) {
        let waiters: [CheckedContinuation<Void, Never>] = state.withLock { s in
            s.entries.removeValue(forKey: token.id)
            guard s.entries.isEmpty else { return [] }
            let w = s.waiters
            s.waiters = []
            return w
        }
        for w in waiters { w.resume() }
    }

    /// Asks every connection to drain.
    func shutdownAll() {
        let entries = state.withLock { s in
            s.shuttingDown = true
            return Array(s.entries.values)
        }
        for e in entries { e.eventLoop.execute { e.shutdown() } }
    }

    /// Closes every connection now (after the drain timeout).
    func forceCloseAll() {
        let entries = state.withLock { Array($0.entries.values) }
        for e in entries { e.eventLoop.execute { e.forceClose() } }
    }

    /// Returns when no connection is registered.
    func waitUntilEmpty() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now: Bool = state.withLock { s in
                if s.entries.isEmpty { return true }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }
}
