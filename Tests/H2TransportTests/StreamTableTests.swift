import Testing
@testable import H2Transport

/// `StreamTable` against a dictionary, under the id patterns HTTP/2 clients produce.
@Suite struct StreamTableTests {
    final class S { let id: Int32; init(_ id: Int32) { self.id = id } }

    /// Applies the same operations to the table and a dictionary and compares after each one.
    private func check(_ ops: [(insert: Bool, id: Int32)]) {
        var table = StreamTable<S>()
        var reference: [Int32: S] = [:]
        for op in ops {
            if op.insert {
                let s = S(op.id)
                table.insert(s, for: op.id)
                reference[op.id] = s
            } else {
                #expect(table.removeValue(forKey: op.id) === reference.removeValue(forKey: op.id))
            }
            #expect(table.count == reference.count)
            #expect(table[op.id] === reference[op.id])
        }
        for (id, s) in reference { #expect(table[id] === s) }
        #expect(Set(table.values.map(\.id)) == Set(reference.keys))
    }

    @Test func pipelinedShortStreamsBesideALongLivedOne() {
        // Stream 1 stays open (an SSE or agent stream) while thousands of short requests, up to
        // 100 in flight, open and close: their slots wrap around onto stream 1's.
        var ops: [(Bool, Int32)] = [(true, 1)]
        var open: [Int32] = []
        var next: Int32 = 3
        for _ in 0..<5_000 {
            ops.append((true, next)); open.append(next); next += 2
            if open.count > 100 { ops.append((false, open.removeFirst())) }
        }
        ops.append((false, 1))
        for id in open { ops.append((false, id)) }
        check(ops)
    }

    @Test func randomOpenAndCloseOrder() {
        var rng = SystemRandomNumberGenerator()
        var ops: [(Bool, Int32)] = []
        var open: [Int32] = []
        var next: Int32 = 1
        for _ in 0..<20_000 {
            if open.isEmpty || Int.random(in: 0..<3, using: &rng) > 0 && open.count < 1_500 {
                ops.append((true, next)); open.append(next); next += 2
            } else {
                ops.append((false, open.remove(at: Int.random(in: 0..<open.count, using: &rng))))
            }
            if Int.random(in: 0..<50, using: &rng) == 0 { ops.append((false, next + 40)) }  // never opened
        }
        check(ops)
    }

    @Test func anIDReinsertedAfterItsSlotFreedIsKeptOnce() {
        // 33 shares slot 0 of a 16-slot table with 1: it goes to the overflow; 1 leaves; 33 is
        // inserted again (into the free slot) and must not stay in the overflow as well.
        check([(true, 1), (true, 33), (false, 1), (true, 33), (false, 33), (true, 65), (false, 65)])
    }

    @Test func removeAllForgetsEverything() {
        var table = StreamTable<S>()
        for id in stride(from: Int32(1), to: 200, by: 2) { table.insert(S(id), for: id) }
        table.insert(S(1001), for: 1)  // replaces
        #expect(table.count == 100 && table[1]?.id == 1001)
        table.removeAll()
        #expect(table.isEmpty && table[1] == nil && table.values.isEmpty)
    }
}
