#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Parses one complete line (without `\n`, without one trailing `\r`, and on the first line without a UTF-8 byte order mark).
protocol LineHandler {
    /// - Parameters:
    ///   - line: The line's bytes; only valid during the call.
    ///   - number: The line's 1-based number within the stream.
    ///   - now: Epoch milliseconds for samples without a timestamp.
    mutating func handleLine(_ line: UnsafeRawBufferPointer, number: Int, now: Int64, into output: inout ParseOutput)
}

/// Splits a byte stream that arrives in arbitrary chunks into lines.
///
/// Complete lines inside a chunk are handed to the handler straight from the chunk's memory; only
/// a trailing partial line is copied, into ``carry`` (whose capacity is reused). Over-long lines
/// are reported once and then skipped up to the next `\n` without buffering, so ``carry`` never
/// holds more than `maxLineLength` bytes plus what does not count toward it (a trailing `\r`, and
/// on the first line a byte order mark).
struct LineSplitter {
    /// Longest accepted line, not counting `\n`, a trailing `\r` or a leading byte order mark.
    var maxLineLength: Int
    /// Lines completed so far.
    private(set) var lineCount = 0
    /// The partial line carried over from the previous chunk.
    private var carry: [UInt8] = []
    /// True while skipping the rest of an over-long line that was already reported.
    private var discarding = false

    init(maxLineLength: Int) {
        self.maxLineLength = maxLineLength
    }

    /// Starts a new stream: line numbers from 1, no partial line (the carry's capacity is kept).
    mutating func reset() {
        lineCount = 0
        // A carry that grew for a long line is released rather than kept by a pooled parser.
        if carry.capacity > 4096 { carry = [] } else { carry.removeAll(keepingCapacity: true) }
        discarding = false
    }

    /// Feeds one chunk; the chunk may end anywhere.
    mutating func feed<H: LineHandler>(
        _ chunk: UnsafeRawBufferPointer, handler: inout H, now: Int64, into output: inout ParseOutput
    ) {
        guard let base = chunk.baseAddress, chunk.count > 0 else { return }
        let end = chunk.count
        var start = 0

        // Finish the line begun in an earlier chunk.
        if discarding || !carry.isEmpty {
            guard let nl = Self.findNewline(base, from: 0, end: end) else {
                if !discarding { appendToCarry(chunk, from: 0, to: end, output: &output) }
                return
            }
            if !discarding { appendToCarry(chunk, from: 0, to: nl, output: &output) }
            lineCount += 1
            if discarding {
                discarding = false
            } else {
                let number = lineCount
                carry.withUnsafeBytes { handleComplete($0, number: number, handler: &handler, now: now, into: &output) }
            }
            carry.removeAll(keepingCapacity: true)
            start = nl + 1
        }

        // Complete lines inside the chunk: no copy.
        while start < end {
            guard let nl = Self.findNewline(base, from: start, end: end) else { break }
            lineCount += 1
            handleComplete(UnsafeRawBufferPointer(start: base + start, count: nl - start), number: lineCount,
                           handler: &handler, now: now, into: &output)
            start = nl + 1
        }

        // A trailing partial line.
        if start < end { appendToCarry(chunk, from: start, to: end, output: &output) }
    }

    /// Ends the stream: a final line without `\n` is handled now.
    mutating func finish<H: LineHandler>(handler: inout H, now: Int64, into output: inout ParseOutput) {
        if discarding {
            lineCount += 1
            discarding = false
        } else if !carry.isEmpty {
            lineCount += 1
            let number = lineCount
            carry.withUnsafeBytes { handleComplete($0, number: number, handler: &handler, now: now, into: &output) }
        }
        carry.removeAll(keepingCapacity: true)
    }

    /// A complete line (without its `\n`), from the chunk or completed from the carry: trimmed,
    /// then checked against the limit (the carry may hold a `\r` or a byte order mark over it,
    /// which do not count).
    @inline(__always)
    private func handleComplete<H: LineHandler>(_ raw: UnsafeRawBufferPointer, number: Int, handler: inout H, now: Int64,
                                               into output: inout ParseOutput) {
        let line = Self.trim(raw, number: number)
        if line.count > maxLineLength {
            output.rejections.append(LineRejection(line: number, error: tooLong()))
        } else {
            handler.handleLine(line, number: number, now: now, into: &output)
        }
    }

    /// Appends `chunk[from..<to]` to the carry, or rejects the line once it exceeds the limit.
    private mutating func appendToCarry(
        _ chunk: UnsafeRawBufferPointer, from: Int, to: Int, output: inout ParseOutput
    ) {
        // Slack for what does not count: a line of exactly the limit may still have its `\r` to
        // come, and the first line may open with a byte order mark.
        if carry.count + (to - from) > maxLineLength + (lineCount == 0 ? 4 : 1) {
            output.rejections.append(LineRejection(line: lineCount + 1, error: tooLong()))
            carry.removeAll(keepingCapacity: true)
            discarding = true
        } else {
            carry.append(contentsOf: UnsafeRawBufferPointer(rebasing: chunk[from..<to]))
        }
    }

    private func tooLong() -> ParseError {
        ParseError(code: .lineTooLong, message: "line longer than \(maxLineLength) bytes")
    }

    @inline(__always)
    private static func findNewline(_ base: UnsafeRawPointer, from: Int, end: Int) -> Int? {
        guard let hit = memchr(base + from, 0x0A, end - from) else { return nil }
        return UnsafeRawPointer(hit) - base
    }

    /// The line without its trailing `\r` and, on the stream's first line, without a UTF-8
    /// byte order mark (some Windows tools write one; it is not part of the first name).
    @inline(__always)
    private static func trim(_ line: UnsafeRawBufferPointer, number: Int) -> UnsafeRawBufferPointer {
        guard var b = line.baseAddress, line.count > 0 else { return line }
        var n = line.count
        if line[n - 1] == 0x0D { n -= 1 }
        if number == 1 && n >= 3 && line[0] == 0xEF && line[1] == 0xBB && line[2] == 0xBF {
            b += 3
            n -= 3
        }
        return UnsafeRawBufferPointer(start: b, count: n)
    }
}
