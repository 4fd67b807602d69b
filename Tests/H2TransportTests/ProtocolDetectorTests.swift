import NIOCore
import NIOEmbedded
import Testing
@testable import H2Transport

/// The cleartext port's preface detection, driven byte by byte through an EmbeddedChannel.
@Suite struct ProtocolDetectorTests {
    final class Recorder: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        var received = ByteBuffer()
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var b = unwrapInboundIn(data)
            received.writeBuffer(&b)
        }
    }

    enum Choice: Sendable { case http1, http2 }

    func run(_ input: [UInt8], chunk: Int) throws -> (Choice?, [UInt8]) {
        let channel = EmbeddedChannel()
        let chosen = Box<Choice?>(nil)
        let recorder = Recorder()
        let detector = ProtocolDetector(
            http2: { ch in chosen.value = .http2; try ch.pipeline.syncOperations.addHandler(recorder) },
            http1: { ch in chosen.value = .http1; try ch.pipeline.syncOperations.addHandler(recorder) })
        try channel.pipeline.syncOperations.addHandler(detector)
        var i = 0
        while i < input.count {
            let end = min(input.count, i + chunk)
            try channel.writeInbound(ByteBuffer(bytes: input[i..<end]))
            i = end
        }
        return (chosen.value, recorder.received.readableBytesView.map { $0 })
    }

    @Test(arguments: [1, 3, 24, 100])
    func h2cPrefaceSelectsHTTP2AndForwardsEveryByte(chunk: Int) throws {
        let bytes = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) + [0, 0, 0, 4, 0, 0, 0, 0, 0]
        let (choice, forwarded) = try run(bytes, chunk: chunk)
        #expect(choice == .http2)
        #expect(forwarded == bytes)
    }

    @Test(arguments: [1, 5, 100])
    func http1RequestSelectsHTTP1AndForwardsEveryByte(chunk: Int) throws {
        let bytes = Array("GET /health HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        let (choice, forwarded) = try run(bytes, chunk: chunk)
        #expect(choice == .http1)
        #expect(forwarded == bytes)
    }

    @Test func aPrefixOfThePrefaceWaitsForMoreBytes() throws {
        let (choice, forwarded) = try run(Array("PRI * HTTP/2".utf8), chunk: 4)
        #expect(choice == nil)
        #expect(forwarded.isEmpty)
    }

    @Test func aMethodStartingLikeThePrefaceIsStillHTTP1() throws {
        let bytes = Array("PRIVATE / HTTP/1.1\r\n\r\n".utf8)
        let (choice, _) = try run(bytes, chunk: 2)
        #expect(choice == .http1)
    }
}

final class Box<T>: @unchecked Sendable {
    var value: T
    init(_ value: T) { self.value = value }
}
