/// A non-empty line's bytes as a plain base pointer and count. Unlike
/// `UnsafeRawBufferPointer` it has no optional base address to unwrap on every byte read.
/// Reads are bounds-checked by `assert`, i.e. in debug builds (and so in tests) only.
struct LineBytes {
    let base: UnsafeRawPointer
    let count: Int

    /// - Precondition: `bytes` is not empty.
    @inline(__always)
    init(_ bytes: UnsafeRawBufferPointer) {
        base = bytes.baseAddress!
        count = bytes.count
    }

    @inline(__always)
    subscript(_ i: Int) -> UInt8 {
        assert(i >= 0 && i < count, "read outside the line")
        return base.load(fromByteOffset: i, as: UInt8.self)
    }

    @inline(__always)
    func loadUnaligned<T>(fromByteOffset offset: Int, as type: T.Type) -> T where T: BitwiseCopyable {
        assert(offset >= 0 && offset + MemoryLayout<T>.size <= count, "read outside the line")
        return base.loadUnaligned(fromByteOffset: offset, as: type)
    }

    /// `self[from..<to]` as a buffer (no copy).
    @inline(__always)
    func slice(_ from: Int, _ to: Int) -> UnsafeRawBufferPointer {
        assert(from >= 0 && from <= to && to <= count, "slice outside the line")
        return UnsafeRawBufferPointer(start: base + from, count: to - from)
    }
}

extension UnsafeRawBufferPointer {
    /// `self[from..<to]` as a buffer (no copy).
    @inline(__always)
    func slice(_ from: Int, _ to: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: self[from..<to])
    }
}

/// Builds a `String` from bytes already validated as UTF-8. Up to 15 bytes the result is a small
/// (inline, allocation-free) string.
@inline(__always)
func makeString(_ bytes: UnsafeRawBufferPointer) -> String {
    String(decoding: bytes, as: UTF8.self)
}

/// Text for error messages: the bytes, lossily decoded and shortened.
func quoted(_ bytes: UnsafeRawBufferPointer) -> String {
    let limit = 64
    let s = String(decoding: bytes.count > limit ? bytes.slice(0, limit) : bytes, as: UTF8.self)
    return "'" + s + (bytes.count > limit ? "…'" : "'")
}

/// Text for error messages: a name, shortened like ``quoted(_:)``.
func quotedName(_ name: String) -> String {
    var copy = name
    return copy.withUTF8 { quoted(UnsafeRawBufferPointer($0)) }
}
