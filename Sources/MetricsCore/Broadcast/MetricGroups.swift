/// Positions grouped by metric name, in the order the metrics first appear: what a tick's
/// changes are indexed by in the ``Broadcaster``.
///
/// A name is matched by comparing it with the names seen so far while there are few (a fleet's
/// handful of metrics: consecutive series usually share one, or an agent's metrics come in turn),
/// and by hashing only beyond that. A `[String: [Int]]` filled with `dict[name, default: []]
/// .append(i)` hashed every name, and at 50,000 changed series a tick that was a tenth of the
/// broadcaster's staging time.
struct MetricGroups {
    /// The metric names, in first-appearance order.
    private(set) var names: [String] = []
    /// `positions[g]`: the positions added for `names[g]`, in the order added.
    var positions: [[Int]] = []
    private var groupOf: [String: Int] = [:]
    private var current = -1
    /// Names compared one by one up to this many groups; hashed beyond.
    static let compared = 16

    /// The group of `metric` (started, with no positions, if new: its number is then `names.count - 1`).
    mutating func group(of metric: String) -> Int {
        if current >= 0 && names[current] == metric { return current }
        if names.count <= Self.compared {
            for g in names.indices where names[g] == metric {
                current = g
                return g
            }
        } else {
            if groupOf.isEmpty {
                // Past the names compared one by one: index them all, from now on by hash.
                for (g, name) in names.enumerated() { groupOf[name] = g }
            }
            if let g = groupOf[metric] {
                current = g
                return g
            }
        }
        names.append(metric)
        positions.append([])
        current = names.count - 1
        if !groupOf.isEmpty { groupOf[metric] = current }
        return current
    }

    /// Adds `position` to `metric`'s group.
    mutating func add(_ position: Int, metric: String) {
        let g = group(of: metric)
        positions[g].append(position)
    }

    /// Adds `list` to `metric`'s group, in order.
    mutating func add(contentsOf list: [Int], metric: String) {
        let g = group(of: metric)
        positions[g].append(contentsOf: list)
    }

    /// The groups by name (for tests: hashes every name).
    var byName: [String: [Int]] {
        var out: [String: [Int]] = [:]
        out.reserveCapacity(names.count)
        for (g, name) in names.enumerated() { out[name] = positions[g] }
        return out
    }
}
