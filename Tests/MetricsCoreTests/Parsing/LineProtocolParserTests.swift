import Testing
@testable import MetricsCore

@Suite struct LineProtocolParserTests {
    static let t0: Int64 = 1_700_000_000_000

    // MARK: - Telegraf-looking lines

    @Test func telegrafCPULineGivesOneSamplePerField() {
        let r = parseLineProtocol("cpu,cpu=cpu-total,host=web-01 usage_user=1.5,usage_system=0.5 1700000000000000000\n")
        #expect(r.rejections == [])
        #expect(r.samples == [
            sample("web-01", "cpu_usage_user", 1.5, Self.t0, "cpu=cpu-total"),
            sample("web-01", "cpu_usage_system", 0.5, Self.t0, "cpu=cpu-total"),
        ])
    }

    @Test("metric names are right line after line whether the shape repeats or changes (the shape cache)")
    func metricNamesAcrossRepeatedAndChangingShapes() {
        var rng = CoreTestSupport.SeededRNG(seed: 21)
        let measurements = ["cpu", "cpu2", "c", "mem", "disk\\ io"]  // the last one escapes a space
        let keySets: [[String]] = [["a", "b"], ["a", "bb"], ["ab", "b"], ["a", "b", "c"], ["usage_user"], ["a", "b"]]
        var text = ""
        var expected: [String] = []
        for _ in 0..<2_000 {
            let m = measurements[rng.int(0...measurements.count - 1)]
            let keys = keySets[rng.int(0...keySets.count - 1)]
            var fields: [String] = []
            for k in keys {
                if rng.chance(0.15) { fields.append("s\(k)=\"text\"") }  // string fields are skipped
                fields.append("\(k)=1")
                expected.append(m.replacingOccurrences(of: "\\ ", with: "_") + "_" + k)
            }
            text += "\(m),host=h \(fields.joined(separator: ",")) 1700000000000000000\n"
        }
        let r = parseLineProtocol(text)
        #expect(r.rejections == [])
        #expect(r.samples.map(\.metricName) == expected)
    }

    @Test func telegrafMemLineWithIntegerField() {
        let r = parseLineProtocol("mem,host=h available=123i,available_percent=42.1 1700000000000000000\n")
        #expect(r.samples == [sample("h", "mem_available", 123, Self.t0), sample("h", "mem_available_percent", 42.1, Self.t0)])
    }

    @Test func stringFieldsAreCountedNotRejected() {
        let r = parseLineProtocol(#"system,host=h uptime_format="1 day, 2:03" 1700000000000000000"# + "\n"
            + #"system,host=h load1=0.5,uptime_format="1 day, 2:03",n_users=2i,note="say \"hi\", \\ ok" 1700000000000000000"# + "\n")
        #expect(r.rejections == [])
        #expect(r.skippedFields == 3)
        #expect(r.samples == [sample("h", "system_load1", 0.5, Self.t0), sample("h", "system_n_users", 2, Self.t0)])
    }

    @Test func allFieldTypes() {
        let line = "t,host=h a=1,b=-1.5,c=1e3,d=1.5E-3,e=12i,f=-12i,g=12u,h=t,i=T,j=true,k=True,l=TRUE,m=f,n=F,o=false,"
            + "p=False,q=FALSE,r=9223372036854775807i,s=-9223372036854775808i,u=18446744073709551615u,v=+3,w=.5,x=0i 1\n"
        let r = parseLineProtocol(line)
        #expect(r.rejections == [], "\(r)")
        let values = Dictionary(uniqueKeysWithValues: r.samples.map { ($0.metricName, $0.value) })
        let expected: [String: Double] = [
            "t_a": 1, "t_b": -1.5, "t_c": 1000, "t_d": 0.0015, "t_e": 12, "t_f": -12, "t_g": 12,
            "t_h": 1, "t_i": 1, "t_j": 1, "t_k": 1, "t_l": 1, "t_m": 0, "t_n": 0, "t_o": 0, "t_p": 0, "t_q": 0,
            "t_r": Double(Int64.max), "t_s": Double(Int64.min), "t_u": Double(UInt64.max),
            "t_v": 3, "t_w": 0.5, "t_x": 0,
        ]
        #expect(values == expected)
        #expect(r.samples.allSatisfy { $0.timestamp == 0 && $0.serverID == "h" })
    }

    // MARK: - Escapes and sanitizing

    @Test func escapesAreDecodedThenNamesSanitized() {
        let r = parseLineProtocol(#"my\ meas\,x,tag\ key=tag\,val\=ue\ x,host=web\ 01 field\=key=1,f\,2=2 1700000000000000000"# + "\n")
        #expect(r.rejections == [], "\(r)")
        #expect(r.samples == [
            sample("web_01", "my_meas_x_field_key", 1, Self.t0, "tag_key=tag_val_ue_x"),
            sample("web_01", "my_meas_x_f_2", 2, Self.t0, "tag_key=tag_val_ue_x"),
        ])
    }

    @Test func disallowedBytesBecomeUnderscores() {
        let r = parseLineProtocol(
            "température,host=web:01/a,cpu:0=x,city=Zürich,path=C:\\dir,q=a\"b usage.idle=1\n"
                + "a=b,host=h v=1\n")
        #expect(r.rejections == [], "\(r)")
        #expect(r.samples == [
            sample("web:01/a", "temp__rature_usage.idle", 1, testNow, "city=Zürich,cpu_0=x,path=C:_dir,q=a_b"),
            sample("h", "a_b_v", 1),
        ])
    }

    @Test func labelsAreCanonicalSortedAndHostIsNotALabel() {
        let r = parseLineProtocol("m,z=1,host=h,a=2,m=3,a=4 v=1\n")
        #expect(r.samples == [sample("h", "m_v", 1, testNow, "a=4,m=3,z=1")])
    }

    // MARK: - Server id

    @Test func defaultServerIDAndMissingHost() {
        #expect(parseLineProtocol("cpu v=1\n", defaultServerID: "dflt").samples == [sample("dflt", "cpu_v", 1)])
        #expect(parseLineProtocol("cpu,host=own v=1\n", defaultServerID: "dflt").samples == [sample("own", "cpu_v", 1)])
        #expect(parseLineProtocol("cpu v=1\n").codes.map(\.1) == [.missingHost])
        #expect(parseLineProtocol("cpu v=1\n", defaultServerID: "bad id").codes.map(\.1) == [.invalidName])
    }

    // MARK: - Timestamps

    @Test(arguments: [
        (TimestampPrecision.nanoseconds, "1700000000123456789", Int64(1_700_000_000_123)),
        (.microseconds, "1700000000123456", 1_700_000_000_123),
        (.milliseconds, "1700000000123", 1_700_000_000_123),
        (.seconds, "1700000000", 1_700_000_000_000),
        (.minutes, "28333333", 1_699_999_980_000),
        (.hours, "472222", 1_699_999_200_000),
        (.nanoseconds, "-1000000", -1),
        (.nanoseconds, "999999", 0),
    ])
    func precisions(precision: TimestampPrecision, raw: String, expectedMS: Int64) {
        let r = parseLineProtocol("cpu,host=h v=1 \(raw)\n", precision: precision)
        #expect(r.samples.map(\.timestamp) == [expectedMS])
    }

    @Test func missingTimestampUsesNow() {
        #expect(parseLineProtocol("cpu,host=h v=1\n").samples.map(\.timestamp) == [testNow])
        #expect(parseLineProtocol("cpu,host=h v=1   \n").samples.map(\.timestamp) == [testNow])
    }

    @Test func precisionQueryValues() {
        let cases: [(String, TimestampPrecision?)] = [
            ("n", .nanoseconds), ("ns", .nanoseconds), ("u", .microseconds), ("us", .microseconds),
            ("µ", .microseconds), ("\u{3BC}", .microseconds), ("ms", .milliseconds), ("s", .seconds),
            ("m", .minutes), ("h", .hours), ("", nil), ("x", nil), ("NS", nil), ("sec", nil),
        ]
        for (query, expected) in cases {
            #expect(TimestampPrecision(query: query) == expected, "\(query)")
        }
        #expect(TimestampPrecision.microseconds.rawValue == "us")
    }

    // MARK: - Bad lines

    static let badLines: [(String, ParseError.Code)] = [
        ("cpu", .invalidSyntax),
        ("cpu,host=a", .invalidSyntax),
        ("cpu,host=a ", .invalidSyntax),
        ("cpu,host=a value", .invalidSyntax),
        ("cpu,host v=1", .invalidSyntax),
        ("cpu,=a v=1", .invalidSyntax),
        ("cpu,host= v=1", .invalidSyntax),
        ("cpu,host=a,x v=1", .invalidSyntax),
        (",host=a v=1", .invalidSyntax),
        ("cpu,host=a =1", .invalidSyntax),
        ("cpu,host=a v=1,", .invalidSyntax),
        ("cpu,host=a v=1,,w=2", .invalidSyntax),
        (#"cpu,host=a v="abc"#, .invalidSyntax),
        (#"cpu,host=a v="abc"x"#, .invalidSyntax),
        ("cpu,host=a v=1 1 2", .invalidSyntax),
        ("cpu,host=a v=abc", .invalidValue),
        ("cpu,host=a v=1.2.3", .invalidValue),
        ("cpu,host=a v=", .invalidValue),
        ("cpu,host=a v=,w=1", .invalidValue),
        ("cpu,host=a v=12x", .invalidValue),
        ("cpu,host=a v=9223372036854775808i", .invalidValue),
        ("cpu,host=a v=-1u", .invalidValue),
        ("cpu,host=a v=18446744073709551616u", .invalidValue),
        ("cpu,host=a v=1.5i", .invalidValue),
        ("cpu,host=a v=yes", .invalidValue),
        ("cpu,host=a v=tRUE", .invalidValue),
        ("cpu,host=a v=1e400", .nonFiniteValue),
        ("cpu,host=a v=-1e400", .nonFiniteValue),
        ("cpu,host=a v=NaN", .nonFiniteValue),
        ("cpu,host=a v=-Inf", .nonFiniteValue),
        ("cpu,host=a v=+inf", .nonFiniteValue),
        ("cpu,host=a v=Infinity", .nonFiniteValue),
        ("cpu,host=a v=1,w=nan", .nonFiniteValue),
        ("cpu,host=a v=1 abc", .invalidTimestamp),
        ("cpu,host=a v=1 1.5", .invalidTimestamp),
        ("cpu,host=a v=1 -", .invalidTimestamp),
        ("cpu,host=a v=1 99999999999999999999", .invalidTimestamp),
        ("cpu,host=a v=1 1700000000000000000i", .invalidTimestamp),
        ("cpu v=1", .missingHost),
        ("cpu,dc=eu v=1", .missingHost),
        ("cpu,host=a," + (0..<33).map { "t\($0)=v" }.joined(separator: ",") + " v=1", .invalidLabels),
        ("cpu,host=a,k=" + String(repeating: "v", count: 257) + " v=1", .invalidLabels),
        ("cpu,host=a," + String(repeating: "k", count: 201) + "=v v=1", .invalidLabels),
        (String(repeating: "m", count: 199) + ",host=a v=1", .invalidName),
        ("cpu,host=" + String(repeating: "h", count: 201) + " v=1", .invalidName),
    ]

    @Test func eachBadLineIsRejectedWithItsCode() {
        for (line, code) in Self.badLines {
            let r = parseLineProtocol(line + "\n")
            #expect(r.samples == [], "\(line)")
            #expect(r.rejections.map(\.error.code) == [code], "\(line) → \(r.rejections.map(\.error.description))")
            #expect(r.skippedFields == 0)
        }
    }

    @Test func limitsAreInclusive() {
        let tags = (0..<32).map { "t\($0)=v" }.joined(separator: ",")
        #expect(parseLineProtocol("cpu,host=a,\(tags) v=1\n").samples.count == 1)
        #expect(parseLineProtocol(String(repeating: "m", count: 198) + ",host=a v=1\n").samples.count == 1)
        #expect(parseLineProtocol("cpu,host=" + String(repeating: "h", count: 200) + " v=1\n").samples.count == 1)
        #expect(parseLineProtocol("cpu,host=a,k=" + String(repeating: "v", count: 256) + " v=1\n").samples.count == 1)
        #expect(parseLineProtocol("cpu,host=a v=1 9223372036854775807\n", precision: .seconds).codes.map(\.1) == [.invalidTimestamp])
    }

    @Test func invalidUTF8IsRejected() {
        var p = LineProtocolParser()
        var out = ParseOutput()
        p.parse(Array("cpu,host=a,k=".utf8) + [0xC3, 0x28] + Array(" v=1\n".utf8), now: 1, into: &out)
        p.parse(Array("cpu,host=a v=1 ".utf8) + [0xFF] + Array("\n".utf8), now: 1, into: &out)
        p.parse(Array("cpu,host=a s=\"".utf8) + [0xED, 0xA0, 0x80] + Array("\" \n".utf8), now: 1, into: &out)
        #expect(out.rejections.map(\.error.code) == [.invalidUTF8, .invalidUTF8, .invalidUTF8])
        #expect(out.rejections.map(\.line) == [1, 2, 3])
    }

    @Test func commentsAndBlankLinesAreIgnoredButCounted() {
        let r = parseLineProtocol("# comment\n\n   \n  # indented\n\r\ncpu,host=h v=1\r\n")
        #expect(r.samples == [sample("h", "cpu_v", 1)])
        #expect(r.rejections == [])
        #expect(r.lineCount == 6)
    }

    @Test func errorMessagesSayWhatAndWhere() {
        let r = parseLineProtocol("cpu,host=a v=1,w\n")
        #expect(r.rejections.first?.error.message.contains("column 16") == true, "\(r)")
        let r2 = parseLineProtocol("cpu,host=a v=abc\n")
        #expect(r2.rejections.first?.error.message.contains("'v'") == true, "\(r2)")
    }

    @Test func mixedCorpusKeepsEveryGoodLineAndReportsEveryBadLine() {
        var rng = SplitMix64(seed: 11)
        var text = ""
        var expectedSamples: [MetricSample] = []
        var expectedCodes: [(Int, ParseError.Code)] = []
        var skipped = 0
        for k in 1...400 {
            switch Int.random(in: 0..<10, using: &rng) {
            case 0..<4:
                text += "cpu,cpu=cpu\(k % 4),host=web-\(k % 9) usage_user=\(k).5,usage_idle=\(k)i \(k)000000\n"
                expectedSamples.append(sample("web-\(k % 9)", "cpu_usage_user", Double(k) + 0.5, Int64(k), "cpu=cpu\(k % 4)"))
                expectedSamples.append(sample("web-\(k % 9)", "cpu_usage_idle", Double(k), Int64(k), "cpu=cpu\(k % 4)"))
            case 4:
                text += "system,host=h uptime_format=\"\(k) days, 2:03\"\n"
                skipped += 1
            case 5..<8:
                let (bad, code) = Self.badLines.randomElement(using: &rng)!
                text += bad + "\n"
                expectedCodes.append((k, code))
            case 8:
                text += "# comment \(k)\n"
            default:
                text += "\n"
            }
        }
        let r = parseLineProtocol(text)
        #expect(r.samples == expectedSamples)
        #expect(r.rejections.map(\.line) == expectedCodes.map(\.0))
        #expect(r.rejections.map(\.error.code) == expectedCodes.map(\.1))
        #expect(r.skippedFields == skipped)
        #expect(r.lineCount == 400)
    }
}
