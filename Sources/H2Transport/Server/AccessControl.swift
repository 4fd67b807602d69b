import Foundation
import MetricsCore

/// Who may write samples and who may read dashboards and the API.
///
/// Two roles:
/// - ``Role/ingest``: the ingestion routes (`/api/metrics/stream`, `/api/metrics`, `/write`,
///   `/api/v2/write`, `/query`). An ingest credential may be limited to some server ids
///   (``ServerIDPolicy``); lines for other ids are rejected one by one, the rest are kept.
/// - ``Role/view``: the dashboard page, `/api/dashboard/stream`, `/api/history`, `/api/catalog`,
///   `/api/stats` and `/metrics`.
///
/// `/health`, `/ready` and `/ping` stay open (load balancer checks, Influx clients' probe); they
/// carry no data.
///
/// A request presents its secret as `Authorization: Bearer <secret>` (or `Token <secret>`, what
/// Influx v2 clients send), as HTTP Basic (`name:secret`; what a browser asks for, and what it
/// then sends with the page's EventSource), or, for clients that cannot set headers, as the query
/// parameter `access_token=<secret>` (Influx v1 clients' `u=<name>&p=<secret>` also works on
/// `/write` and `/query`). Secrets are compared in constant time, every configured credential is
/// checked whatever matched before, and failures say only `401 authentication required` or
/// `401 invalid credentials`, never which part was wrong. A valid credential of the other role
/// gets `403`.
///
/// The credentials file (``init(fileContents:)``), one credential per line:
///
/// ```text
/// # role    name        secret (16+ characters)             server ids (ingest only; default *)
/// ingest    web-agents  6f1c0e8a9b2d4c7e91a3f5d2b8c4e6a0     web-*,db-01
/// ingest    telegraf    0b9e4d2c7a1f8e3b5c6d9a2e4f7b1c8d
/// view      alice       c3a9e5f1b7d2c8e4a6f0b9d3e7c1a5f2
/// ```
public struct AccessControl: Sendable {
    /// What a credential may do.
    public enum Role: String, Sendable, CaseIterable {
        /// Write samples.
        case ingest
        /// Read dashboards and the API.
        case view
    }

    /// One credential.
    public struct Credential: Sendable {
        /// What it may do.
        public let role: Role
        /// A name for logs and HTTP Basic's user name; not secret.
        public let name: String
        /// Server ids an ingest credential may write; `nil`: any.
        public let servers: ServerIDPolicy?
        let secret: [UInt8]
        let nameBytes: [UInt8]

        /// Creates a credential.
        /// - Throws: ``AccessControl/ConfigurationError`` for a secret shorter than 16 bytes, or a
        ///   name or secret with whitespace, `:` (name) or control characters.
        public init(role: Role, name: String, secret: String, servers: ServerIDPolicy? = nil) throws(ConfigurationError) {
            guard secret.utf8.count >= AccessControl.minimumSecretLength else {
                throw ConfigurationError(line: nil, message: "the secret of '\(name)' is shorter than \(AccessControl.minimumSecretLength) characters")
            }
            guard !name.isEmpty, name.utf8.allSatisfy({ $0 > 0x20 && $0 != 0x7F && $0 != UInt8(ascii: ":") }) else {
                throw ConfigurationError(line: nil, message: "invalid credential name '\(name)': no spaces, control characters or ':'")
            }
            guard secret.utf8.allSatisfy({ $0 > 0x20 && $0 != 0x7F }) else {
                throw ConfigurationError(line: nil, message: "the secret of '\(name)' contains spaces or control characters")
            }
            self.role = role
            self.name = name
            self.nameBytes = Array(name.utf8)
            self.secret = Array(secret.utf8)
            self.servers = role == .ingest ? servers.flatMap { $0.allowsAll ? nil : $0 } : nil
        }
    }

    /// A credentials file or setting that cannot be used, with the line it is on.
    public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
        /// 1-based line in the credentials file, when it came from one.
        public let line: Int?
        /// What is wrong.
        public let message: String
        /// `line N: message`.
        public var description: String { line.map { "line \($0): \(message)" } ?? message }
    }

    /// The outcome of checking a request.
    public enum Decision: Sendable {
        /// Go ahead; the credential used (`nil` when access control is off).
        case allowed(Credential?)
        /// No credential presented (401).
        case missing
        /// A credential was presented and matched nothing (401).
        case invalid
        /// A valid credential of the other role (403).
        case forbidden
    }

    /// Secrets shorter than this are refused at start.
    public static let minimumSecretLength = 16

    /// The credentials; empty with ``isEnabled`` false means open access.
    public let credentials: [Credential]
    /// `false`: every request is allowed (development mode, or a library user's choice).
    public let isEnabled: Bool

    /// No access control: every request is allowed.
    public static let open = AccessControl(credentials: [], isEnabled: false)

    /// Access control with these credentials (an empty list refuses every protected request).
    public init(credentials: [Credential]) {
        self.init(credentials: credentials, isEnabled: true)
    }

    private init(credentials: [Credential], isEnabled: Bool) {
        self.credentials = credentials
        self.isEnabled = isEnabled
    }

    /// Parses a credentials file (format in the type's documentation). Blank lines and comments
    /// (from a field starting with `#` to the end of the line) are skipped; names must be unique per role.
    public init(fileContents text: String) throws(ConfigurationError) {
        var out: [Credential] = []
        var seen: Set<String> = []
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            // A comment starts with a field that starts with `#` (at the start of the line or after
            // whitespace): a `#` inside a secret is part of it. (Cutting the line at any `#` loaded
            // `0123456789abcdef#Zq9 web-*` as a 16-character secret allowed every server id.)
            let fields = raw.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
                .prefix { !$0.hasPrefix("#") }.map(String.init)
            if fields.isEmpty { continue }
            guard fields.count >= 3, fields.count <= 4, let role = Role(rawValue: fields[0]) else {
                throw ConfigurationError(line: i + 1, message: "expected 'ingest|view NAME SECRET [SERVER-IDS]'")
            }
            guard fields.count == 3 || role == .ingest else {
                throw ConfigurationError(line: i + 1, message: "server ids apply to ingest credentials only")
            }
            var policy: ServerIDPolicy? = nil
            if fields.count == 4 {
                do {
                    policy = try ServerIDPolicy(patterns: fields[3].split(separator: ",").map(String.init))
                } catch {
                    throw ConfigurationError(line: i + 1, message: error.description)
                }
            }
            guard seen.insert("\(role.rawValue) \(fields[1])").inserted else {
                throw ConfigurationError(line: i + 1, message: "duplicate \(role.rawValue) credential '\(fields[1])'")
            }
            do {
                out.append(try Credential(role: role, name: fields[1], secret: fields[2], servers: policy))
            } catch {
                throw ConfigurationError(line: i + 1, message: error.message)
            }
        }
        self.init(credentials: out)
    }

    /// Checks a request that needs `role`.
    func authorize(_ head: RequestHead, role: Role) -> Decision {
        guard isEnabled else { return .allowed(nil) }
        guard let presented = Self.presented(head) else { return .missing }
        // Every credential is compared (no early exit), so timing does not tell which one, or
        // whether any, matched.
        var match: Credential? = nil
        var otherRole = false
        let name = presented.name.map { Array($0.utf8) }
        for c in credentials {
            let nameOK = name.map { Self.constantTimeEqual($0, c.nameBytes) } ?? true
            let secretOK = Self.constantTimeEqual(presented.secret, c.secret)
            if nameOK && secretOK {
                if c.role == role { match = c } else { otherRole = true }
            }
        }
        if let match { return .allowed(match) }
        return otherRole ? .forbidden : .invalid
    }

    /// The secret (and the name, for Basic and Influx `u`/`p`) a request presents.
    static func presented(_ head: RequestHead) -> (name: String?, secret: [UInt8])? {
        if let auth = head.header("authorization") {
            let parts = auth.split(separator: " ", maxSplits: 1)
            guard parts.count == 2 else { return nil }
            let scheme = parts[0].lowercased(), value = parts[1].trimmingCharacters(in: .whitespaces)
            switch scheme {
            case "bearer", "token":
                return (nil, Array(value.utf8))
            case "basic":
                guard let data = Data(base64Encoded: value), let colon = data.firstIndex(of: UInt8(ascii: ":")) else { return nil }
                let user = String(decoding: data[..<colon], as: UTF8.self)
                return (user, Array(data[data.index(after: colon)...]))
            default:
                return nil
            }
        }
        if let token = head.queryValue("access_token") { return (nil, Array(token.utf8)) }
        if let p = head.queryValue("p") { return (head.queryValue("u"), Array(p.utf8)) }
        return nil
    }

    /// Compares in time that depends only on `expected`'s length, not on where the bytes differ.
    @inline(never)
    static func constantTimeEqual(_ given: [UInt8], _ expected: [UInt8]) -> Bool {
        var diff = UInt8(given.count == expected.count ? 0 : 1)
        if given.isEmpty { return false }
        for i in 0..<expected.count {
            diff |= expected[i] ^ given[i % given.count]
        }
        return diff == 0
    }
}
