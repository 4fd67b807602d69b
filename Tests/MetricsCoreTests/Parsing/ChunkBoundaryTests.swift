import Foundation
import Testing
@testable import MetricsCore

/// Whatever the chunk boundaries, a stream must parse exactly as if it arrived in one piece.
@Suite struct ChunkBoundaryTests {
    static let limits = ParseLimits(maxLineLength: 120)

    /// An NDJSON corpus with every kind of line, multi-byte UTF-8, CRLF, over-long lines (also
    /// lines exactly at the limit) and, when `finalNewline` is false, a last line without `\n`.
    static func ndjsonCorpus(seed: UInt64, finalNewline: Bool) -> [UInt8] {
        var rng = SplitMix64(seed: seed)
        let good = #"{"server_id":"web-01","metric_name":"cpu_usage","value":42.5,"ts":1732838400123,"labels":{"dc":"eu"}}"#
        var lines: [String] = [
            good,
            #"{"server_id":"s","metric_name":"m","value":-1.25e-3,"labels":{"city":"Zürich","e":"\ud83d\ude00"}}"#,
            #"{"metric_name":"m","value":12345678901234567890123}"#,
            ": heartbeat",
            "",
            "   ",
            #"{"server_id":"s","metric_name":"m","value":NaN}"#,
            #"{"server_id":"s","metric_name":"m","value":"x"}"#,
            "garbage",
            #"{"server_id":"s","metric_name":"m","value":1"#,
            #"{"server_id":"s","metric_name":"m","value":1,"pad":""# + String(repeating: "é", count: 80) + #""}"#,  // too long
        ]
        let exact = String(repeating: " ", count: 120 - 45) + #"{"server_id":"s","metric_name":"m","value":1}"#
        lines.append(exact)  // exactly 120 bytes
        lines.append(" " + exact)  // 121: too long
        var text = ""
        for k in 0..<60 {
            var line = lines.randomElement(using: &rng)!
            if k % 3 == 0 { line = line.replacingOccurrences(of: "\"value\":1", with: "\"value\":\(k)") }
            text += line + (Bool.random(using: &rng) ? "\r\n" : "\n")
        }
        text += good + "\n"
        text += #"{"server_id":"s","metric_name":"last","value":7}"# + (finalNewline ? "\n" : "")
        return Array(text.utf8)
    }

    static func lineProtocolCorpus(seed: UInt64, finalNewline: Bool) -> [UInt8] {
        var rng = SplitMix64(seed: seed)
        let lines: [String] = [
            "cpu,cpu=cpu-total,host=web-01 usage_user=1.5,usage_system=0.5 1700000000000000000",
            "mem,host=h available=123i,available_percent=42.1 1700000000000000000",
            #"system,host=h uptime_format="1 day, 2:03" 1700000000000000000"#,
            #"disk,host=h,path=/var\ log used=1u,ok=t,name="x\"y" "#,
            "# a comment",
            "",
            "cpu,host=h usage=abc",
            "cpu,host=h",
            "temp,host=h,city=Zürich value=-3.5e1",
            "bad,host=h v=1 notatime",
            "long,host=h " + (0..<20).map { "field_\($0)=\($0)" }.joined(separator: ","),  // too long
        ]
        var text = ""
        for _ in 0..<60 {
            text += lines.randomElement(using: &rng)! + (Bool.random(using: &rng) ? "\r\n" : "\n")
        }
        text += "last,host=h v=1i"  + (finalNewline ? "\n" : "")
        return Array(text.utf8)
    }

    @Test func ndjsonOutputDoesNotDependOnChunking() {
        var rng = SplitMix64(seed: 1234)
        for iteration in 0..<300 {
            let finalNewline = iteration % 2 == 0
            let bytes = Self.ndjsonCorpus(seed: UInt64(iteration / 10), finalNewline: finalNewline)
            let whole = parseNDJSON(chunks: [bytes], defaultServerID: "dflt", limits: Self.limits)
            let maxChunk = [1, 2, 3, 7, 16, 64, 121, 500][iteration % 8]
            let cuts = randomCuts(count: bytes.count, maxChunk: maxChunk, using: &rng)
            let chunked = parseNDJSON(chunks: chunks(bytes, cuts: cuts), defaultServerID: "dflt", limits: Self.limits)
            #expect(chunked == whole, "iteration \(iteration), cuts \(cuts.prefix(20))…")
            if chunked != whole { return }
            if iteration < 10 {
                // Sanity: the corpus really exercises samples and rejections.
                #expect(whole.samples.count > 5)
                #expect(whole.rejections.contains { $0.error.code == .lineTooLong })
                #expect(whole.samples.last?.metricName == "last")
            }
        }
    }

    @Test func ndjsonOneByteChunks() {
        let bytes = Self.ndjsonCorpus(seed: 99, finalNewline: false)
        let whole = parseNDJSON(chunks: [bytes], limits: Self.limits)
        let single = parseNDJSON(chunks: bytes.map { [$0] }, limits: Self.limits)
        #expect(single == whole)
    }

    @Test func lineProtocolOutputDoesNotDependOnChunking() {
        var rng = SplitMix64(seed: 5678)
        for iteration in 0..<300 {
            let finalNewline = iteration % 2 == 1
            let bytes = Self.lineProtocolCorpus(seed: UInt64(iteration / 10), finalNewline: finalNewline)
            let whole = parseLineProtocol(chunks: [bytes], limits: Self.limits)
            let maxChunk = [1, 2, 5, 9, 33, 120, 121, 400][iteration % 8]
            let cuts = randomCuts(count: bytes.count, maxChunk: maxChunk, using: &rng)
            let chunked = parseLineProtocol(chunks: chunks(bytes, cuts: cuts), limits: Self.limits)
            #expect(chunked == whole, "iteration \(iteration)")
            if chunked != whole { return }
            if iteration < 10 {
                #expect(whole.samples.count > 5)
                #expect(whole.skippedFields > 0)
                #expect(whole.rejections.contains { $0.error.code == .lineTooLong })
                #expect(whole.samples.last?.metricName == "last_v")
            }
        }
    }

    @Test func lineProtocolOneByteChunks() {
        let bytes = Self.lineProtocolCorpus(seed: 3, finalNewline: true)
        let whole = parseLineProtocol(chunks: [bytes], limits: Self.limits)
        let single = parseLineProtocol(chunks: bytes.map { [$0] }, limits: Self.limits)
        #expect(single == whole)
    }

    @Test func emptyChunksAndFinishOnEmptyStreamAreHarmless() {
        var parser = NDJSONParser()
        var out = ParseOutput()
        parser.parse([], now: 1, into: &out)
        parser.finish(now: 1, into: &out)
        #expect(out.samples.isEmpty && out.rejections.isEmpty)
        #expect(parser.lineCount == 0)
        var lp = LineProtocolParser()
        lp.parse([], now: 1, into: &out)
        lp.finish(now: 1, into: &out)
        #expect(lp.lineCount == 0)
    }
}
