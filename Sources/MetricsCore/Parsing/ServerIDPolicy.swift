/// Which server ids a credential may write samples for: exact ids and id prefixes.
///
/// Patterns: `web-01` (exactly that id), `web-*` (every id starting with `web-`), `*` (any id).
/// A line whose server id the policy does not allow is rejected with
/// ``ParseError/Code/serverNotAllowed`` (the other lines of the request are kept), so an agent's
/// token cannot write another team's servers.
public struct ServerIDPolicy: Sendable, Hashable {
    /// Ids allowed exactly.
    public let exact: Set<String>
    /// Allowed id prefixes (from patterns ending in `*`), longest first.
    public let prefixes: [String]
    /// `*`: any id.
    public let allowsAll: Bool

    /// A pattern that is not a valid name (``NameRules``), or a `*` anywhere but at the end.
    public struct InvalidPattern: Error, Sendable, CustomStringConvertible {
        /// The offending pattern.
        public let pattern: String
        /// `invalid server id pattern '…': …`.
        public var description: String {
            "invalid server id pattern '\(pattern)': use an id, a prefix ending in '*', or '*'"
        }
    }

    /// Parses patterns (see the type's documentation).
    /// - Throws: ``InvalidPattern`` for an empty pattern, an inner `*`, or an id that breaks ``NameRules``.
    public init(patterns: [String]) throws(InvalidPattern) {
        var exact: Set<String> = []
        var prefixes: [String] = []
        var all = false
        for p in patterns {
            if p == "*" { all = true; continue }
            let star = p.hasSuffix("*")
            let body = star ? String(p.dropLast()) : p
            guard !body.isEmpty, !body.contains("*"), NameRules.isValidName(body) else { throw InvalidPattern(pattern: p) }
            if star { prefixes.append(body) } else { exact.insert(body) }
        }
        self.exact = exact
        self.prefixes = prefixes.sorted { $0.utf8.count > $1.utf8.count }
        self.allowsAll = all
    }

    /// Whether samples for `serverID` may be written.
    public func allows(_ serverID: String) -> Bool {
        if allowsAll || exact.contains(serverID) { return true }
        for p in prefixes where serverID.utf8.starts(with: p.utf8) { return true }
        return false
    }
}
