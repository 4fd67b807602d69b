import CMariaDB

#if canImport(Glibc)
import Glibc
#endif

/// A parameter or result value of a prepared statement.
enum SQLValue: Equatable {
    case null
    case int(Int64)
    case uint(UInt64)
    case double(Double)
    case text(String)
    case blob([UInt8])

    var int64: Int64? {
        switch self {
        case .int(let v): v
        case .uint(let v): Int64(exactly: v)
        case .double(let v): Int64(exactly: v)
        case .text(let s): Int64(s)
        default: nil
        }
    }

    var uint64: UInt64? {
        switch self {
        case .int(let v): UInt64(exactly: v)
        case .uint(let v): v
        case .text(let s): UInt64(s)
        default: nil
        }
    }

    var double: Double? {
        switch self {
        case .int(let v): Double(v)
        case .uint(let v): Double(v)
        case .double(let v): v
        case .text(let s): Double(s)
        default: nil
        }
    }

    var string: String? {
        switch self {
        case .text(let s): s
        case .blob(let b): String(decoding: b, as: UTF8.self)
        case .int(let v): String(v)
        case .uint(let v): String(v)
        default: nil
        }
    }

    var bytes: [UInt8]? {
        switch self {
        case .blob(let b): b
        case .text(let s): Array(s.utf8)
        default: nil
        }
    }
}

/// One column of an array-bound (bulk) execution: one value per row.
enum BulkColumn {
    case int64([Int64])
    case uint64([UInt64])
    case double([Double])
    case text([String])
    case blob([[UInt8]])

    var count: Int {
        switch self {
        case .int64(let a): a.count
        case .uint64(let a): a.count
        case .double(let a): a.count
        case .text(let a): a.count
        case .blob(let a): a.count
        }
    }
}

/// Raw memory that parameter binds point into; freed when the execution is over.
private final class BindArena {
    private var blocks: [UnsafeMutableRawPointer] = []

    func allocate(_ bytes: Int) -> UnsafeMutableRawPointer {
        let p = UnsafeMutableRawPointer.allocate(byteCount: max(bytes, 1), alignment: 16)
        blocks.append(p)
        return p
    }

    func copy<T>(_ array: [T]) -> UnsafeMutableRawPointer {
        let p = allocate(array.count * MemoryLayout<T>.stride)
        array.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        return p
    }

    /// Packs byte strings into one block and returns (array of pointers, array of lengths), the
    /// form Connector/C's array binding wants for variable-length columns.
    func pack<C: Collection>(_ items: C, count: (C.Element) -> Int,
                             copy: (C.Element, UnsafeMutableRawPointer) -> Void) -> (UnsafeMutableRawPointer, UnsafeMutableRawPointer) {
        let n = items.count
        let total = items.reduce(0) { $0 + count($1) }
        let data = allocate(total)
        let pointers = allocate(n * MemoryLayout<UnsafeRawPointer>.stride).bindMemory(to: UnsafeRawPointer.self, capacity: n)
        let lengths = allocate(n * MemoryLayout<UInt>.stride).bindMemory(to: UInt.self, capacity: n)
        var offset = 0
        for (i, item) in items.enumerated() {
            let c = count(item)
            copy(item, data + offset)
            pointers[i] = UnsafeRawPointer(data + offset)
            lengths[i] = UInt(c)
            offset += c
        }
        return (UnsafeMutableRawPointer(pointers), UnsafeMutableRawPointer(lengths))
    }

    deinit { for p in blocks { p.deallocate() } }
}

/// A Connector/C prepared statement (`MYSQL_STMT *`), owned by one ``Connection``.
///
/// Three ways to run it:
/// - ``executeBulk(_:)``: MariaDB array binding (`STMT_ATTR_ARRAY_SIZE`), one round trip for
///   many rows. Numbers are bound as contiguous arrays; strings and blobs as an array of pointers
///   plus an array of lengths (getting that wrong crashes the client).
/// - ``execute(_:)``: one row of parameters (also used for multi-row `VALUES (?,?),(?,?)…`).
/// - ``select(_:)``: parameters in, rows out (typed: integers, doubles, text/blobs of any length).
final class PreparedStatement {
    private var stmt: UnsafeMutablePointer<MYSQL_STMT>?
    /// When the connection's statement cache last handed it out (for eviction).
    var lastUse: UInt64 = 0
    /// Nanoseconds spent waiting in Connector/C execute/fetch calls, shared with the connection.
    let clock: DatabaseClock
    let parameterCount: Int
    let sql: String

    init(connection: UnsafeMutablePointer<MYSQL>, sql: String, clock: DatabaseClock) throws {
        self.clock = clock
        guard let s = mysql_stmt_init(connection) else { throw Connection.error(of: connection) }
        var text = sql
        let rc = text.withUTF8 { mysql_stmt_prepare(s, UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self), UInt($0.count)) }
        if rc != 0 {
            let e = Self.error(of: s)
            mysql_stmt_close(s)
            throw e
        }
        stmt = s
        parameterCount = Int(mysql_stmt_param_count(s))
        self.sql = sql
    }

    deinit { close() }

    func close() {
        if let s = stmt { mysql_stmt_close(s) }
        stmt = nil
    }

    static func error(of s: UnsafeMutablePointer<MYSQL_STMT>) -> MySQLError {
        MySQLError(code: mysql_stmt_errno(s), sqlState: String(cString: mysql_stmt_sqlstate(s)), message: String(cString: mysql_stmt_error(s)))
    }

    private func live() throws -> UnsafeMutablePointer<MYSQL_STMT> {
        guard let s = stmt else { throw MySQLError(code: 2006, message: "statement closed") }
        return s
    }

    /// Executes once for every row of the columns (which must have equal counts) with array binding.
    /// - Returns: affected rows.
    @discardableResult
    func executeBulk(_ columns: [BulkColumn]) throws -> UInt64 {
        let s = try live()
        precondition(columns.count == parameterCount, "bulk column count must match the statement's parameters")
        let rows = columns.first?.count ?? 0
        precondition(columns.allSatisfy { $0.count == rows }, "bulk columns must have the same length")
        guard rows > 0 else { return 0 }
        let arena = BindArena()
        let binds = UnsafeMutablePointer<MYSQL_BIND>.allocate(capacity: columns.count)
        binds.initialize(repeating: MYSQL_BIND(), count: columns.count)
        defer { binds.deallocate() }
        for (i, column) in columns.enumerated() {
            switch column {
            case .int64(let a):
                binds[i].buffer_type = MYSQL_TYPE_LONGLONG
                binds[i].buffer = arena.copy(a)
            case .uint64(let a):
                binds[i].buffer_type = MYSQL_TYPE_LONGLONG
                binds[i].is_unsigned = 1
                binds[i].buffer = arena.copy(a)
            case .double(let a):
                binds[i].buffer_type = MYSQL_TYPE_DOUBLE
                binds[i].buffer = arena.copy(a)
            case .text(let a):
                let (p, l) = Self.packStrings(a, arena)
                binds[i].buffer_type = MYSQL_TYPE_STRING
                binds[i].buffer = p
                binds[i].length = l.assumingMemoryBound(to: UInt.self)
            case .blob(let a):
                let (p, l) = Self.packBlobs(a, arena)
                binds[i].buffer_type = MYSQL_TYPE_BLOB
                binds[i].buffer = p
                binds[i].length = l.assumingMemoryBound(to: UInt.self)
            }
        }
        var size = UInt32(rows)
        guard mysql_stmt_attr_set(s, STMT_ATTR_ARRAY_SIZE, &size) == 0 else { throw Self.error(of: s) }
        defer {
            var one: UInt32 = 0
            _ = mysql_stmt_attr_set(s, STMT_ATTR_ARRAY_SIZE, &one)
        }
        guard mysql_stmt_bind_param(s, binds) == 0 else { throw Self.error(of: s) }
        guard clock.time({ mysql_stmt_execute(s) }) == 0 else { throw Self.error(of: s) }
        return mysql_stmt_affected_rows(s)
    }

    private static func packStrings(_ strings: [String], _ arena: BindArena) -> (UnsafeMutableRawPointer, UnsafeMutableRawPointer) {
        arena.pack(strings, count: { $0.utf8.count }, copy: { str, dst in
            var str = str
            str.withUTF8 { if $0.count > 0 { dst.copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
        })
    }

    private static func packBlobs(_ blobs: [[UInt8]], _ arena: BindArena) -> (UnsafeMutableRawPointer, UnsafeMutableRawPointer) {
        arena.pack(blobs, count: { $0.count }, copy: { b, dst in
            b.withUnsafeBytes { if $0.count > 0 { dst.copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
        })
    }

    /// Binds one row of values.
    private func bind(_ values: [SQLValue], _ s: UnsafeMutablePointer<MYSQL_STMT>, _ arena: BindArena) throws {
        precondition(values.count == parameterCount, "parameter count must match the statement")
        guard !values.isEmpty else { return }
        let binds = arena.allocate(values.count * MemoryLayout<MYSQL_BIND>.stride).bindMemory(to: MYSQL_BIND.self, capacity: values.count)
        binds.initialize(repeating: MYSQL_BIND(), count: values.count)
        for (i, v) in values.enumerated() {
            switch v {
            case .null:
                binds[i].buffer_type = MYSQL_TYPE_NULL
            case .int(let x):
                binds[i].buffer_type = MYSQL_TYPE_LONGLONG
                binds[i].buffer = arena.copy([x])
            case .uint(let x):
                binds[i].buffer_type = MYSQL_TYPE_LONGLONG
                binds[i].is_unsigned = 1
                binds[i].buffer = arena.copy([x])
            case .double(let x):
                binds[i].buffer_type = MYSQL_TYPE_DOUBLE
                binds[i].buffer = arena.copy([x])
            case .text(let str):
                let bytes = Array(str.utf8)
                binds[i].buffer_type = MYSQL_TYPE_STRING
                binds[i].buffer = arena.copy(bytes)
                binds[i].buffer_length = UInt(bytes.count)
            case .blob(let bytes):
                binds[i].buffer_type = MYSQL_TYPE_BLOB
                binds[i].buffer = arena.copy(bytes)
                binds[i].buffer_length = UInt(bytes.count)
            }
        }
        guard mysql_stmt_bind_param(s, binds) == 0 else { throw Self.error(of: s) }
    }

    /// Executes with one row of parameters. - Returns: affected rows.
    @discardableResult
    func execute(_ values: [SQLValue]) throws -> UInt64 {
        let s = try live()
        let arena = BindArena()
        try bind(values, s, arena)
        guard clock.time({ mysql_stmt_execute(s) }) == 0 else { throw Self.error(of: s) }
        return mysql_stmt_affected_rows(s)
    }

    /// Executes and returns every result row. Integer columns come back as `.int`/`.uint`,
    /// floating-point as `.double`, everything else as `.blob` (bytes) or `.null`.
    func select(_ values: [SQLValue]) throws -> [[SQLValue]] {
        let s = try live()
        let arena = BindArena()
        try bind(values, s, arena)
        guard clock.time({ mysql_stmt_execute(s) }) == 0 else { throw Self.error(of: s) }
        guard let meta = mysql_stmt_result_metadata(s) else {
            if mysql_stmt_field_count(s) == 0 { return [] }
            throw Self.error(of: s)
        }
        defer { mysql_free_result(meta) }
        guard clock.time({ mysql_stmt_store_result(s) }) == 0 else { throw Self.error(of: s) }
        defer { mysql_stmt_free_result(s) }
        let n = Int(mysql_num_fields(meta))
        let fields = mysql_fetch_fields(meta)!
        enum Kind { case signed, unsigned, double, bytes }
        var kinds: [Kind] = []
        let binds = arena.allocate(n * MemoryLayout<MYSQL_BIND>.stride).bindMemory(to: MYSQL_BIND.self, capacity: n)
        binds.initialize(repeating: MYSQL_BIND(), count: n)
        let lengths = arena.allocate(n * MemoryLayout<UInt>.stride).bindMemory(to: UInt.self, capacity: n)
        let nulls = arena.allocate(n).bindMemory(to: CChar.self, capacity: n)
        let inline = 256
        for i in 0..<n {
            let t = fields[i].type
            let kind: Kind
            switch t {
            case MYSQL_TYPE_TINY, MYSQL_TYPE_SHORT, MYSQL_TYPE_LONG, MYSQL_TYPE_INT24, MYSQL_TYPE_LONGLONG, MYSQL_TYPE_YEAR:
                kind = fields[i].flags & UInt32(UNSIGNED_FLAG) != 0 ? .unsigned : .signed
            case MYSQL_TYPE_FLOAT, MYSQL_TYPE_DOUBLE:
                kind = .double
            default:
                kind = .bytes
            }
            kinds.append(kind)
            binds[i].is_null = nulls + i
            binds[i].length = lengths + i
            switch kind {
            case .signed, .unsigned:
                binds[i].buffer_type = MYSQL_TYPE_LONGLONG
                binds[i].is_unsigned = kind == .unsigned ? 1 : 0
                binds[i].buffer = arena.allocate(8)
                binds[i].buffer_length = 8
            case .double:
                binds[i].buffer_type = MYSQL_TYPE_DOUBLE
                binds[i].buffer = arena.allocate(8)
                binds[i].buffer_length = 8
            case .bytes:
                binds[i].buffer_type = MYSQL_TYPE_BLOB
                binds[i].buffer = arena.allocate(inline)
                binds[i].buffer_length = UInt(inline)
            }
        }
        guard mysql_stmt_bind_result(s, binds) == 0 else { throw Self.error(of: s) }
        var rows: [[SQLValue]] = []
        rows.reserveCapacity(Int(mysql_stmt_num_rows(s)))
        while true {
            let rc = mysql_stmt_fetch(s)
            if rc == MYSQL_NO_DATA { break }
            if rc == 1 { throw Self.error(of: s) }
            var row: [SQLValue] = []
            row.reserveCapacity(n)
            for i in 0..<n {
                if nulls[i] != 0 { row.append(.null); continue }
                switch kinds[i] {
                case .signed: row.append(.int(binds[i].buffer.load(as: Int64.self)))
                case .unsigned: row.append(.uint(binds[i].buffer.load(as: UInt64.self)))
                case .double: row.append(.double(binds[i].buffer.load(as: Double.self)))
                case .bytes:
                    let len = Int(lengths[i])
                    if len <= inline {
                        row.append(.blob(Array(UnsafeRawBufferPointer(start: binds[i].buffer, count: len))))
                    } else {
                        // Truncated (MYSQL_DATA_TRUNCATED): fetch the whole column into a larger buffer.
                        let buffer = arena.allocate(len)
                        let got = arena.allocate(MemoryLayout<UInt>.stride).bindMemory(to: UInt.self, capacity: 1)
                        var col = MYSQL_BIND()
                        col.buffer_type = MYSQL_TYPE_BLOB
                        col.buffer = buffer
                        col.buffer_length = UInt(len)
                        col.length = got
                        if mysql_stmt_fetch_column(s, &col, UInt32(i), 0) != 0 { throw Self.error(of: s) }
                        let big = Array(UnsafeRawBufferPointer(start: buffer, count: len))
                        row.append(.blob(big))
                    }
                }
            }
            rows.append(row)
        }
        return rows
    }
}
