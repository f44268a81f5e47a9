import Testing
@testable import NBD

/// ``NBDInFlight``'s spare buffers: large payload and read buffers come back for reuse
/// once their reply is sent, within the connection's byte limit.
@Suite struct NBDInFlightTests {
    static func reply(data: [UInt8] = [], spare: [UInt8] = []) -> NBDInFlight.Reply {
        NBDInFlight.Reply(error: .success, cookie: 1, data: data, bytes: max(data.count, spare.count), spare: spare)
    }

    /// Sends `replies` through the writer's side: admitted, completed, taken, sent.
    static func send(_ replies: [NBDInFlight.Reply], through inFlight: NBDInFlight) {
        var batch: [NBDInFlight.Reply] = []
        for reply in replies {
            #expect(inFlight.reserve(bytes: reply.bytes))
            inFlight.complete(reply)
        }
        #expect(inFlight.takeReplies(into: &batch))
        #expect(batch.count == replies.count)
        inFlight.sent(&batch)
        #expect(batch.isEmpty)
    }

    @Test func sentBuffersComeBackByExactSize() {
        let inFlight = NBDInFlight(maximumRequests: 8, maximumBytes: 8 << 20)
        let big = NBDInFlight.spareMinimum
        #expect(inFlight.takeSpare(count: big) == nil, "nothing kept yet")
        Self.send([Self.reply(data: [UInt8](repeating: 1, count: big)),
                   Self.reply(spare: [UInt8](repeating: 2, count: big * 2)),
                   Self.reply(data: [UInt8](repeating: 3, count: big - 512))], through: inFlight)
        #expect(inFlight.takeSpare(count: big - 512) == nil, "small buffers are not kept")
        #expect(inFlight.takeSpare(count: big)?.first == 1, "a read's data")
        #expect(inFlight.takeSpare(count: big * 2)?.first == 2, "a write's payload")
        #expect(inFlight.takeSpare(count: big) == nil, "each is handed out once")
    }

    @Test func sparesStayWithinTheByteLimit() {
        let size = NBDInFlight.spareMinimum
        let inFlight = NBDInFlight(maximumRequests: 64, maximumBytes: size * 3)
        // One at a time, as the byte limit admits no more.
        for index in 0 ..< 5 {
            Self.send([Self.reply(data: [UInt8](repeating: UInt8(index), count: size))], through: inFlight)
        }
        var kept: [UInt8] = []
        while let spare = inFlight.takeSpare(count: size) { kept.append(spare[0]) }
        #expect(kept == [2, 3, 4], "the newest three, as three fill the limit")
    }

    @Test func anAbortedConnectionKeepsNothing() {
        let size = NBDInFlight.spareMinimum
        let inFlight = NBDInFlight(maximumRequests: 4, maximumBytes: 1 << 20)
        #expect(inFlight.reserve(bytes: size))
        inFlight.complete(Self.reply(data: [UInt8](repeating: 9, count: size)))
        var batch: [NBDInFlight.Reply] = []
        #expect(inFlight.takeReplies(into: &batch))
        inFlight.abort()
        inFlight.sent(&batch)
        #expect(inFlight.takeSpare(count: size) == nil)
    }
}
