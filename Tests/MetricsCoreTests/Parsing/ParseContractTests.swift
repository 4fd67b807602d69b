import Testing
@testable import MetricsCore

/// Contracts other components rely on: stable error codes and byte sets equal to ``NameRules``.
@Suite struct ParseContractTests {
    @Test func errorCodesAreStable() {
        // These strings are metric labels and JSON reply fields: changing one breaks clients.
        #expect(ParseError.Code.allCases.map(\.rawValue) == [
            "line_too_long", "invalid_json", "invalid_syntax", "missing_field", "invalid_name", "invalid_value",
            "non_finite_value", "invalid_timestamp", "invalid_labels", "invalid_utf8", "missing_host", "server_not_allowed", "timestamp_out_of_range",
            "too_many_series",
        ])
        let e = ParseError(code: .invalidName, message: "bad")
        #expect(e.description == "invalid_name: bad")
    }

    @Test func fastNameRulesMatchNameRulesForEveryByte() {
        for b in 0...255 {
            [UInt8(b)].withUnsafeBytes { one in
                #expect(FastNameRules.isValidName(one) == NameRules.isValidName(one), "byte \(b)")
                #expect(FastNameRules.isValidLabelKey(one) == NameRules.isValidLabelKey(one), "byte \(b)")
                #expect(FastNameRules.isValidLabelValue(one) == NameRules.isValidLabelValue(one), "byte \(b)")
            }
        }
    }

    @Test func fastNameRulesMatchNameRulesForLengths() {
        for length in [0, 1, 15, 16, 199, 200, 201, 255, 256, 257] {
            [UInt8](repeating: UInt8(ascii: "a"), count: length).withUnsafeBytes { s in
                #expect(FastNameRules.isValidName(s) == NameRules.isValidName(s), "\(length)")
                #expect(FastNameRules.isValidLabelKey(s) == NameRules.isValidLabelKey(s), "\(length)")
                #expect(FastNameRules.isValidLabelValue(s) == NameRules.isValidLabelValue(s), "\(length)")
            }
        }
    }

    @Test func limitsAndOutputDefaults() {
        #expect(ParseLimits().maxLineLength == 65536)
        #expect(ParseLimits(maxLineLength: 0).maxLineLength == 1)
        var out = ParseOutput()
        out.samples.append(sample("s", "m", 1))
        out.rejections.append(LineRejection(line: 1, error: ParseError(code: .invalidJSON, message: "x")))
        out.heartbeats = 2
        out.skippedFields = 3
        out.removeAll()
        #expect(out.samples.isEmpty && out.rejections.isEmpty && out.heartbeats == 0 && out.skippedFields == 0)
        #expect(out.samples.capacity >= 1)
    }
}

@Suite struct ServerIDPolicyTests {
    @Test func linesForServersACredentialMayNotWriteAreRejectedOneByOne() throws {
        let policy = try ServerIDPolicy(patterns: ["web-*", "db-01"])
        var ndjson = NDJSONParser(defaultServerID: "web-default", limits: ParseLimits(allowedServers: policy))
        var out = ParseOutput()
        let body = """
            {"server_id":"web-01","metric_name":"cpu","value":1}
            {"server_id":"db-02","metric_name":"cpu","value":2}
            {"metric_name":"cpu","value":3}
            {"server_id":"db-01","metric_name":"cpu","value":4}

            """
        ndjson.parse(Array(body.utf8), now: 1_000, into: &out)
        #expect(out.samples.map(\.serverID) == ["web-01", "web-default", "db-01"])
        #expect(out.rejections.map(\.line) == [2])
        #expect(out.rejections.first?.error.code == .serverNotAllowed)
        #expect(out.rejections.first?.error.message.contains("db-02") == true)

        var lp = LineProtocolParser(precision: .milliseconds, limits: ParseLimits(allowedServers: policy))
        var out2 = ParseOutput()
        lp.parse(Array("cpu,host=web-9 v=1 1000\ncpu,host=mail-1 v=2 1000\n".utf8), now: 1_000, into: &out2)
        #expect(out2.samples.map(\.serverID) == ["web-9"])
        #expect(out2.rejections.map(\.line) == [2] && out2.rejections.first?.error.code == .serverNotAllowed)

        // A reset parser takes the new request's policy (none: anything goes).
        ndjson.reset(defaultServerID: nil, limits: ParseLimits())
        var out3 = ParseOutput()
        ndjson.parse(Array("{\"server_id\":\"db-02\",\"metric_name\":\"cpu\",\"value\":2}\n".utf8), now: 1_000, into: &out3)
        #expect(out3.samples.count == 1 && out3.rejections.isEmpty)
    }

    @Test func patternsAreValidated() throws {
        #expect(throws: ServerIDPolicy.InvalidPattern.self) { try ServerIDPolicy(patterns: ["a*b"]) }
        #expect(throws: ServerIDPolicy.InvalidPattern.self) { try ServerIDPolicy(patterns: [""]) }
        #expect(throws: ServerIDPolicy.InvalidPattern.self) { try ServerIDPolicy(patterns: ["**"]) }
        #expect(try ServerIDPolicy(patterns: ["*"]).allowsAll)
        #expect(try ServerIDPolicy(patterns: ["web-*"]).allows("web-") == true)
    }
}

@Suite struct TimestampWindowTests {
    @Test("without a window, timestamps of magnitude 10^15 ms and more are still rejected (the aggregator's arithmetic needs a range)")
    func absoluteRangeWithoutWindow() {
        let now: Int64 = 1_800_000_000_000
        var lp = LineProtocolParser(precision: .milliseconds, defaultServerID: "web-01", limits: ParseLimits())
        var out = ParseOutput()
        lp.parse(Array("m v=1 -9223372036854775808\nm v=2 \(now)\nm v=3 9223372036854775807\nm v=4 999999999999999\nm v=5 -1000000000000000\nm v=6 -1\n".utf8),
                 now: now, into: &out)
        #expect(out.samples.map(\.value) == [2, 4, 6])
        #expect(out.rejections.map(\.line) == [1, 3, 5])
        #expect(out.rejections.allSatisfy { $0.error.code == .timestampOutOfRange })
    }

    @Test("the aggregator clamps an embedder's out-of-range timestamps instead of trapping")
    func aggregatorClampsTimestamps() async {
        let aggregator = Aggregator()
        _ = await aggregator.ingest([MetricSample(serverID: "a", metricName: "m", value: 1, timestamp: .min),
                                     MetricSample(serverID: "a", metricName: "m", value: 2, timestamp: .max)])
        let (changed, _, _) = await aggregator.collect(now: 1_800_000_000_000, seq: 1)
        #expect(changed.count == 1 && changed.first?.total.count == 2)
        #expect(changed.first?.lastTimestamp == MetricSample.validTimestamps.upperBound)
        _ = await aggregator.sealAll()
    }

    @Test func timestampsOutsideTheWindowAreRejectedWithTheirDistance() {
        let now: Int64 = 1_800_000_000_000
        let limits = ParseLimits(maxFutureMilliseconds: 600_000, maxAgeMilliseconds: 7 * 86_400_000)
        var p = NDJSONParser(defaultServerID: "web-01", limits: limits)
        var out = ParseOutput()
        let lines = [now, now + 600_000, now + 600_001, now - 7 * 86_400_000, now - 7 * 86_400_000 - 1, now + 3 * 86_400_000]
            .map { "{\"metric_name\":\"cpu\",\"value\":1,\"ts\":\($0)}\n" }.joined() + "{\"metric_name\":\"cpu\",\"value\":1}\n"
        p.parse(Array(lines.utf8), now: now, into: &out)
        #expect(out.samples.map(\.timestamp) == [now, now + 600_000, now - 7 * 86_400_000, now])
        #expect(out.rejections.map(\.line) == [3, 5, 6])
        #expect(out.rejections.allSatisfy { $0.error.code == .timestampOutOfRange })
        #expect(out.rejections.last?.error.message == "timestamp \(now + 3 * 86_400_000) is 3 d ahead of the server clock (limit 10 min)")

        var lp = LineProtocolParser(precision: .seconds, defaultServerID: "web-01", limits: limits)
        var out2 = ParseOutput()
        lp.parse(Array("cpu v=1 \(now / 1000)\ncpu v=2 \(now / 1000 + 3600)\ncpu v=3 \(now / 1000 - 8 * 86_400)\n".utf8), now: now, into: &out2)
        #expect(out2.samples.count == 1 && out2.rejections.map(\.line) == [2, 3])
        #expect(out2.rejections.first?.error.message.contains("60 min ahead") == true)
    }
}

@Suite struct LabelLimitTests {
    @Test func moreLabelsThanTheLimitAreRejected() {
        var limits = ParseLimits()
        limits.maxLabels = 2
        var p = NDJSONParser(defaultServerID: "web-01", limits: limits)
        var out = ParseOutput()
        p.parse(Array("""
            {"metric_name":"a","value":1,"labels":{"x":"1","y":"2"}}
            {"metric_name":"b","value":1,"labels":{"x":"1","y":"2","z":"3"}}

            """.utf8), now: 1_000, into: &out)
        #expect(out.samples.map(\.metricName) == ["a"])
        #expect(out.rejections.map(\.line) == [2] && out.rejections.first?.error.code == .invalidLabels)
        #expect(out.rejections.first?.error.message == "3 labels; at most 2 are accepted")

        var lp = LineProtocolParser(precision: .milliseconds, limits: limits)
        var out2 = ParseOutput()
        lp.parse(Array("m,host=h,a=1,b=2 v=1 1000\nm,host=h,a=1,b=2,c=3 v=1 1000\n".utf8), now: 1_000, into: &out2)
        #expect(out2.samples.count == 1 && out2.rejections.map(\.line) == [2])
    }

    @Test func labelValuesLongerThanTheLimitAreRejected() {
        var limits = ParseLimits()
        limits.maxLabelValueLength = 4
        var p = NDJSONParser(defaultServerID: "web-01", limits: limits)
        var out = ParseOutput()
        p.parse(Array("""
            {"metric_name":"a","value":1,"labels":{"x":"1234"}}
            {"metric_name":"b","value":1,"labels":{"x":"12345"}}
            {"metric_name":"c","value":1,"labels":{"x":"12\\u003456"}}
            {"metric_name":"d","value":1,"labels":{"x":12345}}

            """.utf8), now: 1_000, into: &out)
        #expect(out.samples.map(\.metricName) == ["a"])
        #expect(out.sampleLines.all == [1])
        #expect(out.rejections.map(\.line) == [2, 3, 4] && out.rejections.allSatisfy { $0.error.code == .invalidLabels })
        #expect(out.rejections.first?.error.message == "label 'x' value is 5 bytes; at most 4 are accepted")

        var lp = LineProtocolParser(precision: .milliseconds, limits: limits)
        var out2 = ParseOutput()
        lp.parse(Array("m,host=h,a=1234 v=1,w=2 1000\nm,host=h,a=12345 v=1 1000\n".utf8), now: 1_000, into: &out2)
        #expect(out2.samples.count == 2 && out2.rejections.map(\.line) == [2])
        #expect(out2.sampleLines.all == [1, 1], "one line number per field sample")

        limits.maxLabelValueLength = 10_000
        #expect(limits.maxLabelValueLength == NameRules.maxLabelValueLength, "clamped to the hard bound")
    }
}

@Suite struct SampleLinesTests {
    @Test func runsGiveEveryLineBackExactly() {
        var rng = SplitMix64(seed: 21)
        for _ in 0..<500 {
            var lines = SampleLines()
            var naive: [Int] = []
            var line = 0
            for _ in 0..<Int.random(in: 0...60, using: &rng) {
                line += Int.random(in: 0...3, using: &rng) == 0 ? Int.random(in: 1...4, using: &rng) : 1
                let n = Int.random(in: 0...4, using: &rng) == 0 ? Int.random(in: 1...5, using: &rng) : 1
                lines.record(line: line, samples: n)
                naive += Array(repeating: line, count: n)
                // A second stream's parser appending into the same output restarts numbering.
                if Int.random(in: 0...20, using: &rng) == 0 { line = 0 }
            }
            #expect(lines.count == naive.count)
            #expect(lines.all == naive)
        }
    }

    @Test func goodNDJSONIsOneRun() {
        var p = NDJSONParser(defaultServerID: "w")
        var out = ParseOutput()
        p.parse(Array((0..<1000).map { "{\"metric_name\":\"m\",\"value\":\($0)}\n" }.joined().utf8), now: 1, into: &out)
        #expect(out.sampleLines.count == 1000 && out.sampleLines.line(of: 999) == 1000)
        #expect(out.sampleLines.runs.count == 1, "no per-sample bookkeeping for a clean stream")
        var lp = LineProtocolParser(precision: .milliseconds)
        var out2 = ParseOutput()
        lp.parse(Array((0..<500).map { "cpu,host=h\($0 % 7) user=1,system=2,idle=3 \($0)\n" }.joined().utf8), now: 1, into: &out2)
        #expect(out2.sampleLines.runs.count == 1 && out2.sampleLines.line(of: 1499) == 500)
    }
}
