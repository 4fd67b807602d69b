import Testing
@testable import MetricsCore

@Suite struct DecimalNumberTests {
    /// Strict JSON parse of the whole string, or nil.
    static func json(_ s: String) -> Double? {
        let bytes = Array(s.utf8)
        guard !bytes.isEmpty else { return nil }
        return bytes.withUnsafeBytes { raw -> Double? in
            var i = 0
            guard let n = DecimalNumber.scanJSON(LineBytes(raw), &i, end: raw.count), i == raw.count else { return nil }
            return n.doubleValue(text: raw)
        }
    }

    /// Line-protocol float parse of the whole string, or nil.
    static func lenient(_ s: String) -> Double? {
        let bytes = Array(s.utf8)
        guard !bytes.isEmpty else { return nil }
        return bytes.withUnsafeBytes { raw -> Double? in
            guard let n = DecimalNumber.scanLenient(LineBytes(raw), from: 0, end: raw.count) else { return nil }
            return n.doubleValue(text: raw)
        }
    }

    static func expectSame(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let mine = json(text)
        let reference = Double(text)
        #expect(mine?.bitPattern == reference?.bitPattern, "\(text): \(String(describing: mine)) vs \(String(describing: reference))", sourceLocation: sourceLocation)
    }

    @Test(arguments: [
        "0", "-0", "0.0", "-0.0", "0e400", "0.1", "0.2", "0.3", "1", "-1", "42.5", "1e22", "1e23", "-1e23",
        "9007199254740992", "9007199254740993", "9007199254740995", "18014398509481985",
        "1e-320", "4.9e-324", "5e-324", "2e-324", "2.4703282292062328e-324", "2.2250738585072014e-308",
        "2.2250738585072011e-308", "1.7976931348623157e308", "1.7976931348623158e308", "1e-22", "1e-23",
        "5e30", "9007199254740991e22", "9007199254740993e22", "123456789012345678", "1234567890123456789",
        "12345678901234567890", "0.1234567890123456789012345", "3.141592653589793238462643383279",
        "1732838400123", "0.000001", "100000000000000000000000", "7.0e-10", "1E2", "1e+2", "1e-0", "1e00022",
        "0.30000000000000004", "2.5e-1", "8.98846567431158e307", "4.4501477170144023e-308",
        "1.00000000000000011102230246251565404236316680908203125",
        "1.00000000000000011102230246251565404236316680908203124",
        "1.00000000000000011102230246251565404236316680908203126",
    ])
    func edgeCasesMatchDoubleString(text: String) {
        Self.expectSame(text)
    }

    @Test func overflowIsInfiniteAndUnderflowIsZero() {
        for text in ["1e309", "1.8e308", "1e400", "123e999999999", "-1e309"] {
            let d = Self.json(text)
            #expect(d?.isInfinite == true, "\(text)")
        }
        #expect(Self.json("-1e309")! < 0)
        #expect(Self.json("1e-400") == 0)
        #expect(Self.json("-1e-400")?.sign == .minus)
        #expect(Self.json("-0")?.sign == .minus)
    }

    @Test func randomDecimalTextsMatchDoubleString() {
        var rng = SplitMix64(seed: 2024)
        let digits = Array("0123456789")
        func digitString(_ count: Int) -> String {
            String((0..<count).map { _ in digits[Int.random(in: 0...9, using: &rng)] })
        }
        for k in 0..<20_000 {
            var s = Bool.random(using: &rng) ? "-" : ""
            let intDigits = [1, 1, 2, 5, 9, 15, 16, 17, 19, 20, 25][k % 11]
            if Int.random(in: 0..<8, using: &rng) == 0 {
                s += "0"
            } else {
                s += String(digits[Int.random(in: 1...9, using: &rng)]) + digitString(intDigits - 1)
            }
            if Bool.random(using: &rng) { s += "." + digitString(Int.random(in: 1...22, using: &rng)) }
            if Int.random(in: 0..<3, using: &rng) > 0 {
                s += Bool.random(using: &rng) ? "e" : "E"
                s += ["", "+", "-"][Int.random(in: 0...2, using: &rng)]
                s += String(Int.random(in: 0...(k % 4 == 0 ? 340 : 25), using: &rng))
            }
            Self.expectSame(s)
        }
    }

    @Test func randomFastPathNumbersMatchDoubleString() {
        // Mantissas below 2^53 with small exponents: the Clinger path.
        var rng = SplitMix64(seed: 77)
        for _ in 0..<20_000 {
            let m = UInt64.random(in: 0...(1 << 53), using: &rng) >> UInt64.random(in: 0...50, using: &rng)
            let e = Int.random(in: -30...30, using: &rng)
            Self.expectSame("\(m)e\(e)")
            var text = String(m)
            let point = Int.random(in: 0..<text.count, using: &rng)
            text.insert(".", at: text.index(text.startIndex, offsetBy: point + 1))
            if text.hasSuffix(".") { text += "0" }
            Self.expectSame(text)
        }
    }

    @Test func randomDoublesRoundTripThroughTheirDescription() {
        var rng = SplitMix64(seed: 99)
        for _ in 0..<20_000 {
            let d = Double(bitPattern: rng.next())
            guard d.isFinite else { continue }
            let text = d.description
            #expect(Self.json(text)?.bitPattern == d.bitPattern, "\(text)")
        }
    }

    @Test func strictGrammarRejectsNonJSONForms() {
        for text in ["01", "1.", ".5", "+1", "-", "1e", "1e+", "--1", "1.e3", "0x1", "1_0", "Infinity", ""] {
            #expect(Self.json(text) == nil, "\(text)")
        }
    }

    @Test func lenientGrammarAcceptsLineProtocolFloats() {
        let cases: [(String, Double)] = [
            ("1", 1), ("-1.5", -1.5), ("1e3", 1000), ("1.5E-3", 0.0015), ("1.", 1), (".5", 0.5), ("+2", 2),
            ("007", 7), ("-.25e1", -2.5), ("1E+2", 100), ("0.1", 0.1),
        ]
        for (text, value) in cases {
            #expect(Self.lenient(text) == value, "\(text)")
        }
        for text in [".", "-", "+", "e3", "1e", "1.5.5", "1,5", "1e3.5", "12i", "abc", "1 "] {
            #expect(Self.lenient(text) == nil, "\(text)")
        }
    }

    @Test func truncatedMagnitudeIsExact() {
        func magnitude(_ s: String) -> UInt64? {
            Array(s.utf8).withUnsafeBytes { raw in
                var i = 0
                return DecimalNumber.scanJSON(LineBytes(raw), &i, end: raw.count)?.truncatedMagnitude()
            }
        }
        #expect(magnitude("1700000000123") == 1_700_000_000_123)
        #expect(magnitude("1700000000123.9999999999999999999") == 1_700_000_000_123)
        #expect(magnitude("1.7e12") == 1_700_000_000_000)
        #expect(magnitude("17000000001230e-1") == 1_700_000_000_123)
        #expect(magnitude("0.999") == 0)
        #expect(magnitude("1e18") == nil)
        #expect(magnitude("999999999999999999") == 999_999_999_999_999_999)
        #expect(magnitude("1e-30") == 0)
    }
}
