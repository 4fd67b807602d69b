import Testing
@testable import MetricsCore

/// Contracts other components rely on: stable error codes and byte sets equal to ``NameRules``.
@Suite struct ParseContractTests {
    @Test func errorCodesAreStable() {
        // These strings are metric labels and JSON reply fields: changing one breaks clients.
        #expect(ParseError.Code.allCases.map(\.rawValue) == [
            "line_too_long", "invalid_json", "invalid_syntax", "missing_field", "invalid_name", "invalid_value",
            "non_finite_value", "invalid_timestamp", "invalid_labels", "invalid_utf8", "missing_host",
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
