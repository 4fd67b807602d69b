import CNGHTTP2
import NIOCore

// The C callbacks of the nghttp2 session, in one place.
//
// Every callback is a non-capturing function that recovers the owning `HTTP2Connection` from
// nghttp2's `user_data` with `Unmanaged.fromOpaque(...)` and calls it through
// `_withUnsafeGuaranteedRef` (no retain and release per callback: ~3 % of a tiny-POST profile,
// one pair per header). That is sound because the connection is on the stack of the very call
// (`mem_recv`, `mem_send`, `resume_data`) that runs the callback. The connection
// passes itself unretained when it creates the session and deletes the session in `close()` or
// `deinit`, so no callback can run after the connection is gone. Callbacks only ever run
// synchronously inside `nghttp2_session_mem_recv` / `mem_send` / `resume_data` calls made by the
// connection on its event loop. Returning a non-zero value other than the documented ones makes
// nghttp2 fail the session (NGHTTP2_ERR_CALLBACK_FAILURE), which closes the connection.

enum NGHTTP2Callbacks {
    /// Builds the callback table once per connection (cheap: a malloc'ed struct of pointers).
    static func make() -> OpaquePointer {
        var callbacks: OpaquePointer?
        precondition(nghttp2_session_callbacks_new(&callbacks) == 0, "nghttp2_session_callbacks_new failed (out of memory)")
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, onBeginHeaders)
        nghttp2_session_callbacks_set_on_header_callback(callbacks, onHeader)
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, onFrameRecv)
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, onDataChunkRecv)
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, onStreamClose)
        nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, onFrameSend)
        return callbacks!
    }

    @inline(__always)
    static func connection<R>(_ userData: UnsafeMutableRawPointer?, _ body: (HTTP2Connection) -> R) -> R {
        Unmanaged<HTTP2Connection>.fromOpaque(userData!)._withUnsafeGuaranteedRef(body)
    }

    static let onBeginHeaders: nghttp2_on_begin_headers_callback = { _, frame, userData in
        guard let frame, frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue),
              frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST else { return 0 }
        connection(userData) { $0.beginStream(frame.pointee.hd.stream_id) }
        return 0
    }

    static let onHeader: nghttp2_on_header_callback = { _, frame, name, nameLength, value, valueLength, _, userData in
        guard let frame, let name, let value else { return 0 }
        connection(userData) {
            $0.header(stream: frame.pointee.hd.stream_id,
                      name: UnsafeBufferPointer(start: name, count: nameLength),
                      value: UnsafeBufferPointer(start: value, count: valueLength))
        }
        return 0
    }

    static let onFrameRecv: nghttp2_on_frame_recv_callback = { _, frame, userData in
        guard let frame else { return 0 }
        let hd = frame.pointee.hd
        let endStream = hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
        switch hd.type {
        case UInt8(NGHTTP2_HEADERS.rawValue):
            let request = frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST
            connection(userData) { conn in
                if request { conn.headersComplete(hd.stream_id) }
                if endStream { conn.requestEnded(hd.stream_id) }
            }
        case UInt8(NGHTTP2_DATA.rawValue):
            if endStream { connection(userData) { $0.requestEnded(hd.stream_id) } }
        default:
            break
        }
        return 0
    }

    static let onDataChunkRecv: nghttp2_on_data_chunk_recv_callback = { _, _, streamID, data, length, userData in
        guard let data else { return 0 }
        connection(userData) { $0.data(stream: streamID, UnsafeRawBufferPointer(start: data, count: length)) }
        return 0
    }

    static let onStreamClose: nghttp2_on_stream_close_callback = { _, streamID, errorCode, userData in
        connection(userData) { $0.streamClosed(streamID, errorCode: errorCode) }
        return 0
    }

    static let onFrameSend: nghttp2_on_frame_send_callback = { _, frame, userData in
        guard let frame else { return 0 }
        let hd = frame.pointee.hd
        if hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0,
           hd.type == UInt8(NGHTTP2_DATA.rawValue) || hd.type == UInt8(NGHTTP2_HEADERS.rawValue) {
            connection(userData) { $0.responseSent(hd.stream_id) }
        }
        return 0
    }

    /// The data provider's read callback: copies from the stream's pending body, or defers.
    static let readBody: nghttp2_data_source_read_callback = { _, streamID, buf, length, dataFlags, _, userData in
        guard let buf, let dataFlags else { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
        return connection(userData) { $0.readBody(stream: streamID, into: UnsafeMutableRawBufferPointer(start: buf, count: length), flags: dataFlags) }
    }
}
