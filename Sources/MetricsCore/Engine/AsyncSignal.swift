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

/// Lets one task at a time through a section of async code; the others wait in arrival order.
/// (Not reentrant; no cancellation: the sections it guards are short and always finish.)
final class AsyncGate: Sendable {
    private struct State {
        var busy = false
        var waiters: [CheckedContinuation<Void, Never>] = []
        var head = 0
    }
    private let state = Mutex(State())

    /// Runs `body` once no other caller is inside.
    func run<R: Sendable>(_ body: () async -> R) async -> R {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let enter = state.withLock { s -> Bool in
                if !s.busy { s.busy = true; return true }
                s.waiters.append(c)
                return false
            }
            if enter { c.resume() }
        }
        let result = await body()
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            guard s.head < s.waiters.count else {
                s.waiters.removeAll()
                s.head = 0
                s.busy = false
                return nil
            }
            let n = s.waiters[s.head]
            s.head += 1
            return n
        }
        next?.resume()
        return result
    }
}
