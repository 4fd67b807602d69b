/// Count, sum, min and max of a set of values; mergeable.
public struct WindowStats: Sendable, Equatable, Codable {
    /// Number of values.
    public var count: UInt64 = 0
    /// Sum of the values.
    public var sum: Double = 0
    /// Smallest value (`+inf` when empty).
    public var min: Double = .infinity
    /// Largest value (`-inf` when empty).
    public var max: Double = -.infinity

    /// An empty window.
    public init() {}

    /// Creates stats from their fields.
    public init(count: UInt64, sum: Double, min: Double, max: Double) {
        self.count = count
        self.sum = sum
        self.min = min
        self.max = max
    }

    /// Mean, or `nil` when empty.
    @inlinable public var mean: Double? { count == 0 ? nil : sum / Double(count) }

    /// Adds one value.
    @inlinable
    public mutating func add(_ v: Double) {
        count &+= 1
        sum += v
        if v < min { min = v }
        if v > max { max = v }
    }

    /// Merges another window.
    @inlinable
    public mutating func merge(_ o: WindowStats) {
        count &+= o.count
        sum += o.sum
        if o.min < min { min = o.min }
        if o.max > max { max = o.max }
    }
}
