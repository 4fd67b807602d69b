import NIOCore
import Testing
@testable import H2Transport

@Suite struct RequestHeadTests {
    @Test func splitsPathAndQueryAndDecodesParameters() {
        let head = RequestHead(method: "GET", target: "/api/history?server_id=web%2D01&metric_name=cpu+usage&empty&x=%zz", headers: [])
        #expect(head.path == "/api/history")
        #expect(head.queryValue("server_id") == "web-01")
        #expect(head.queryValue("metric_name") == "cpu usage")
        #expect(head.queryValue("empty") == "")
        #expect(head.queryValue("x") == "%zz")  // invalid escapes are kept, not dropped
        #expect(head.queryValue("missing") == nil)
    }

    @Test func headerLookupIsByLowerCaseName() {
        let head = RequestHead(method: "POST", target: "/write", headers: [("x-server-id", "a"), ("content-encoding", "gzip")])
        #expect(head.header("x-server-id") == "a")
        #expect(head.header("content-encoding") == "gzip")
        #expect(head.header("accept") == nil)
    }

    @Test func relativeAndAbsoluteTimesParse() {
        let now: Int64 = 1_000_000_000
        #expect(Router.parseTime("now", now: now) == now)
        #expect(Router.parseTime("-15m", now: now) == now - 900_000)
        #expect(Router.parseTime("-1h", now: now) == now - 3_600_000)
        #expect(Router.parseTime("-2d", now: now) == now - 172_800_000)
        #expect(Router.parseTime("12345", now: now) == 12345)
        #expect(Router.parseTime("-5y", now: now) == nil)
        #expect(Router.parseTime("yesterday", now: now) == nil)
    }

    @Test("asciiContains: ASCII case-insensitive substring, as media types compare")
    func asciiContains() {
        #expect(RequestHead.asciiContains("text/plain; format=influx", "influx"))
        #expect(RequestHead.asciiContains("application/x-INFLUX-line", "influx"))
        #expect(RequestHead.asciiContains("influx", "influx"))
        #expect(!RequestHead.asciiContains("influ", "influx"))
        #expect(!RequestHead.asciiContains("application/x-ndjson", "influx"))
        #expect(!RequestHead.asciiContains("", "influx"))
        #expect(RequestHead.asciiContains("anything", ""))
    }

    @Test("StackText appends literals and integers as String would write them")
    func stackText() {
        let values = [0, 7, 10, 99, 100, -1, -100, 1_234_567, Int.max, Int.min]
        let text = withUnsafeTemporaryAllocation(byteCount: 512, alignment: 1) { raw in
            var t = StackText(raw)
            for v in values {
                t.append("[")
                t.append(v)
                t.append("]")
            }
            return String(decoding: t.written, as: UTF8.self)
        }
        #expect(text == values.map { "[\($0)]" }.joined())
    }

    @Test("request targets split into path and query")
    func targetSplit() {
        let plain = RequestHead(method: "GET", target: "/api/metrics/stream", headers: [])
        #expect(plain.path == "/api/metrics/stream" && plain.query.isEmpty)
        let query = RequestHead(method: "GET", target: "/api/history?server_id=a&metric_name=b", headers: [])
        #expect(query.path == "/api/history" && query.query == "server_id=a&metric_name=b")
        let bare = RequestHead(method: "GET", target: "/x?", headers: [])
        #expect(bare.path == "/x" && bare.query.isEmpty)
        let unicode = RequestHead(method: "GET", target: "/é?ü=1", headers: [])
        #expect(unicode.path == "/é" && unicode.query == "ü=1")
    }
}

