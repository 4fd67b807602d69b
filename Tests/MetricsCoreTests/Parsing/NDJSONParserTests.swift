import Testing
@testable import MetricsCore

@Suite struct NDJSONParserTests {
    // MARK: - Good lines

    @Test func fullLineBecomesOneSample() {
        let r = parseNDJSON(#"{"server_id":"web-01","metric_name":"cpu_usage","value":42.5,"ts":1732838400123,"labels":{"dc":"eu"}}"# + "\n")
        #expect(r.rejections == [])
        #expect(r.samples == [sample("web-01", "cpu_usage", 42.5, 1_732_838_400_123, "dc=eu")])
        #expect(r.lineCount == 1)
    }

    @Test(arguments: [
        // (line, expected sample)
        (#"{"value":1,"metric_name":"m","server_id":"s"}"#, sample("s", "m", 1)),
        (#"  {  "server_id" : "s" ,"metric_name":"m"  ,  "value" :  -2.25 }  "#, sample("s", "m", -2.25)),
        ("\t{\"server_id\":\"s\",\r\t \"metric_name\":\"m\",\"value\":3}\t", sample("s", "m", 3)),
        (#"{"server_id":"s","metric_name":"m","value":0}"#, sample("s", "m", 0)),
        (#"{"server_id":"s","metric_name":"m","value":-0}"#, sample("s", "m", -0.0)),
        (#"{"server_id":"s","metric_name":"m","value":1e3}"#, sample("s", "m", 1000)),
        (#"{"server_id":"s","metric_name":"m","value":1.5E-3}"#, sample("s", "m", 0.0015)),
        (#"{"server_id":"s","metric_name":"m","value":12345678901234567890123}"#, sample("s", "m", 1.2345678901234567890123e22)),
        (#"{"server_id":"s","metric_name":"m","value":1,"ts":1700000000123.999}"#, sample("s", "m", 1, 1_700_000_000_123)),
        (#"{"server_id":"s","metric_name":"m","value":1,"ts":1.7e12}"#, sample("s", "m", 1, 1_700_000_000_000)),
        (#"{"server_id":"s","metric_name":"m","value":1,"ts":1}"#, sample("s", "m", 1, 1)),
        (#"{"server_id":"s","metric_name":"m","value":1,"ts":999999999999999}"#, sample("s", "m", 1, 999_999_999_999_999)),
        (#"{"server_id":"s","metric_name":"m","value":1,"ts":null}"#, sample("s", "m", 1)),
        (#"{"server_id":"s","metric_name":"m","value":1,"labels":{}}"#, sample("s", "m", 1)),
        (#"{"server_id":"s","metric_name":"m","value":1,"labels":null}"#, sample("s", "m", 1)),
        (#"{"server_id":"s","metric_name":"m","value":1,"labels":{"z":"1","a":"2","m":"x"}}"#, sample("s", "m", 1, testNow, "a=2,m=x,z=1")),
        (#"{"server_id":"s","metric_name":"m","value":1,"labels":{"n":1.50,"b":true,"c":false,"e":-2e3}}"#, sample("s", "m", 1, testNow, "b=true,c=false,e=-2e3,n=1.50")),
        (#"{"server_id":"s","metric_name":"m","value":1,"labels":{"k":"a","k":"b"}}"#, sample("s", "m", 1, testNow, "k=b")),
        (#"{"server_id":"s","metric_name":"m","value":1,"labels":{"k":""}}"#, sample("s", "m", 1, testNow, "k=")),
        (#"{"server_id":"s","metric_name":"m","value":1,"labels":{"a":"x"},"labels":{"b":"y"}}"#, sample("s", "m", 1, testNow, "b=y")),
        (#"{"server_id":"s","metric_name":"m","value":1,"value":2}"#, sample("s", "m", 2)),
        (#"{"server_id":"s","metric_name":"m","value":"x","value":2}"#, sample("s", "m", 2)),
        (#"{"server_id":"s","metric_name":"bad name","metric_name":"m","value":1}"#, sample("s", "m", 1)),
        (#"{"extra":{"a":[1,2,{"b":"x\"y\\"}],"c":null,"d":[]},"server_id":"s","metric_name":"m","value":1,"t":true,"u":"\u00e9"}"#, sample("s", "m", 1)),
        (#"{"server_id":"s","metric_name":"cpu\u005fusage","value":1}"#, sample("s", "cpu_usage", 1)),
        (#"{"server_id":"a\/b","metric_name":"m","value":1}"#, sample("a/b", "m", 1)),
        (#"{"server\u005fid":"s","metric_name":"m","value":1}"#, sample("s", "m", 1)),
        (#"{"server_id":"s","metric_name":"m","value":1,"labels":{"city":"Zürich"}}"#, sample("s", "m", 1, testNow, "city=Zürich")),
        (#"{"server_id":"s","metric_name":"m","value":1,"labels":{"city":"Z\u00fcrich","e":"\ud83d\ude00","p":"\/var"}}"#, sample("s", "m", 1, testNow, "city=Zürich,e=😀,p=/var")),
        (#"{"server_id":"s","metric_name":"m","value":1,"labels":{"k\u0065y":"v"}}"#, sample("s", "m", 1, testNow, "key=v")),
        (#"{"server_id":"s","metric_name":"m","value":1.7976931348623157e308}"#, sample("s", "m", 1.7976931348623157e308)),
        (#"{"server_id":"s","metric_name":"m","value":1e-320}"#, sample("s", "m", Double("1e-320")!)),
        (#"{"server_id":"s","metric_name":"m","value":9007199254740993}"#, sample("s", "m", 9_007_199_254_740_992)),
        (#"{"server_id":"s","metric_name":"m","value":0.1}"#, sample("s", "m", 0.1)),
        (#"{"server_id":"a-very-long-server-name.example.com","metric_name":"a_rather_long_metric_name_over_15","value":1}"#,
         sample("a-very-long-server-name.example.com", "a_rather_long_metric_name_over_15", 1)),
    ])
    func goodLineShapes(line: String, expected: MetricSample) {
        let r = parseNDJSON(line + "\n")
        #expect(r.rejections == [], "\(line)")
        #expect(r.samples == [expected], "\(line)")
        #expect(r.samples.first?.value.sign == expected.value.sign)
    }

    @Test func defaultServerIDFillsMissingOrNullServerID() {
        let r = parseNDJSON(
            #"{"metric_name":"m","value":1}"# + "\n" + #"{"server_id":null,"metric_name":"m","value":2}"# + "\n"
                + #"{"server_id":"own","metric_name":"m","value":3}"# + "\n",
            defaultServerID: "hdr")
        #expect(r.samples == [sample("hdr", "m", 1), sample("hdr", "m", 2), sample("own", "m", 3)])
    }

    @Test func invalidDefaultServerIDRejectsOnlyLinesThatNeedIt() {
        let r = parseNDJSON(
            #"{"metric_name":"m","value":1}"# + "\n" + #"{"server_id":"own","metric_name":"m","value":3}"# + "\n",
            defaultServerID: "bad id")
        #expect(r.codes.map(\.1) == [.invalidName])
        #expect(r.samples == [sample("own", "m", 3)])
    }

    @Test func heartbeatsBlankLinesAndCRLF() {
        let text = ":\n: heartbeat\n\n   \n\t\r\n" + #"{"server_id":"s","metric_name":"m","value":1}"# + "\r\n:x\r\n"
        let r = parseNDJSON(text)
        #expect(r.heartbeats == 3)
        #expect(r.samples == [sample("s", "m", 1)])
        #expect(r.rejections == [])
        #expect(r.lineCount == 7)
    }

    @Test func finalLineWithoutNewlineIsParsedByFinish() {
        var parser = NDJSONParser()
        var out = ParseOutput()
        parser.parse(Array(#"{"server_id":"s","metric_name":"m","value":1}"#.utf8), now: 5, into: &out)
        #expect(out.samples.isEmpty)
        #expect(parser.lineCount == 0)
        parser.finish(now: 5, into: &out)
        #expect(out.samples == [sample("s", "m", 1, 5)])
        #expect(parser.lineCount == 1)
    }

    @Test func nowStampsOnlyLinesWithoutTimestamp() {
        var parser = NDJSONParser(defaultServerID: "s")
        var out = ParseOutput()
        parser.parse(Array("{\"metric_name\":\"m\",\"value\":1}\n".utf8), now: 111, into: &out)
        parser.parse(Array("{\"metric_name\":\"m\",\"value\":1,\"ts\":7}\n".utf8), now: 222, into: &out)
        parser.parse(Array("{\"metric_name\":\"m\",\"value\":1}\n".utf8), now: 333, into: &out)
        #expect(out.samples.map(\.timestamp) == [111, 7, 333])
    }

    @Test func manyDistinctLongNamesSurviveTheStringCache() {
        // More distinct names than cache slots, long and short, in a shuffled order.
        var rng = SplitMix64(seed: 7)
        var names: [String] = []
        for k in 0..<600 {
            names.append(k % 2 == 0 ? "metric_with_a_long_name_\(k)" : "m\(k)")
        }
        var text = ""
        var expected: [MetricSample] = []
        for _ in 0..<3000 {
            let name = names.randomElement(using: &rng)!
            let server = "srv-\(Int.random(in: 0..<400, using: &rng))-" + (Bool.random(using: &rng) ? "x" : "some.long.domain.name")
            let labels = "k=\(Int.random(in: 0..<300, using: &rng))"
            text += "{\"server_id\":\"\(server)\",\"metric_name\":\"\(name)\",\"value\":1,\"labels\":{\"k\":\"\(labels.dropFirst(2))\"}}\n"
            expected.append(sample(server, name, 1, testNow, labels))
        }
        let r = parseNDJSON(text)
        #expect(r.rejections == [])
        #expect(r.samples == expected)
    }

    // MARK: - Bad lines

    static let badLines: [(String, ParseError.Code)] = [
        (#"{"server_id":"s","metric_name":"m","value":1"#, .invalidJSON),
        ("not json", .invalidJSON),
        ("[1,2]", .invalidJSON),
        ("{", .invalidJSON),
        ("}", .invalidJSON),
        (#"{"server_id":"s","metric_name":"m","value":1}x"#, .invalidJSON),
        (#"{"server_id":"s","metric_name":"m","value":1}{}"#, .invalidJSON),
        (#"{"server_id":"s","metric_name":"m","value":1,}"#, .invalidJSON),
        (#"{"server_id":"s","metric_name":"m" "value":1}"#, .invalidJSON),
        (#"{"server_id":"s","metric_name":"m","value" 1}"#, .invalidJSON),
        (#"{"server_id":"s",,"metric_name":"m","value":1}"#, .invalidJSON),
        (#"{server_id:"s","metric_name":"m","value":1}"#, .invalidJSON),
        (#"{'server_id':'s'}"#, .invalidJSON),
        (#"{"server_id":"s","metric_name":"m","value":01}"#, .invalidJSON),
        (#"{"server_id":"s","metric_name":"m","value":1.}"#, .invalidJSON),
        (#"{"server_id":"s","metric_name":"m","value":.5}"#, .invalidJSON),
        (#"{"server_id":"s","metric_name":"m","value":+1}"#, .invalidJSON),
        (#"{"server_id":"s","metric_name":"m","value":1e}"#, .invalidJSON),
        (#"{"server_id":"s","metric_name":"m","value":1e+}"#, .invalidJSON),
        (#"{"server_id":"s","metric_name":"m","value":-}"#, .invalidJSON),
        (#"{"server_id":"s","metric_name":"m","value":0x10}"#, .invalidJSON),
        (#"{"server_id":"s","metric_name":"m","value":tru}"#, .invalidJSON),
        (#"{"server_id":"s","metric_name":"m","value":nan}"#, .invalidJSON),
        (#"{"server_id":"s","metric_name":"m","value":1,"x":[1,]}"#, .invalidJSON),
        (#"{"server_id":"s","metric_name":"m","value":1,"x":{"a"}}"#, .invalidJSON),
        (#"{"server_id":"s","metric_name":"m","value":1,"x":[1 2]}"#, .invalidJSON),
        (#"{"server_id":"s","metric_name":"m","value":1,"x":"unterminated}"#, .invalidJSON),
        (#"{"server_id":"s","metric_name":"a\qb","value":1}"#, .invalidJSON),
        (#"{"server_id":"s","metric_name":"a\u12G4","value":1}"#, .invalidJSON),
        (#"{"server_id":"s","metric_name":"a\u12"}"#, .invalidJSON),
        ("{\"server_id\":\"s\",\"metric_name\":\"a\u{01}b\",\"value\":1}", .invalidJSON),
        ("{\"server_id\":\"s\",\"metric_name\":\"a\tb\",\"value\":1}", .invalidJSON),
        (#"{"server_id":"s","metric_name":"m","value":1,"x":"# + String(repeating: "[", count: 100) + String(repeating: "]", count: 100) + "}", .invalidJSON),
        (#"{"metric_name":"m","value":1}"#, .missingField),
        (#"{"server_id":null,"metric_name":"m","value":1}"#, .missingField),
        (#"{"server_id":"s","value":1}"#, .missingField),
        (#"{"server_id":"s","metric_name":null,"value":1}"#, .missingField),
        (#"{"server_id":"s","metric_name":"m"}"#, .missingField),
        (#"{}"#, .missingField),
        (#"{"server_id":"s","metric_name":"bad name","value":1}"#, .invalidName),
        (#"{"server_id":"s","metric_name":"","value":1}"#, .invalidName),
        (#"{"server_id":"s","metric_name":"caf\u00e9","value":1}"#, .invalidName),
        (#"{"server_id":"s","metric_name":"m,n","value":1}"#, .invalidName),
        (#"{"server_id":"s","metric_name":""# + String(repeating: "a", count: 201) + #"","value":1}"#, .invalidName),
        (#"{"server_id":"a b","metric_name":"m","value":1}"#, .invalidName),
        (#"{"server_id":5,"metric_name":"m","value":1}"#, .invalidName),
        (#"{"server_id":"s","metric_name":["m"],"value":1}"#, .invalidName),
        (#"{"server_id":"s","metric_name":"m","value":"42"}"#, .invalidValue),
        (#"{"server_id":"s","metric_name":"m","value":true}"#, .invalidValue),
        (#"{"server_id":"s","metric_name":"m","value":null}"#, .invalidValue),
        (#"{"server_id":"s","metric_name":"m","value":{}}"#, .invalidValue),
        (#"{"server_id":"s","metric_name":"m","value":[1]}"#, .invalidValue),
        (#"{"server_id":"s","metric_name":"m","value":1e400}"#, .nonFiniteValue),
        (#"{"server_id":"s","metric_name":"m","value":-1e309}"#, .nonFiniteValue),
        (#"{"server_id":"s","metric_name":"m","value":1e309}"#, .nonFiniteValue),
        (#"{"server_id":"s","metric_name":"m","value":1.7976931348623159e308}"#, .nonFiniteValue),
        (#"{"server_id":"s","metric_name":"m","value":NaN}"#, .nonFiniteValue),
        (#"{"server_id":"s","metric_name":"m","value":Infinity}"#, .nonFiniteValue),
        (#"{"server_id":"s","metric_name":"m","value":-Infinity}"#, .nonFiniteValue),
        (#"{"server_id":"s","metric_name":"m","value":1,"ts":0}"#, .invalidTimestamp),
        (#"{"server_id":"s","metric_name":"m","value":1,"ts":0.5}"#, .invalidTimestamp),
        (#"{"server_id":"s","metric_name":"m","value":1,"ts":-1}"#, .invalidTimestamp),
        (#"{"server_id":"s","metric_name":"m","value":1,"ts":1e15}"#, .invalidTimestamp),
        (#"{"server_id":"s","metric_name":"m","value":1,"ts":1000000000000000}"#, .invalidTimestamp),
        (#"{"server_id":"s","metric_name":"m","value":1,"ts":123456789012345678901234567890}"#, .invalidTimestamp),
        (#"{"server_id":"s","metric_name":"m","value":1,"ts":"1700000000000"}"#, .invalidTimestamp),
        (#"{"server_id":"s","metric_name":"m","value":1,"ts":true}"#, .invalidTimestamp),
        (#"{"server_id":"s","metric_name":"m","value":1,"ts":NaN}"#, .invalidTimestamp),
        (#"{"server_id":"s","metric_name":"m","value":1,"labels":{"bad key":"v"}}"#, .invalidLabels),
        (#"{"server_id":"s","metric_name":"m","value":1,"labels":{"":"v"}}"#, .invalidLabels),
        (#"{"server_id":"s","metric_name":"m","value":1,"labels":{"k:x":"v"}}"#, .invalidLabels),
        (#"{"server_id":"s","metric_name":"m","value":1,"labels":{"k":"a b"}}"#, .invalidLabels),
        (#"{"server_id":"s","metric_name":"m","value":1,"labels":{"k":"a=b"}}"#, .invalidLabels),
        (#"{"server_id":"s","metric_name":"m","value":1,"labels":{"k":"a,b"}}"#, .invalidLabels),
        (#"{"server_id":"s","metric_name":"m","value":1,"labels":{"k":"a\"b"}}"#, .invalidLabels),
        (#"{"server_id":"s","metric_name":"m","value":1,"labels":{"k":"a\nb"}}"#, .invalidLabels),
        (#"{"server_id":"s","metric_name":"m","value":1,"labels":{"k":{}}}"#, .invalidLabels),
        (#"{"server_id":"s","metric_name":"m","value":1,"labels":{"k":[1]}}"#, .invalidLabels),
        (#"{"server_id":"s","metric_name":"m","value":1,"labels":{"k":null}}"#, .invalidLabels),
        (#"{"server_id":"s","metric_name":"m","value":1,"labels":{"k":NaN}}"#, .invalidLabels),
        (#"{"server_id":"s","metric_name":"m","value":1,"labels":"dc=eu"}"#, .invalidLabels),
        (#"{"server_id":"s","metric_name":"m","value":1,"labels":[]}"#, .invalidLabels),
        (#"{"server_id":"s","metric_name":"m","value":1,"labels":{"k":""# + String(repeating: "v", count: 257) + #""}}"#, .invalidLabels),
        (#"{"server_id":"s","metric_name":"m","value":1,"labels":{"# + (0...32).map { "\"k\($0)\":\"v\"" }.joined(separator: ",") + "}}", .invalidLabels),
        (#"{"server_id":"s","metric_name":"m","value":1,"labels":{"k":"\ud800"}}"#, .invalidUTF8),
        (#"{"server_id":"s","metric_name":"m","value":1,"labels":{"k":"\udc00\u0041"}}"#, .invalidUTF8),
        (#"{"server_id":"s","metric_name":"m\ud83d","value":1}"#, .invalidUTF8),
    ]

    @Test func eachBadLineIsRejectedWithItsCode() {
        for (line, code) in Self.badLines {
            let r = parseNDJSON(line + "\n")
            #expect(r.samples == [], "\(line)")
            #expect(r.rejections.map(\.error.code) == [code], "\(line) → \(r.rejections.map(\.error.description))")
            #expect(r.rejections.first?.line == 1)
            #expect(r.rejections.first?.error.message.isEmpty == false)
        }
    }

    @Test func invalidUTF8BytesAreRejected() {
        let prefix = Array(#"{"server_id":"s","metric_name":"m","value":1,"labels":{"k":""#.utf8)
        let suffix = Array(#""}}"#.utf8) + [0x0A]
        let badSequences: [[UInt8]] = [
            [0xFF], [0xC0, 0xAF], [0xE0, 0x80, 0xAF], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80],
            [0xC3], [0xE2, 0x82], [0x80], [0xF8, 0x88, 0x80, 0x80, 0x80],
        ]
        for bad in badSequences {
            var p = NDJSONParser()
            var out = ParseOutput()
            p.parse(prefix + bad + suffix, now: testNow, into: &out)
            #expect(out.rejections.map(\.error.code) == [.invalidUTF8], "\(bad)")
        }
        // Also inside an unknown key's value and in a key.
        var p = NDJSONParser()
        var out = ParseOutput()
        p.parse(Array(#"{"server_id":"s","metric_name":"m","value":1,"x":"a"#.utf8) + [0xFE] + Array("\"}\n".utf8), now: 1, into: &out)
        p.parse(Array(#"{"server_id":"s","metric_name":"m","value":1,""#.utf8) + [0xC3, 0x28] + Array("\":1}\n".utf8), now: 1, into: &out)
        #expect(out.rejections.map(\.error.code) == [.invalidUTF8, .invalidUTF8])
        #expect(out.rejections.map(\.line) == [1, 2])
    }

    @Test func errorMessagesNameTheColumn() {
        let r = parseNDJSON(#"{"server_id":"s","metric_name":"m","value":1,}"# + "\n")
        #expect(r.rejections.first?.error.message.contains("column 46") == true, "\(r)")
        let r2 = parseNDJSON(#"{"server_id":"s","metric_name":"bad name","value":1}"# + "\n")
        #expect(r2.rejections.first?.error.message.contains("metric_name") == true)
    }

    @Test func mixedCorpusKeepsEveryGoodLineAndReportsEveryBadLine() {
        var rng = SplitMix64(seed: 42)
        var text = ""
        var expectedSamples: [MetricSample] = []
        var expectedCodes: [(Int, ParseError.Code)] = []
        var line = 0
        for k in 0..<400 {
            line += 1
            switch Int.random(in: 0..<10, using: &rng) {
            case 0..<5:
                let v = Double(k) / 4
                text += "{\"server_id\":\"web-\(k % 7)\",\"metric_name\":\"metric_\(k % 5)\",\"value\":\(v),\"ts\":\(1_700_000_000_000 + k),\"labels\":{\"i\":\"\(k)\"}}\n"
                expectedSamples.append(sample("web-\(k % 7)", "metric_\(k % 5)", v, 1_700_000_000_000 + Int64(k), "i=\(k)"))
            case 5..<8:
                let (bad, code) = Self.badLines.randomElement(using: &rng)!
                text += bad + "\n"
                expectedCodes.append((line, code))
            case 8:
                text += ": ping\n"
            default:
                text += "\n"
            }
        }
        let r = parseNDJSON(text)
        #expect(r.samples == expectedSamples)
        #expect(r.rejections.map(\.line) == expectedCodes.map(\.0))
        #expect(r.rejections.map(\.error.code) == expectedCodes.map(\.1))
        #expect(r.lineCount == 400)
    }

    // MARK: - Line limits

    @Test func overLongLineIsRejectedOnceAndSkipped() {
        let limits = ParseLimits(maxLineLength: 60)
        let good = #"{"server_id":"s","metric_name":"m","value":1}"#
        let long = #"{"server_id":"s","metric_name":"m","value":1,"pad":""# + String(repeating: "x", count: 200) + #""}"#
        let r = parseNDJSON(good + "\n" + long + "\n" + good + "\n", limits: limits)
        #expect(r.codes.map(\.0) == [2])
        #expect(r.codes.map(\.1) == [.lineTooLong])
        #expect(r.samples.count == 2)
        #expect(r.lineCount == 3)

        // Exactly at the limit is accepted; one byte more is not. Neither the '\n' nor the '\r' of a
        // CRLF counts (before 2026-12-07 the '\r' did), however the line is cut into chunks.
        let exact = String(repeating: " ", count: 60 - good.utf8.count) + good
        #expect(parseNDJSON(exact + "\n", limits: limits).samples.count == 1)
        #expect(parseNDJSON(" " + exact + "\n", limits: limits).codes.map(\.1) == [.lineTooLong])
        for (text, accepted) in [(exact + "\r\n", true), (" " + exact + "\r\n", false), (exact + "\r\r\n", false)] {
            let bytes = Array((text + good + "\n").utf8)
            for cut in 0...bytes.count {
                let r = parseNDJSON(chunks: [Array(bytes[..<cut]), Array(bytes[cut...])], limits: limits)
                #expect(r.samples.count == (accepted ? 2 : 1), "\(text.debugDescription) cut at \(cut)")
                #expect(r.codes.map(\.1) == (accepted ? [] : [.lineTooLong]), "\(text.debugDescription) cut at \(cut)")
            }
        }
    }

    @Test("a UTF-8 byte order mark opening the body is ignored; elsewhere it is part of the line")
    func byteOrderMark() {
        let good = #"{"server_id":"s","metric_name":"m","value":1}"#
        let r = parseNDJSON("\u{FEFF}" + good + "\n" + good + "\n")
        #expect(r.samples.count == 2 && r.codes.isEmpty)
        let second = parseNDJSON(good + "\n\u{FEFF}" + good + "\n")
        #expect(second.samples.count == 1 && second.codes.map(\.0) == [2])
        let lp = parseLineProtocol("\u{FEFF}cpu,host=a v=1 1700000000000000000\n")
        #expect(lp.samples.map(\.metricName) == ["cpu_v"] && lp.codes.isEmpty)
    }

    @Test func carryNeverGrowsPastTheLimit() {
        // Feed a 1 MB line without newline in small chunks: one rejection, then recovery.
        var parser = NDJSONParser(limits: ParseLimits(maxLineLength: 1000))
        var out = ParseOutput()
        let chunk = [UInt8](repeating: UInt8(ascii: "x"), count: 4096)
        for _ in 0..<256 { parser.parse(chunk, now: 1, into: &out) }
        #expect(out.rejections.map(\.error.code) == [.lineTooLong])
        parser.parse(Array("\n{\"server_id\":\"s\",\"metric_name\":\"m\",\"value\":1}\n".utf8), now: 1, into: &out)
        #expect(out.samples.count == 1)
        #expect(out.rejections.map(\.line) == [1])
        #expect(parser.lineCount == 2)
    }
}
