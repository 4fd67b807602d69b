#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The process's open-file limit (`ulimit -n`), which bounds how many connections the server can
/// hold: every accepted connection is a descriptor, and so is every store connection, peer feed
/// and file the server opens.
enum FileLimit {
    /// Descriptors kept for what is not a client connection: listeners, the store's connections
    /// (two per write lane, plus reads and maintenance), peer feeds, files, the event loops' own.
    static let reserve = 256

    /// Raises the soft limit to the hard one (as Go's runtime and nginx's `worker_rlimit_nofile`
    /// do: the soft default of 1,024 on many systems is far below a fleet of agents) and returns
    /// the soft limit now in force, or `nil` when it cannot be read or is unlimited.
    static func raiseSoftLimit() -> Int? {
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
    }

    /// The connection limit that fits in `fileLimit` descriptors: `requested` (0: no limit), lowered
    /// so that ``reserve`` descriptors stay free for the store and the rest (at least 1 connection).
    static func connectionLimit(requested: Int, fileLimit: Int?) -> Int {
        guard let fileLimit else { return requested }
        let fits = max(1, fileLimit - reserve)
        return requested == 0 ? fits : min(requested, fits)
    }
}
