import Logging
import NIOCore
import NIOHTTP1

/// On the cleartext port: looks at the first bytes of a connection and installs HTTP/2 (the
/// client sent the h2c prior-knowledge preface) or HTTP/1.1 (anything else).
///
/// Hand-written because it is 24 bytes of comparison; no upgrade dance (`Upgrade: h2c` was
/// removed in RFC 9113) is supported.
final class ProtocolDetector: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    static let preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    private var buffered: ByteBuffer?
    private let configureHTTP2: @Sendable (Channel) throws -> Void
    private let configureHTTP1: @Sendable (Channel) throws -> Void

    init(http2: @escaping @Sendable (Channel) throws -> Void, http1: @escaping @Sendable (Channel) throws -> Void) {
        self.configureHTTP2 = http2
        self.configureHTTP1 = http1
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if var b = buffered {
            b.writeBuffer(&incoming)
            buffered = b
        } else {
            buffered = incoming
        }
        guard let bytes = buffered else { return }
        let n = min(bytes.readableBytes, Self.preface.count)
        let head = bytes.getBytes(at: bytes.readerIndex, length: n) ?? []
        let isPrefix = head.elementsEqual(Self.preface.prefix(n))
        if isPrefix && n < Self.preface.count { return }  // need more bytes to decide
        do {
            if isPrefix {
                try configureHTTP2(context.channel)
            } else {
                try configureHTTP1(context.channel)
            }
        } catch {
            context.close(promise: nil)
            return
        }
        buffered = nil
        context.fireChannelRead(NIOAny(bytes))
        context.fireChannelReadComplete()
        context.pipeline.syncOperations.removeHandler(self, promise: nil)
    }
}
