/// A reusable byte buffer with an explicit fill level. Clearing is O(1) and appends copy
/// in bulk, so hot loops do not go through `Array`'s general-purpose paths for every byte.
struct ScratchBytes {
    // Grown on first use, so a parser that never sees labels never allocates it.
    private var storage: [UInt8] = []
    /// Bytes in use.
    private(set) var count = 0

    var isEmpty: Bool { count == 0 }

    @inline(__always)
    mutating func removeAll() { count = 0 }

    /// Drops bytes past `length`.
    @inline(__always)
    mutating func truncate(to length: Int) { count = min(count, length) }

    @inline(__always)
    private mutating func reserve(_ extra: Int) {
        if count + extra > storage.count {
            storage.append(contentsOf: repeatElement(0, count: max(count + extra - storage.count, max(256, storage.count))))
        }
    }

    @inline(__always)
    mutating func append(_ byte: UInt8) {
        reserve(1)
        storage[count] = byte
        count += 1
    }

    /// Appends bytes.
    @inline(__always)
    mutating func append(_ src: UnsafeRawBufferPointer) {
        guard let base = src.baseAddress, src.count > 0 else { return }
        reserve(src.count)
        let at = count
        storage.withUnsafeMutableBytes { $0.baseAddress!.advanced(by: at).copyMemory(from: base, byteCount: src.count) }
        count += src.count
    }

    /// Appends at most `capacity` bytes written by `body`, which returns how many it wrote.
    @inline(__always)
    mutating func append(capacity: Int, _ body: (UnsafeMutableRawBufferPointer) -> Int) {
        reserve(capacity)
        let at = count
        let written = storage.withUnsafeMutableBytes { body(UnsafeMutableRawBufferPointer(rebasing: $0[at..<(at + capacity)])) }
        count += written
    }

    /// Calls `body` with the bytes in use.
    @inline(__always)
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        storage.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
    }
}
