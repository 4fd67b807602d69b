/// A connection's open streams by id: a table indexed by the stream id itself.
///
/// Hand-written because it is on the per-request path: a `[Int32: HTTP2Stream]` hashed every id
/// with SipHash on insert and removal (two per request), ~1.5 % of a tiny-POST profile. Client
/// stream ids are odd and increasing, so `id >> 1` (masked) gives the open streams of a
/// connection distinct slots without hashing or probing: a slot is taken again only after
/// `capacity` newer streams opened. A stream whose slot is still held by an older one (a
/// long-lived stream beside many short ones) goes to a small dictionary instead. The table doubles
/// when half full, so it follows the connection's peak of concurrent streams (at most
/// SETTINGS_MAX_CONCURRENT_STREAMS plus the streams closing) and never shrinks.
struct StreamTable<Stream> {
    private var ids: [Int32]
    private var slots: [Stream?]
    private var mask: Int
    /// Streams whose slot was taken when they opened.
    private var overflow: [Int32: Stream] = [:]
    private(set) var count = 0

    init() {
        ids = Array(repeating: 0, count: 16)
        slots = Array(repeating: nil, count: 16)
        mask = 15
    }

    var isEmpty: Bool { count == 0 }

    @inline(__always)
    private func slot(_ id: Int32) -> Int { Int(truncatingIfNeeded: id >> 1) & mask }

    /// The stream with `id`, if open.
    subscript(id: Int32) -> Stream? {
        let i = slot(id)
        if ids[i] == id, let s = slots[i] { return s }
        return overflow.isEmpty ? nil : overflow[id]
    }

    /// Adds (or replaces) the stream with `id`.
    mutating func insert(_ stream: Stream, for id: Int32) {
        if (count + 1) * 2 > slots.count { grow() }
        let i = slot(id)
        if slots[i] == nil {
            // An id re-inserted after its slot's holder left may still be in the overflow.
            if !overflow.isEmpty, overflow.removeValue(forKey: id) != nil { count -= 1 }
            ids[i] = id
            slots[i] = stream
            count += 1
        } else if ids[i] == id {
            slots[i] = stream
        } else if overflow.updateValue(stream, forKey: id) == nil {
            count += 1
        }
    }

    /// Removes and returns the stream with `id`, if open.
    @discardableResult
    mutating func removeValue(forKey id: Int32) -> Stream? {
        let i = slot(id)
        if ids[i] == id, let s = slots[i] {
            slots[i] = nil
            count -= 1
            return s
        }
        guard !overflow.isEmpty, let s = overflow.removeValue(forKey: id) else { return nil }
        count -= 1
        return s
    }

    /// Every open stream, in no particular order.
    var values: [Stream] { slots.compactMap { $0 } + overflow.values }

    /// Forgets every stream (the table keeps its size).
    mutating func removeAll() {
        for i in slots.indices { slots[i] = nil }
        overflow.removeAll()
        count = 0
    }

    private mutating func grow() {
        let oldIDs = ids, oldSlots = slots, oldOverflow = overflow
        ids = Array(repeating: 0, count: oldSlots.count * 2)
        slots = Array(repeating: nil, count: oldSlots.count * 2)
        mask = slots.count - 1
        overflow = [:]
        count = 0
        for k in oldSlots.indices { if let s = oldSlots[k] { insert(s, for: oldIDs[k]) } }
        for (id, s) in oldOverflow { insert(s, for: id) }
    }
}
