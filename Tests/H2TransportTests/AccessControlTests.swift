import Foundation
import MetricsCore
import Testing
@testable import H2Transport

@Suite struct AccessControlTests {
    static let file = """
        # role   name        secret                            server ids
        ingest   web-agents  web-secret-0123456789abcdef       web-*,db-01
        ingest   telegraf    telegraf-secret-0123456789        *
        view     alice       alice-secret-0123456789ab   # trailing comment
        """

    static func head(_ path: String, _ headers: [(String, String)] = []) -> RequestHead {
        RequestHead(method: "GET", target: path, headers: headers)
    }

    static func basic(_ user: String, _ secret: String) -> (String, String) {
        ("authorization", "Basic " + Data("\(user):\(secret)".utf8).base64EncodedString())
    }

    @Test func parsesTheFileWithPoliciesAndComments() throws {
        let ac = try AccessControl(fileContents: Self.file)
        #expect(ac.isEnabled && ac.credentials.count == 3)
        let web = try #require(ac.credentials.first { $0.name == "web-agents" })
        #expect(web.role == .ingest)
        #expect(web.servers?.allows("web-17") == true && web.servers?.allows("db-01") == true)
        #expect(web.servers?.allows("db-02") == false && web.servers?.allows("we") == false)
        #expect(ac.credentials.first { $0.name == "telegraf" }?.servers == nil, "'*' is no restriction")
    }

    @Test func aHashInsideASecretIsPartOfIt() throws {
        let ac = try AccessControl(fileContents: "ingest web 0123456789abcdef#Zq9 web-*\n  # a comment line\nview v 0123456789abcdefgh #note")
        let web = try #require(ac.credentials.first { $0.name == "web" })
        #expect(web.secret == Array("0123456789abcdef#Zq9".utf8))
        #expect(web.servers?.allows("db-99") == false, "the server-id restriction stays")
        #expect(ac.credentials.first { $0.name == "v" }?.secret == Array("0123456789abcdefgh".utf8))
    }

    @Test(arguments: [
        ("ingest short tooshort", "line 1: the secret of 'short' is shorter than 16 characters"),
        ("admin x 0123456789abcdef0", "line 1: expected"),
        ("view v 0123456789abcdef0 web-*", "line 1: server ids apply to ingest credentials only"),
        ("ingest a 0123456789abcdef0 we*b", "line 1: invalid server id pattern 'we*b'"),
        ("ingest a 0123456789abcdef0\n\ningest a 0123456789abcdef1", "line 3: duplicate ingest credential 'a'"),
        ("view a:b 0123456789abcdef0", "line 1: invalid credential name"),
    ])
    func refusesBadFilesNamingTheLine(text: String, expected: String) {
        do {
            _ = try AccessControl(fileContents: text)
            Issue.record("accepted: \(text)")
        } catch {
            #expect(error.description.hasPrefix(expected), "\(error.description)")
        }
    }

    @Test func bearerTokenBasicAndQueryParameterAreAccepted() throws {
        let ac = try AccessControl(fileContents: Self.file)
        guard case .allowed(let c?) = ac.authorize(Self.head("/write", [("authorization", "Bearer telegraf-secret-0123456789")]), role: .ingest) else {
            Issue.record("bearer refused"); return
        }
        #expect(c.name == "telegraf")
        guard case .allowed = ac.authorize(Self.head("/api/v2/write", [("authorization", "Token telegraf-secret-0123456789")]), role: .ingest) else {
            Issue.record("Influx v2 'Token' refused"); return
        }
        guard case .allowed = ac.authorize(Self.head("/", [Self.basic("alice", "alice-secret-0123456789ab")]), role: .view) else {
            Issue.record("basic refused"); return
        }
        guard case .allowed = ac.authorize(Self.head("/api/dashboard/stream?access_token=alice-secret-0123456789ab"), role: .view) else {
            Issue.record("access_token refused"); return
        }
        guard case .allowed = ac.authorize(Self.head("/write?u=telegraf&p=telegraf-secret-0123456789"), role: .ingest) else {
            Issue.record("Influx v1 u/p refused"); return
        }
    }

    @Test func failuresDoNotSayWhichPartWasWrong() throws {
        let ac = try AccessControl(fileContents: Self.file)
        func decision(_ h: RequestHead, _ role: AccessControl.Role) -> String {
            switch ac.authorize(h, role: role) {
            case .allowed: return "allowed"
            case .missing: return "missing"
            case .invalid: return "invalid"
            case .forbidden: return "forbidden"
            }
        }
        #expect(decision(Self.head("/"), .view) == "missing")
        #expect(decision(Self.head("/", [Self.basic("alice", "wrong-secret-0123456789ab")]), .view) == "invalid")
        #expect(decision(Self.head("/", [Self.basic("bob", "alice-secret-0123456789ab")]), .view) == "invalid", "right secret, wrong name")
        #expect(decision(Self.head("/", [("authorization", "Bearer alice-secret-0123456789a")]), .view) == "invalid", "a prefix of the secret")
        #expect(decision(Self.head("/", [("authorization", "Bearer alice-secret-0123456789abc")]), .view) == "invalid", "the secret plus a byte")
        #expect(decision(Self.head("/", [("authorization", "Digest x")]), .view) == "missing")
        #expect(decision(Self.head("/", [("authorization", "Bearer telegraf-secret-0123456789")]), .view) == "forbidden")
        #expect(decision(Self.head("/write", [("authorization", "Bearer alice-secret-0123456789ab")]), .ingest) == "forbidden")
        #expect(AccessControl.open.isEnabled == false)
        if case .allowed(nil) = AccessControl.open.authorize(Self.head("/"), role: .view) {} else { Issue.record("open access refused") }
    }

    @Test func constantTimeComparisonIsExact() {
        let s = Array("0123456789abcdef".utf8)
        #expect(AccessControl.constantTimeEqual(s, s))
        #expect(!AccessControl.constantTimeEqual([], s))
        #expect(!AccessControl.constantTimeEqual(Array("0123456789abcdeF".utf8), s))
        #expect(!AccessControl.constantTimeEqual(s + s, s), "repetitions of the secret are not the secret")
        #expect(!AccessControl.constantTimeEqual(Array(s.prefix(8)) + Array(s.prefix(8)), s))
    }

    @Test func routesNeedTheRightRole() {
        #expect(Router.role(of: "/health") == nil && Router.role(of: "/ready") == nil && Router.role(of: "/ping") == nil)
        for p in ["/api/metrics/stream", "/api/metrics", "/write", "/api/v2/write", "/query"] { #expect(Router.role(of: p) == .ingest) }
        for p in ["/", "/app.js", "/api/dashboard/stream", "/api/history", "/api/catalog", "/api/stats", "/metrics", "/nope"] {
            #expect(Router.role(of: p) == .view)
        }
    }
}
