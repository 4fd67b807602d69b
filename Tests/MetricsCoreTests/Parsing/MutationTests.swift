import Testing
@testable import MetricsCore

/// Randomly damaged input must never crash or read outside a line (debug builds assert on every
/// read), and must still parse the same whatever the chunking.
@Suite struct MutationTests {
    static let interesting: [UInt8] = Array("\"\\{}[]:,=. -+eE0123456789tfnuIN#\r\t".utf8) + [0x00, 0x1F, 0x7F, 0x80, 0xBF, 0xC3, 0xE2, 0xED, 0xF0, 0xF4, 0xFF]

    static func mutate(_ line: [UInt8], using rng: inout SplitMix64) -> [UInt8] {
        var bytes = line
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
            let op = Int.random(in: 0..<4, using: &rng)
            let at = bytes.isEmpty ? 0 : Int.random(in: 0..<bytes.count, using: &rng)
            let b = Bool.random(using: &rng) ? interesting.randomElement(using: &rng)! : UInt8.random(in: 0...255, using: &rng)
            switch op {
            case 0 where !bytes.isEmpty: bytes[at] = b
            case 1: bytes.insert(b, at: at)
            case 2 where !bytes.isEmpty: bytes.remove(at: at)
            default: bytes = Array(bytes[..<at])  // truncate
            }
        }
        return bytes.filter { $0 != 0x0A }
    }

    @Test func damagedNDJSONNeverCrashesAndIsChunkingIndependent() {
        var rng = SplitMix64(seed: 31337)
        let seeds = [
            #"{"server_id":"web-01","metric_name":"cpu_usage","value":42.5,"ts":1732838400123,"labels":{"dc":"eu","n":1.5,"b":true}}"#,
            #"{"metric_name":"m\u00e9\ud83d\ude00","value":-1.5e-3,"x":{"a":[1,{"b":null}]},"labels":{"k\"":"v\\"}}"#,
            #"{"server_id":"s","metric_name":"m","value":12345678901234567890.123e-5}"#,
        ].map { Array($0.utf8) }
        var body: [UInt8] = []
        for _ in 0..<1500 {
            body += Self.mutate(seeds.randomElement(using: &rng)!, using: &rng) + [0x0A]
        }
        let limits = ParseLimits(maxLineLength: 100)
        let whole = parseNDJSON(chunks: [body], defaultServerID: "d", limits: limits)
        #expect(whole.samples.count + whole.rejections.count > 500)
        for _ in 0..<5 {
            let cuts = randomCuts(count: body.count, maxChunk: 97, using: &rng)
            #expect(parseNDJSON(chunks: chunks(body, cuts: cuts), defaultServerID: "d", limits: limits) == whole)
        }
        #expect(whole.samples.allSatisfy { $0.value.isFinite && NameRules.isValidName($0.metricName) && NameRules.isValidName($0.serverID) })
    }

    @Test func damagedLineProtocolNeverCrashesAndIsChunkingIndependent() {
        var rng = SplitMix64(seed: 4242)
        let seeds = [
            "cpu,cpu=cpu-total,host=web-01 usage_user=1.5,usage_system=0.5i,ok=t 1700000000000000000",
            #"my\ m\,x,t\ k=v\,a\=b,host=h s="a \"q\" \\",f=1e3,u=12u -1"#,
            "température,city=Zürich,host=h v=-.5E+2",
        ].map { Array($0.utf8) }
        var body: [UInt8] = []
        for _ in 0..<1500 {
            body += Self.mutate(seeds.randomElement(using: &rng)!, using: &rng) + [0x0A]
        }
        let limits = ParseLimits(maxLineLength: 90)
        let whole = parseLineProtocol(chunks: [body], limits: limits)
        #expect(whole.samples.count + whole.rejections.count > 500)
        for _ in 0..<5 {
            let cuts = randomCuts(count: body.count, maxChunk: 89, using: &rng)
            #expect(parseLineProtocol(chunks: chunks(body, cuts: cuts), limits: limits) == whole)
        }
        #expect(whole.samples.allSatisfy {
            $0.value.isFinite && NameRules.isValidName($0.metricName) && NameRules.isValidName($0.serverID)
        })
    }
}
