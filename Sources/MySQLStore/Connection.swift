import CMariaDB
import MetricsCore

#if canImport(Glibc)
import Glibc
#endif

/// An error from MariaDB Connector/C or the server.
public struct MySQLError: Error, CustomStringConvertible, Sendable {
    /// The client (2xxx) or server (1xxx) error number; 0 for errors raised by this module.
    public var code: UInt32
    /// The SQLSTATE, when the server gave one.
    public var sqlState: String
    /// The message.
    public var message: String

    /// Creates an error.
    public init(code: UInt32, sqlState: String = "HY000", message: String) {
        self.code = code
        self.sqlState = sqlState
        self.message = message
    }

    public var description: String { "MySQL error \(code) (\(sqlState)): \(message)" }

    /// Duplicate key (ER_DUP_ENTRY).
    public var isDuplicateKey: Bool { code == 1062 }

    /// Whether the connection can no longer be trusted and must be replaced: every client error
    /// (2000–2999: server gone, lost, cannot connect, out of sync…), a killed connection or a
    /// server shutting down.
    public var isConnectionLevel: Bool {
        (2000..<3000).contains(code) || code == 1927 /* ER_CONNECTION_KILLED */ || code == 1053 /* ER_SERVER_SHUTDOWN */
            || code == 1317 /* ER_QUERY_INTERRUPTED */ || code == 0
    }
}

/// How to reach the database: parsed from `mysql://user:pass@host:port/db` or
/// `mysql://user:pass@localhost/db?socket=/path/to/mysqld.sock`.
public struct MySQLEndpoint: Sendable, Equatable, CustomStringConvertible {
    /// Host name or address (ignored when ``socket`` is set).
    public var host: String
    /// TCP port.
    public var port: Int
    /// Unix socket path, if connecting through one.
    public var socket: String?
    /// User.
    public var user: String
    /// Password.
    public var password: String
    /// Database (schema) name.
    public var database: String
    /// Seconds to wait for a connection. Default 5.
    public var connectTimeout: Int = 5
    /// Seconds to wait for a server reply before the connection is considered lost. Default 60.
    public var readTimeout: Int = 60
    /// Seconds to wait for a send to complete. Default 60.
    public var writeTimeout: Int = 60

    /// Creates an endpoint.
    public init(host: String = "127.0.0.1", port: Int = 3306, socket: String? = nil, user: String, password: String = "", database: String) {
        self.host = host
        self.port = port
        self.socket = socket
        self.user = user
        self.password = password
        self.database = database
    }

    /// Parses a `mysql://` (or `mariadb://`) URL. Query parameters: `socket`, `connect_timeout`,
    /// `read_timeout`, `write_timeout` (seconds). User and password may be percent-encoded.
    /// - Throws: ``MySQLError`` (code 0) describing what is wrong.
    public init(url: String) throws {
        func fail(_ why: String) -> MySQLError { MySQLError(code: 0, message: "invalid store URL: \(why)") }
        var rest: Substring
        if url.hasPrefix("mysql://") { rest = url.dropFirst(8) } else if url.hasPrefix("mariadb://") { rest = url.dropFirst(10) } else {
            throw fail("expected mysql://user:pass@host:port/db or mysql://user:pass@localhost/db?socket=/path")
        }
        var query: Substring = ""
        if let q = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: q)...]
            rest = rest[..<q]
        }
        guard let at = rest.lastIndex(of: "@") else { throw fail("missing user@") }
        let userInfo = rest[..<at]
        var hostPart = rest[rest.index(after: at)...]
        guard let slash = hostPart.firstIndex(of: "/") else { throw fail("missing /database") }
        let database = String(hostPart[hostPart.index(after: slash)...])
        hostPart = hostPart[..<slash]
        guard !database.isEmpty, database.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
            throw fail("database name must be letters, digits and _")
        }
        let user: String, password: String
        if let colon = userInfo.firstIndex(of: ":") {
            user = try Self.percentDecoded(userInfo[..<colon])
            password = try Self.percentDecoded(userInfo[userInfo.index(after: colon)...])
        } else {
            user = try Self.percentDecoded(userInfo)
            password = ""
        }
        guard !user.isEmpty else { throw fail("missing user") }
        var host = String(hostPart), port = 3306
        if let colon = hostPart.lastIndex(of: ":"), !hostPart.hasPrefix("[") || hostPart[..<colon].hasSuffix("]") {
            guard let p = Int(hostPart[hostPart.index(after: colon)...]), (1...65_535).contains(p) else { throw fail("bad port") }
            port = p
            host = String(hostPart[..<colon])
        }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty { host = "localhost" }
        self.init(host: host, port: port, user: user, password: password, database: database)
        for item in query.split(separator: "&") {
            let kv = item.split(separator: "=", maxSplits: 1)
            let key = String(kv[0]), value = kv.count > 1 ? try Self.percentDecoded(kv[1]) : ""
            switch key {
            case "socket": socket = value
            case "connect_timeout", "read_timeout", "write_timeout":
                guard let n = Int(value), n > 0 else { throw fail("\(key) must be a positive number of seconds") }
                if key == "connect_timeout" { connectTimeout = n } else if key == "read_timeout" { readTimeout = n } else { writeTimeout = n }
            default: throw fail("unknown parameter '\(key)'")
            }
        }
    }

    /// The endpoint without its password, for logs.
    public var description: String {
        let place = socket.map { "socket \($0)" } ?? "\(host):\(port)"
        return "mysql://\(user)@\(place)/\(database)"
    }

    static func percentDecoded(_ s: Substring) throws -> String {
        var bytes: [UInt8] = []
        var it = Array(s.utf8)[...]
        while let b = it.popFirst() {
            if b == UInt8(ascii: "%") {
                guard it.count >= 2, let v = UInt8(String(decoding: it.prefix(2), as: UTF8.self), radix: 16) else {
                    throw MySQLError(code: 0, message: "invalid store URL: bad percent-encoding")
                }
                bytes.append(v)
                it = it.dropFirst(2)
            } else {
                bytes.append(b)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Accumulates the time a connection's thread spends blocked in Connector/C waiting for the
/// server. Touched only by that connection's thread.
final class DatabaseClock {
    private(set) var nanoseconds: UInt64 = 0

    @inline(__always)
    func time<T>(_ body: () -> T) -> T {
        let t0 = ProcessInfoLite.monotonicNanoseconds()
        defer { nanoseconds &+= ProcessInfoLite.monotonicNanoseconds() &- t0 }
        return body()
    }
}

/// One Connector/C connection (`MYSQL *`).
///
/// Not thread-safe and blocking: it is owned by one ``BlockingWorker`` thread and only ever used
/// there, never on an event loop or the Swift cooperative pool. Every call into Connector/C in
/// this module goes through this type or ``PreparedStatement``.
final class Connection {
    private var handle: UnsafeMutablePointer<MYSQL>?
    /// Time spent waiting for the server (execute/fetch/query), for the store's statistics.
    let clock = DatabaseClock()
    private var statements: [String: PreparedStatement] = [:]
    /// Use counter for evicting the least recently used statement.
    private var uses: UInt64 = 0
    /// Most statements kept prepared on one connection. The multi-row statements have one text
    /// per row count (a batch's last, shorter chunk), and `max_prepared_stmt_count` (default
    /// 16,382) counts every connection of every instance: unbounded, a few instances used it up
    /// and every later prepare failed (1461), stopping all writes.
    static let maxCachedStatements = 64
    /// Whether the server is MariaDB (array binding available) rather than MySQL.
    private(set) var isMariaDB = false
    /// The server's version string.
    private(set) var serverVersion = ""

    /// Connects. Blocking.
    init(_ endpoint: MySQLEndpoint) throws {
        guard let h = mysql_init(nil) else { throw MySQLError(code: 2008, message: "mysql_init: out of memory") }
        handle = h
        var connectTimeout = UInt32(endpoint.connectTimeout)
        var readTimeout = UInt32(endpoint.readTimeout)
        var writeTimeout = UInt32(endpoint.writeTimeout)
        mysql_options(h, MYSQL_OPT_CONNECT_TIMEOUT, &connectTimeout)
        mysql_options(h, MYSQL_OPT_READ_TIMEOUT, &readTimeout)
        mysql_options(h, MYSQL_OPT_WRITE_TIMEOUT, &writeTimeout)
        mysql_options(h, MYSQL_SET_CHARSET_NAME, "utf8mb4")
        let useSocket = endpoint.socket != nil
        let ok = mysql_real_connect(h, useSocket ? "localhost" : endpoint.host, endpoint.user, endpoint.password, endpoint.database,
                                    UInt32(endpoint.port), endpoint.socket, 0)
        if ok == nil {
            let error = Self.error(of: h)
            mysql_close(h)
            handle = nil
            throw error
        }
        serverVersion = String(cString: mysql_get_server_info(h))
        isMariaDB = serverVersion.lowercased().contains("mariadb")
    }

    deinit { close() }

    /// Closes the connection and its statements. Safe to call twice.
    func close() {
        for (_, s) in statements { s.close() }
        statements = [:]
        if let h = handle { mysql_close(h) }
        handle = nil
    }

    var isOpen: Bool { handle != nil }

    static func error(of h: UnsafeMutablePointer<MYSQL>) -> MySQLError {
        MySQLError(code: mysql_errno(h), sqlState: String(cString: mysql_sqlstate(h)), message: String(cString: mysql_error(h)))
    }

    private func live() throws -> UnsafeMutablePointer<MYSQL> {
        guard let h = handle else { throw MySQLError(code: 2006, message: "connection closed") }
        return h
    }

    /// Sends a text-protocol statement and waits for its reply; the caller reads the result.
    private func send(_ sql: String) throws -> UnsafeMutablePointer<MYSQL> {
        let h = try live()
        var sql = sql
        let rc = clock.time { sql.withUTF8 { mysql_real_query(h, UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self), UInt($0.count)) } }
        if rc != 0 { throw Self.error(of: h) }
        return h
    }

    /// Runs SQL without parameters (DDL, BEGIN/COMMIT, maintenance) and discards any result.
    /// Never pass user data here; use ``prepare(_:)``.
    @discardableResult
    func execute(_ sql: String) throws -> UInt64 {
        let h = try send(sql)
        let affected = mysql_affected_rows(h)
        if let result = mysql_store_result(h) { mysql_free_result(result) } else if mysql_field_count(h) != 0 { throw Self.error(of: h) }
        return affected == UInt64.max ? 0 : affected
    }

    /// Runs SQL without parameters and returns its rows as text (NULL as `nil`). For catalogue
    /// queries (schema version, partitions); never with user data.
    func query(_ sql: String) throws -> [[String?]] {
        let h = try send(sql)
        guard let result = mysql_store_result(h) else {
            if mysql_field_count(h) != 0 { throw Self.error(of: h) }
            return []
        }
        defer { mysql_free_result(result) }
        let n = Int(mysql_num_fields(result))
        var rows: [[String?]] = []
        while let row = mysql_fetch_row(result) {
            let lengths = mysql_fetch_lengths(result)!
            var out: [String?] = []
            out.reserveCapacity(n)
            for i in 0..<n {
                if let p = row[i] {
                    out.append(String(decoding: UnsafeRawBufferPointer(start: p, count: Int(lengths[i])), as: UTF8.self))
                } else {
                    out.append(nil)
                }
            }
            rows.append(out)
        }
        return rows
    }

    /// A prepared statement for `sql`, prepared once per connection and cached.
    func prepare(_ sql: String) throws -> PreparedStatement {
        uses &+= 1
        if let s = statements[sql] {
            s.lastUse = uses
            return s
        }
        if statements.count >= Self.maxCachedStatements,
           let oldest = statements.min(by: { $0.value.lastUse < $1.value.lastUse }) {
            oldest.value.close()
            statements[oldest.key] = nil
        }
        let s = try PreparedStatement(connection: try live(), sql: sql, clock: clock)
        s.lastUse = uses
        statements[sql] = s
        return s
    }

    /// Rows changed by the last statement.
    var affectedRows: UInt64 { handle.map { mysql_affected_rows($0) } ?? 0 }
}
