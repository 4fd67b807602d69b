import Synchronization

/// A one-shot signal that tasks can wait on, with a deadline.
final class AsyncSignal: Sendable {
    private struct State {
        var fired = false
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var expired: Set<UInt64> = []
        var nextID: UInt64 = 0
    }
    private let state = Mutex(State())

    var isFired: Bool { state.withLock { $0.fired } }

    func fire() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.fired = true
            let w = Array(s.waiters.values)
            s.waiters.removeAll()
            return w
        }
        for w in waiters { w.resume() }
    }

    /// Returns when fired or when the deadline passes.
    func wait(until deadline: ContinuousClock.Instant, clock: ContinuousClock) async {
        let id: UInt64 = state.withLock { s in
            s.nextID += 1
            return s.nextID
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    let resumeNow: Bool = self.state.withLock { s in
                        if s.fired || s.expired.remove(id) != nil { return true }
                        s.waiters[id] = c
                        return false
                    }
                    if resumeNow { c.resume() }
                }
            }
            group.addTask {
                try? await clock.sleep(until: deadline)
                let c: CheckedContinuation<Void, Never>? = self.state.withLock { s in
                    if let c = s.waiters.removeValue(forKey: id) { return c }
                    s.expired.insert(id)
                    return nil
                }
                c?.resume()
            }
            await group.next()
            group.cancelAll()
        }
        _ = state.withLock { $0.expired.remove(id) }
    }
}
