import CNGHTTP2

/// An error code returned by libnghttp2, with its library description.
struct NGHTTP2Error: Error, CustomStringConvertible, Equatable {
    let code: Int32

    init(_ code: Int) { self.code = Int32(truncatingIfNeeded: code) }
    init(_ code: Int32) { self.code = code }

    var description: String {
        "nghttp2 error \(code): " + String(cString: nghttp2_strerror(code))
    }

    /// Whether the error means the peer broke the protocol (as opposed to a local bug or OOM).
    var isProtocolError: Bool {
        code == NGHTTP2_ERR_BAD_CLIENT_MAGIC.rawValue || code == NGHTTP2_ERR_FLOODED.rawValue
            || code == NGHTTP2_ERR_PROTO.rawValue || code == NGHTTP2_ERR_CALLBACK_FAILURE.rawValue
            || code == NGHTTP2_ERR_HTTP_HEADER.rawValue || code == NGHTTP2_ERR_FLOW_CONTROL.rawValue
            || code == NGHTTP2_ERR_SETTINGS_EXPECTED.rawValue
    }
}
