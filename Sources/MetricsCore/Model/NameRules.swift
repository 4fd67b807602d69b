/// The rules every server id, metric name and label must satisfy.
///
/// Names are restricted to a conservative ASCII set so they are safe in URLs, SQL identifiers'
/// values, JSON without escaping, Prometheus-style exports and the canonical label form:
/// - server ids and metric names: 1...``maxNameLength`` bytes of `A-Z a-z 0-9 _ . : - /`
/// - label keys: 1...``maxNameLength`` bytes of `A-Z a-z 0-9 _ . -`
/// - label values: 0...``maxLabelValueLength`` bytes of printable ASCII (0x21...0x7E) except
///   `,` `=` `"` `\`, or UTF-8 above 0x7F.
public enum NameRules {
    /// Longest accepted server id, metric name or label key, in bytes.
    public static let maxNameLength = 200
    /// Longest accepted label value, in bytes.
    public static let maxLabelValueLength = 256
    /// Most labels one sample may carry.
    public static let maxLabels = 32

    /// A 256-entry table: bit 0 = valid in names, bit 1 = valid in label keys, bit 2 = valid in label values.
    @usableFromInline
    static let table: [UInt8] = {
        var t = [UInt8](repeating: 0, count: 256)
        for b in 0..<256 {
            let c = UInt8(b)
            let alnum = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
            var v: UInt8 = 0
            if alnum || c == UInt8(ascii: "_") || c == UInt8(ascii: ".") || c == UInt8(ascii: "-")
                || c == UInt8(ascii: ":") || c == UInt8(ascii: "/") { v |= 1 }
            if alnum || c == UInt8(ascii: "_") || c == UInt8(ascii: ".") || c == UInt8(ascii: "-") { v |= 2 }
            if (c >= 0x21 && c <= 0x7E && c != UInt8(ascii: ",") && c != UInt8(ascii: "=")
                && c != UInt8(ascii: "\"") && c != UInt8(ascii: "\\")) || c >= 0x80 { v |= 4 }
            t[b] = v
        }
        return t
    }()

    /// Whether `bytes` is a valid server id or metric name.
    @inlinable
    public static func isValidName(_ bytes: UnsafeRawBufferPointer) -> Bool {
        check(bytes, mask: 1, max: maxNameLength, allowEmpty: false)
    }

    /// Whether `bytes` is a valid label key.
    @inlinable
    public static func isValidLabelKey(_ bytes: UnsafeRawBufferPointer) -> Bool {
        check(bytes, mask: 2, max: maxNameLength, allowEmpty: false)
    }

    /// Whether `bytes` is a valid label value (UTF-8 validity is checked by the caller's String decoding).
    @inlinable
    public static func isValidLabelValue(_ bytes: UnsafeRawBufferPointer) -> Bool {
        check(bytes, mask: 4, max: maxLabelValueLength, allowEmpty: true)
    }

    /// Whether a Swift string is a valid server id or metric name.
    public static func isValidName(_ s: String) -> Bool {
        var s = s
        return s.withUTF8 { isValidName(UnsafeRawBufferPointer($0)) }
    }

    @inlinable
    static func check(_ bytes: UnsafeRawBufferPointer, mask: UInt8, max: Int, allowEmpty: Bool) -> Bool {
        if bytes.count > max || (!allowEmpty && bytes.isEmpty) { return false }
        return table.withUnsafeBufferPointer { t in
            for b in bytes where t[Int(b)] & mask == 0 { return false }
            return true
        }
    }
}
