#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The process's open-file limit (`ulimit -n`), which bounds how many connections the server can
/// hold: every accepted connection is a descriptor, and so is every store connection, peer feed
/// and file the server opens.
enum FileLimit {
    /// Descriptors kept for what is not a client connection (listeners, the store's connections:
    /// two per write lane plus reads and maintenance, peer feeds, files, the event loops' own):
    /// 256, or a quarter of a smaller limit.
    static func reserve(for fileLimit: Int) -> Int { min(256, fileLimit / 4) }

    /// Raises the soft limit to the hard one (as Go's runtime and nginx's `worker_rlimit_nofile`
    /// do: the soft default of 1,024 on many systems is far below a fleet of agents) and returns
    /// the soft limit now in force, or `nil` when it cannot be read or is unlimited (and on
    /// systems other than Linux, where the hard limit may be "unlimited", which the soft one
    /// cannot be set to: there the limit is left as it is and not applied).
    static func raiseSoftLimit() -> Int? {
        #if os(Linux)
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return nil }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        // RLIM_INFINITY is all ones (the C macro does not import: -1 in an unsigned type).
        guard limit.rlim_cur < rlim_t(Int.max) else { return nil }
        return Int(limit.rlim_cur)
        #else
        return nil
        #endif
    }

    /// The connection limit that fits in `fileLimit` descriptors: `requested` (0: no limit), lowered
    /// so that ``reserve(for:)`` descriptors stay free for the store and the rest (at least 1).
    static func connectionLimit(requested: Int, fileLimit: Int?) -> Int {
        guard let fileLimit else { return requested }
        let fits = max(1, fileLimit - reserve(for: fileLimit))
        return requested == 0 ? fits : min(requested, fits)
    }
}
