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
        case failure(String)
    }

    /// Inflates what was buffered.
    func decompress() -> Result {
        do {
            let plain = try buffer.decompress(with: .gzip(), maxSize: maxDecompressed)
            return .success(plain)
        } catch let error as CompressNIOError where error == .bufferOverflow {
            return .failure("decompressed body larger than \(maxDecompressed) bytes")
        } catch {
            return .failure("invalid gzip body: \(error)")
        }
    }
}
