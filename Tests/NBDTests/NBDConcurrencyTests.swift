import Glibc
import Testing
@testable import NBD

/// An export that keeps every submitted command until the test answers it, in whatever
/// order the test likes: it shows what the server has handed over at any moment.
final class GatedExport: NBDExport, @unchecked Sendable {
    // @unchecked: `state` is an NBDLock.
    struct Pending: @unchecked Sendable {
        let command: NBDExportCommand
        let completion: NBDExportCompletion
    }
    struct State {
        var pending: [Pending] = []
        var submitted = 0
        /// Most commands held at once.
        var peak = 0
        /// Most read and write bytes held at once by two or more commands.
        var peakSharedBytes = 0
    }

    let size: UInt64 = 4 << 20
    let blockSizes = try! NBDBlockSizes(minimum: 512, preferred: 4096, maximum: 256 << 10)
    let isReadOnly = false
    let features: NBDExportFeatures = [.flush, .fua]
    let state = NBDLock(State())

    func submit(_ command: NBDExportCommand, completion: @escaping NBDExportCompletion) {
        state.withLock { s in
            s.pending.append(Pending(command: command, completion: completion))
            s.submitted += 1
            s.peak = max(s.peak, s.pending.count)
            let bytes = s.pending.reduce(0) { total, item in
                switch item.command {
                case let .read(_, length): return total + length
                case let .write(_, data, _): return total + data.count
                default: return total
                }
            }
            if s.pending.count > 1 { s.peakSharedBytes = max(s.peakSharedBytes, bytes) }
        }
    }

    var pendingCount: Int { state.withLock { $0.pending.count } }
    var peak: Int { state.withLock { $0.peak } }
    var submitted: Int { state.withLock { $0.submitted } }

    /// Answers the command held at `index`: a read gets bytes naming its offset.
    func answer(at index: Int, error: NBDError? = nil) {
        let item = state.withLock { $0.pending.remove(at: index) }
        if let error {
            item.completion(.failure(error))
        } else if case let .read(offset, length) = item.command {
            item.completion(.success(Self.bytes(offset: offset, length: length)))
        } else {
            item.completion(.success([]))
        }
    }

    /// Answers everything held, newest first.
    func answerAllNewestFirst() {
        while pendingCount > 0 { answer(at: pendingCount - 1) }
    }

    static func bytes(offset: UInt64, length: Int) -> [UInt8] {
        (0 ..< length).map { UInt8(truncatingIfNeeded: (offset >> 9) &+ UInt64($0 / 512)) }
    }

    // The server only calls submit; these are here for the protocol.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(NBDError) { throw .exportIO(call: "read", errno: EIO) }
    func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64, fua: Bool) throws(NBDError) { throw .exportIO(call: "write", errno: EIO) }
    func flush() throws(NBDError) { throw .exportIO(call: "flush", errno: EIO) }
    func trim(at offset: UInt64, length: UInt64, fua: Bool) throws(NBDError) { throw .exportIO(call: "trim", errno: EIO) }
    func writeZeroes(at offset: UInt64, length: UInt64, mayPunchHole: Bool, fua: Bool) throws(NBDError) {
        throw .exportIO(call: "writeZeroes", errno: EIO)
    }
}

struct NotYet: Error, CustomStringConvertible { let description: String }

/// Polls `condition` every millisecond; a bound that turns a hang into a failure.
func waitUntil(_ what: String, seconds: Int = 20, _ condition: () -> Bool) throws {
    for _ in 0 ..< seconds * 1000 {
        if condition() { return }
        usleep(1000)
    }
    throw NotYet(description: "\(what): not after \(seconds) s")
}

@Suite struct NBDConcurrencyTests {
    /// Twenty requests are all with the export at once, and their replies come back in
    /// the order the export answers them (the reverse of sending), each whole and with
    /// its own cookie and data.
    @Test func requestsAreInFlightTogetherAndRepliesComeBackOutOfOrder() throws {
        let export = GatedExport()
        try withServer(export) { _, address, _ in
            let client = try NBDTestClient(address)
            _ = try client.connect()
            var expected: [UInt64: (NBDCommand, UInt64)] = [:]
            for i in 0 ..< 20 {
                let cookie = UInt64(100 + i)
                let offset = UInt64(i) * 8192
                if i % 5 == 4 {
                    try client.sendRequest(.write, cookie: cookie, offset: offset, length: 4096,
                                           payload: [UInt8](repeating: UInt8(i), count: 4096))
                    expected[cookie] = (.write, offset)
                } else {
                    try client.sendRequest(.read, cookie: cookie, offset: offset, length: 4096)
                    expected[cookie] = (.read, offset)
                }
            }
            try waitUntil("all 20 requests reach the export") { export.pendingCount == 20 }
            // The writes' payloads arrived intact.
            let writes = export.state.withLock { s in
                s.pending.compactMap { item -> (UInt64, [UInt8])? in
                    if case let .write(offset, data, _) = item.command { return (offset, data) }
                    return nil
                }
            }
            #expect(writes.count == 4)
            for (offset, data) in writes {
                #expect(data == [UInt8](repeating: UInt8(offset / 8192), count: 4096))
            }
            export.answerAllNewestFirst()
            var order: [UInt64] = []
            for _ in 0 ..< 20 {
                let reply = try client.readReply()
                #expect(reply.error == .success)
                let entry = expected.removeValue(forKey: reply.cookie)
                let (command, offset) = try #require(entry, "cookie \(reply.cookie) once")
                if command == .read {
                    #expect(try client.receive(4096) == GatedExport.bytes(offset: offset, length: 4096))
                }
                order.append(reply.cookie)
            }
            #expect(order == (100 ..< 120).reversed().map { UInt64($0) })
            try client.sendRequest(.disconnect, offset: 0, length: 0)
            #expect(client.isClosedByServer())
        }
    }

    /// With room for 4 requests the server reads no fifth until one is answered; with
    /// room for 64 KiB, two 32 KiB reads fill it, and a read larger than the whole room
    /// is still served once nothing else is held.
    @Test func theConnectionsLimitsHoldTheReaderBack() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let export = GatedExport()
        let server = NBDServer(export: export, maximumRequestsPerClient: 4, maximumBufferedBytesPerClient: 64 << 10)
        let address = try server.start(listeningOn: .unix(path: directory.path + "/nbd.sock"))
        defer { server.stop() }
        let client = try NBDTestClient(address)
        _ = try client.connect()
        for i in 0 ..< 10 { try client.sendRequest(.flush, cookie: UInt64(i), offset: 0, length: 0) }
        try waitUntil("four flushes reach the export") { export.pendingCount == 4 }
        export.answer(at: 0)
        _ = try client.readReply()
        try waitUntil("a fifth follows the first answer") { export.submitted == 5 }
        while export.submitted < 10 || export.pendingCount > 0 {
            if export.pendingCount > 0 { export.answer(at: 0) } else { usleep(1000) }
        }
        for _ in 1 ..< 10 { #expect(try client.readReply().error == .success) }
        #expect(export.peak == 4, "never more than four at once")

        let before = export.submitted
        for i in 0 ..< 3 { try client.sendRequest(.read, cookie: UInt64(50 + i), offset: UInt64(i) << 15, length: 32 << 10) }
        try client.sendRequest(.read, cookie: 60, offset: 1 << 20, length: 128 << 10)
        try waitUntil("two 32 KiB reads fill 64 KiB") { export.submitted == before + 2 }
        export.answer(at: 0)
        _ = try client.readReply()
        _ = try client.receive(32 << 10)
        try waitUntil("the third read follows") { export.submitted == before + 3 }
        export.answer(at: 0)
        export.answer(at: 0)
        for _ in 0 ..< 2 {
            _ = try client.readReply()
            _ = try client.receive(32 << 10)
        }
        try waitUntil("the 128 KiB read, alone") { export.submitted == before + 4 }
        export.answer(at: 0)
        let big = try client.readReply()
        #expect(big.cookie == 60 && big.error == .success)
        #expect(try client.receive(128 << 10) == GatedExport.bytes(offset: 1 << 20, length: 128 << 10))
        #expect(export.state.withLock { $0.peakSharedBytes } == 64 << 10, "never more than 64 KiB held by several")
    }

    /// NBD_CMD_DISC with requests still in the export: each is answered, then the server
    /// closes the connection.
    @Test func disconnectAnswersWhatIsInFlightFirst() throws {
        let export = GatedExport()
        try withServer(export) { server, address, _ in
            let client = try NBDTestClient(address)
            _ = try client.connect()
            for i in 0 ..< 3 { try client.sendRequest(.read, cookie: UInt64(i), offset: UInt64(i) * 512, length: 512) }
            try client.sendRequest(.disconnect, cookie: 9, offset: 0, length: 0)
            try waitUntil("three reads in the export") { export.pendingCount == 3 }
            #expect(server.clientCount == 1, "the connection waits for its answers")
            export.answer(at: 1, error: .exportIO(call: "read", errno: EIO))
            export.answerAllNewestFirst()
            var cookies: [UInt64] = []
            for _ in 0 ..< 3 {
                let reply = try client.readReply()
                cookies.append(reply.cookie)
                if reply.error == .success {
                    #expect(try client.receive(512) == GatedExport.bytes(offset: reply.cookie * 512, length: 512))
                } else {
                    #expect(reply.cookie == 1 && reply.error == .io)
                }
            }
            #expect(cookies == [1, 2, 0])
            #expect(client.isClosedByServer())
            try waitUntil("the client is gone") { server.clientCount == 0 }
        }
    }

    /// A client that vanishes, and a server that stops, with requests in the export: the
    /// connection ends at once; the answers that come later are dropped without harm.
    @Test func vanishingClientsAndStoppingServersDropWhatIsInFlight() throws {
        let export = GatedExport()
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let server = NBDServer(export: export)
        let address = try server.start(listeningOn: .unix(path: directory.path + "/nbd.sock"))
        do {
            let client = try NBDTestClient(address)
            _ = try client.connect()
            for i in 0 ..< 5 { try client.sendRequest(.read, cookie: UInt64(i), offset: 0, length: 4096) }
            try waitUntil("five reads in the export") { export.pendingCount == 5 }
            client.socket.close()
            try waitUntil("the vanished client's connection ends") { server.clientCount == 0 }
            export.answerAllNewestFirst()
        }
        let client = try NBDTestClient(address)
        _ = try client.connect()
        for i in 0 ..< 5 { try client.sendRequest(.write, cookie: UInt64(i), offset: 0, length: 512, payload: [UInt8](repeating: 1, count: 512)) }
        try waitUntil("five writes in the export") { export.pendingCount == 5 }
        // The export never answers before stop(); stop returns anyway.
        server.stop()
        #expect(server.clientCount == 0)
        #expect(client.isClosedByServer())
        export.answerAllNewestFirst()
    }

    /// Requests the server refuses (past the end, too large, unknown command) get their
    /// errors in the same reply stream as the ones in flight, and the connection lives on.
    @Test func refusalsMixWithRequestsInFlight() throws {
        let export = GatedExport()
        try withServer(export) { _, address, _ in
            let client = try NBDTestClient(address)
            _ = try client.connect()
            try client.sendRequest(.read, cookie: 1, offset: 0, length: 512)
            try client.sendRequest(.read, cookie: 2, offset: export.size, length: 512)
            try client.sendRequest(.write, cookie: 3, offset: 0, length: 512 << 10, payload: [UInt8](repeating: 7, count: 512 << 10))
            try client.sendRequest(NBDCommand(rawValue: 77), cookie: 4, offset: 0, length: 0)
            var errors: [UInt64: NBDErrno] = [:]
            for _ in 0 ..< 3 {
                let reply = try client.readReply()
                errors[reply.cookie] = reply.error
            }
            #expect(errors == [2: .invalid, 3: .invalid, 4: .invalid])
            #expect(export.pendingCount == 1)
            export.answer(at: 0)
            let reply = try client.readReply()
            #expect(reply.cookie == 1 && reply.error == .success)
            #expect(try client.receive(512) == GatedExport.bytes(offset: 0, length: 512))
        }
    }
}
