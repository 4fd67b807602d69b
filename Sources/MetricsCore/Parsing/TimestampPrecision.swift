/// The unit of line-protocol timestamps (the Influx v1 `precision` query parameter).
public enum TimestampPrecision: String, Sendable {
    /// Nanoseconds (`n`, `ns`): the line-protocol default.
    case nanoseconds = "ns"
    /// Microseconds (`u`, `us`, `µ`).
    case microseconds = "us"
    /// Milliseconds (`ms`).
    case milliseconds = "ms"
    /// Seconds (`s`).
    case seconds = "s"
    /// Minutes (`m`).
    case minutes = "m"
    /// Hours (`h`).
    case hours = "h"

    /// Parses Influx v1 `precision` query values: `n`, `ns`, `u`, `us`, `µ` (also `µs`, and
    /// the Greek mu), `ms`, `s`, `m`, `h`. Returns nil for anything else.
    public init?(query: String) {
        switch query {
        case "n", "ns": self = .nanoseconds
        case "u", "us", "\u{B5}", "\u{B5}s", "\u{3BC}", "\u{3BC}s": self = .microseconds
        case "ms": self = .milliseconds
        case "s": self = .seconds
        case "m": self = .minutes
        case "h": self = .hours
        default: return nil
        }
    }

    /// Converts a timestamp in this precision to epoch milliseconds, truncating toward zero.
    /// Nil when the result does not fit in `Int64`.
    func milliseconds(_ t: Int64) -> Int64? {
        switch self {
        case .nanoseconds: return t / 1_000_000
        case .microseconds: return t / 1_000
        case .milliseconds: return t
        case .seconds: return Self.scaled(t, 1_000)
        case .minutes: return Self.scaled(t, 60_000)
        case .hours: return Self.scaled(t, 3_600_000)
        }
    }

    private static func scaled(_ t: Int64, _ factor: Int64) -> Int64? {
        let (r, overflow) = t.multipliedReportingOverflow(by: factor)
        return overflow ? nil : r
    }
}
