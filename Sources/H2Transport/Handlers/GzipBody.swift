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

    enum Result {
        case success(ByteBuffer)
        /// HTTP status (413 for a body that inflates past the bound, 400 for broken gzip) and why.
        case failure(Int, String)
    }

    /// Inflates what was buffered.
    func decompress() -> Result {
        do {
            // compress-nio's bound is soft (its output buffers are rounded up in size, so it can
            // inflate up to about twice `maxSize` before it stops): check the result as well.
            let plain = try buffer.decompress(with: .gzip(), maxSize: maxDecompressed)
            guard plain.readableBytes <= maxDecompressed else {
                return .failure(413, "decompressed body larger than \(maxDecompressed) bytes")
            }
            return .success(plain)
        } catch let error as CompressNIOError where error == .bufferOverflow {
            return .failure(413, "decompressed body larger than \(maxDecompressed) bytes")
        } catch {
            return .failure(400, "invalid gzip body: \(error)")
        }
    }
}
