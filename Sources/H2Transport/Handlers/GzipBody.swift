import CompressNIO
import NIOCore

/// A gzip-encoded request body (Telegraf's default for `/write`), buffered and inflated with a
/// bound on both sides so a small "gzip bomb" cannot exhaust memory.
final class GzipBody {
    let maxCompressed: Int
    let maxDecompressed: Int
    private var buffer = ByteBuffer()

    init(maxCompressed: Int, maxDecompressed: Int) {
        self.maxCompressed = maxCompressed
        self.maxDecompressed = maxDecompressed
    }

    /// Appends compressed bytes; `false` when the compressed bound is exceeded.
    func append(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard buffer.readableBytes + bytes.count <= maxCompressed else { return false }
        buffer.writeBytes(bytes)
        return true
    }

    /// Frees the compressed bytes (after ``decompress()``).
    func discardCompressed() {
        buffer = ByteBuffer()
    }

    enum Result {
        case success(ByteBuffer)
        /// HTTP status (413 for a body that inflates past the bound, 400 for broken gzip) and why.
        case failure(Int, String)
    }

    /// Inflates what was buffered: every gzip member in turn (RFC 1952 allows several, and Go's
    /// and Python's readers accept them), refusing a member cut short and bytes after the last.
    func decompress() -> Result {
        var input = buffer
        var output = ByteBuffer()
        do {
            while input.readableBytes > 0 {
                let start = input.readerIndex
                let budget = maxDecompressed - output.readableBytes
                guard budget > 0 else { return .failure(413, "decompressed body larger than \(maxDecompressed) bytes") }
                // compress-nio's bound is soft (its output buffers are rounded up in size, so it
                // can inflate up to about twice `maxSize` before it stops): checked below as well.
                var part = try input.decompress(with: .gzip(), maxSize: budget)
                // It stops at the member's end, after its trailer, or where the input ran out.
                // zlib checks a complete member's CRC and length itself; a member cut short ends
                // without them, so its last four bytes are not its length (ISIZE, mod 2³²).
                let consumed = input.readerIndex - start
                // (Read from `buffer`, whose readable bytes still include what `input` has consumed.)
                guard consumed >= 18, let size = buffer.getInteger(at: input.readerIndex - 4, endianness: .little, as: UInt32.self),
                      size == UInt32(truncatingIfNeeded: part.readableBytes) else {
                    return .failure(400, "invalid gzip body: truncated")
                }
                output.writeBuffer(&part)
                guard output.readableBytes <= maxDecompressed else {
                    return .failure(413, "decompressed body larger than \(maxDecompressed) bytes")
                }
            }
            return .success(output)
        } catch let error as CompressNIOError where error == .bufferOverflow {
            return .failure(413, "decompressed body larger than \(maxDecompressed) bytes")
        } catch {
            return .failure(400, "invalid gzip body: \(error)")
        }
    }
}
