import Foundation
import Synchronization

/// A dedicated OS thread that owns one database ``Connection`` and runs blocking jobs on it, one
/// at a time, in submission order.
///
/// Connector/C calls block for as long as the network and the server take; running them here
/// keeps them off NIO event loops and off the Swift cooperative thread pool (whose few threads
/// must never block). Async callers suspend on a continuation while the job runs.
///
/// The connection is created lazily on the thread and replaced after a connection-level error
/// (see ``MySQLError/isConnectionLevel``), so a database restart only costs the jobs that failed
/// while it was away.
final class BlockingWorker: @unchecked Sendable {
    // @unchecked: `connection` and `state` are touched only on the worker thread; the job queue
    // is guarded by `condition`.
    private let condition = NSCondition()
    private var jobs: [() -> Void] = []
    private var stopping = false
    private var finished = false
    private var onFinished: [CheckedContinuation<Void, Never>] = []
    private let endpoint: MySQLEndpoint
    private let onConnect: (Connection) throws -> Void
    private var connection: Connection?
    let name: String

    /// Starts the thread.
    /// - Parameters:
    ///   - onConnect: run on every new connection (session settings) before it is used.
    init(name: String, endpoint: MySQLEndpoint, onConnect: @escaping (Connection) throws -> Void = { _ in }) {
        self.name = name
        self.endpoint = endpoint
        self.onConnect = onConnect
        let thread = Thread { [self] in loop() }
        thread.name = name
        thread.stackSize = 1 << 20
        thread.start()
    }

    private func loop() {
        while true {
            condition.lock()
            while jobs.isEmpty && !stopping { condition.wait() }
            if jobs.isEmpty && stopping {
                condition.unlock()
                connection?.close()
                connection = nil
                condition.lock()
                finished = true
                let waiting = onFinished
                onFinished = []
                condition.unlock()
                for c in waiting { c.resume() }
                return
            }
            let job = jobs.removeFirst()
            condition.unlock()
            job()
        }
    }

    /// Runs `body` with a live connection on the worker thread and returns its result.
    /// A connection-level error closes the connection (the next job reconnects) and is rethrown.
    func run<T: Sendable>(_ body: @escaping (Connection) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
            enqueue(body) { c.resume(with: $0) }
        }
    }

    /// Starts `body` on the worker thread and returns at once; another blocking thread (never an
    /// async context) collects the result with ``Pending/wait()``.
    func start<T>(_ body: @escaping (Connection) throws -> T) -> Pending<T> {
        let pending = Pending<T>()
        enqueue(body) { pending.complete($0) }
        return pending
    }

    /// The result of ``start(_:)``.
    final class Pending<T>: @unchecked Sendable {
        // @unchecked: `result` is guarded by `condition`.
        private let condition = NSCondition()
        private var result: Result<T, any Error>?

        func complete(_ r: Result<T, any Error>) {
            condition.lock()
            result = r
            condition.broadcast()
            condition.unlock()
        }

        /// Blocks the calling thread until the job finished.
        func wait() -> Result<T, any Error> {
            condition.lock()
            defer { condition.unlock() }
            while result == nil { condition.wait() }
            return result!
        }
    }

    private func enqueue<T>(_ body: @escaping (Connection) throws -> T, _ done: @escaping (Result<T, any Error>) -> Void) {
        let job: () -> Void = { [self] in
            do {
                let conn = try currentConnection()
                do {
                    done(.success(try body(conn)))
                } catch let e as MySQLError where e.isConnectionLevel {
                    conn.close()
                    connection = nil
                    done(.failure(e))
                }
            } catch {
                done(.failure(error))
            }
        }
        condition.lock()
        if stopping {
            condition.unlock()
            done(.failure(MySQLError(code: 2006, message: "store is closed")))
            return
        }
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    private func currentConnection() throws -> Connection {
        if let c = connection, c.isOpen { return c }
        connection = nil
        let c = try Connection(endpoint)
        do {
            try onConnect(c)
        } catch {
            c.close()
            throw error
        }
        connection = c
        return c
    }

    /// Closes the connection on the worker thread (the next job reconnects).
    func dropConnection() {
        condition.lock()
        jobs.append { [self] in
            connection?.close()
            connection = nil
        }
        condition.signal()
        condition.unlock()
    }

    /// Lets queued jobs finish, closes the connection and ends the thread; returns when it has.
    func stop() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            condition.lock()
            stopping = true
            if finished {
                condition.unlock()
                c.resume()
                return
            }
            onFinished.append(c)
            condition.signal()
            condition.unlock()
        }
    }
}
