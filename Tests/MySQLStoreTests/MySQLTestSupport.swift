import Foundation
import Testing
@testable import MetricsCore
@testable import MySQLStore

/// Access to the throwaway MariaDB the test command starts (`RTD_TEST_MYSQL`, see
/// `scripts/lib/mariadb.sh`). Each test gets its own fresh database, dropped afterwards.
///
/// Without `RTD_TEST_MYSQL` the suites are disabled, unless `RTD_REQUIRE_MYSQL=1` (set by the
/// README's test command): then they fail, so CI can never pass by skipping them.
enum MySQLTestSupport {
    static let url = ProcessInfo.processInfo.environment["RTD_TEST_MYSQL"]
    static let required = ProcessInfo.processInfo.environment["RTD_REQUIRE_MYSQL"] == "1"
    static var enabled: Bool { url != nil || required }

    static func baseEndpoint() throws -> MySQLEndpoint {
        guard let url else {
            throw MySQLError(code: 0, message: "RTD_TEST_MYSQL is not set but RTD_REQUIRE_MYSQL=1: start a database with scripts/lib/mariadb.sh")
        }
        return try MySQLEndpoint(url: url)
    }

    /// Creates a fresh database and returns its endpoint.
    static func freshDatabase() throws -> MySQLEndpoint {
        var e = try baseEndpoint()
        let c = try Connection(e)
        defer { c.close() }
        let name = "rtd_t_" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        try c.execute("CREATE DATABASE \(name)")
        e.database = name
        return e
    }

    static func dropDatabase(_ e: MySQLEndpoint) {
        guard let c = try? Connection(e) else { return }
        _ = try? c.execute("DROP DATABASE \(e.database)")
        c.close()
    }

    /// Runs `body` against a new store on a fresh database; closes and drops it afterwards.
    static func withStore<T>(_ configure: (inout MySQLStore.Configuration) -> Void = { _ in },
                             _ body: (MySQLStore, MySQLEndpoint) async throws -> T) async throws -> T {
        let e = try freshDatabase()
        var cfg = MySQLStore.Configuration(endpoint: e, maintenanceInterval: .seconds(3_600))
        configure(&cfg)
        let store = try await MySQLStore(configuration: cfg)
        do {
            let r = try await body(store, e)
            try await store.close()
            dropDatabase(e)
            return r
        } catch {
            try? await store.close()
            dropDatabase(e)
            throw error
        }
    }

    /// One SQL query on a separate connection (what an operator would see).
    static func query(_ e: MySQLEndpoint, _ sql: String) throws -> [[String?]] {
        let c = try Connection(e)
        defer { c.close() }
        return try c.query(sql)
    }

    static func scalar(_ e: MySQLEndpoint, _ sql: String) throws -> Int64 {
        Int64(try query(e, sql).first?.first??.split(separator: ".").first ?? "0") ?? 0
    }

    static func rollup(_ server: String, _ metric: String, minute: Int64, values: [Double], labels: String = "") -> MinuteRollup {
        var sk = QuantileSketch()
        for v in values { sk.add(v) }
        return MinuteRollup(key: SeriesKey(serverID: server, metricName: metric, labels: labels), minute: minute, sketch: sk)
    }
}
