import Testing
@testable import MetricsCore

@Suite("NDJSONParser.reset")
struct ParserResetTests {
    @Test("reset starts a new stream: line numbers restart, the partial line is dropped, the default server id changes")
    func resetStartsANewStream() {
        var p = NDJSONParser(defaultServerID: "first")
        var out = ParseOutput()
        p.parse(Array("{\"metric_name\":\"m\",\"value\":1}\n{\"metric_name\":\"m\",\"val".utf8), now: 5, into: &out)
        #expect(out.samples.map(\.serverID) == ["first"])
        #expect(p.lineCount == 1)

        p.reset(defaultServerID: "second")
        out.removeAll()
        p.parse(Array("bad\n{\"metric_name\":\"m\",\"value\":2}\n".utf8), now: 5, into: &out)
        p.finish(now: 5, into: &out)
        #expect(p.lineCount == 2)
        #expect(out.rejections.map(\.line) == [1])  // numbering restarted; the old partial line is gone
        #expect(out.samples.map(\.serverID) == ["second"])
        #expect(out.samples.map(\.value) == [2])
    }

    @Test("reset applies new limits")
    func resetAppliesNewLimits() {
        var p = NDJSONParser()
        p.reset(defaultServerID: nil, limits: ParseLimits(maxLineLength: 10))
        var out = ParseOutput()
        p.parse(Array("{\"server_id\":\"s\",\"metric_name\":\"m\",\"value\":1}\n".utf8), now: 5, into: &out)
        #expect(out.rejections.map(\.error.code) == [.lineTooLong])
    }
}
