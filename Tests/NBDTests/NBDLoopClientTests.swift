import Foundation
import Glibc
import Testing
@testable import NBD

/// The transmission phase on an export's loop (``NBDLoopClient``): what only that path
/// does. The protocol itself is checked on both paths by ``NBDServerTests``.
@Suite struct NBDLoopClientTests {
    @Test(arguments: [false, true]) func requestsSplitAcrossManySendsAreReassembled(looped: Bool) throws {
        let export = NBDMemoryExport(size: 1 << 20)
        try withServer(export, looped: looped) { address, _ in
            let client = try NBDTestClient(address)
            _ = try client.connect()
            var random = SeededBytes(seed: 0xF4A6)
            // Small and large writes (a large one goes straight into its buffer), each
            // sent in pieces with pauses, so the server sees a header or payload cut short.
            for (index, length) in [4096, 200 << 10, 512].enumerated() {
                let data = random.next(length)
                let wire = NBDRequest(command: .write, cookie: UInt64(index), offset: UInt64(index) << 18,
                                      length: UInt32(length)).encode() + data
                var sent = 0
                for cut in [3, 17, 40, 5000, 70000] where sent < wire.count {
                    let end = min(wire.count, sent + cut)
                    try client.send(Array(wire[sent ..< end]))
                    sent = end
                    usleep(2000)
                }
                if sent < wire.count { try client.send(Array(wire[sent...])) }
                let reply = try client.readReply()
                #expect(reply.cookie == UInt64(index) && reply.error == .success)
                let stored = export.bytes(at: index << 18, count: length) == data
                #expect(stored, "write \(index) of \(length) bytes reached the disk")
            }
        }
    }

    @Test(arguments: [false, true]) func manyPipelinedRequestsAreEachAnsweredOnce(looped: Bool) throws {
        let export = NBDMemoryExport(size: 1 << 20)
        try withServer(export, looped: looped) { address, _ in
            let client = try NBDTestClient(address)
            _ = try client.connect()
            var random = SeededBytes(seed: 0x9191)
            let data = random.next(64 << 10)
            // More than a connection's room and a loop pass's budget, in one send.
            var wire: [UInt8] = []
            for cookie in UInt64(0) ..< 300 {
                let offset = (cookie / 2 % 16) * 4096
                if cookie % 2 == 0 {
                    wire += NBDRequest(command: .write, cookie: cookie, offset: offset, length: 4096).encode()
                    wire += Array(data[Int(offset) ..< Int(offset) + 4096])
                } else {
                    wire += NBDRequest(command: .read, cookie: cookie, offset: offset, length: 4096).encode()
                }
            }
            // Sent from another thread while this one reads the replies, as a client must:
            // the server stops reading once the connection's room is used up.
            nonisolated(unsafe) let sending = client
            let message = wire
            let sender = Thread { try? sending.send(message) }
            sender.start()
            var answered = Set<UInt64>()
            for _ in 0 ..< 300 {
                let reply = try client.readReply()
                #expect(reply.error == .success)
                #expect(answered.insert(reply.cookie).inserted, "cookie \(reply.cookie) answered twice")
                if reply.cookie % 2 == 1 { _ = try client.receive(4096) }
            }
            #expect(answered.count == 300)
            let stored = export.bytes(at: 0, count: 64 << 10) == data
            #expect(stored, "the disk holds what was written")
        }
    }

    @Test func aClientWithRoomForTwoRequestsGetsEveryAnswer() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let export = try NBDLoopServedExport(NBDMemoryExport(size: 1 << 20, contents: [7]))
        defer { export.stop() }
        // Room for two: the answers that free it are sent in the same call that found
        // it full, so that call must read on (nothing else wakes the loop for it).
        let server = NBDServer(export: export, maximumRequestsPerClient: 2)
        let address = try server.start(listeningOn: .unix(path: directory.path + "/s"))
        defer { server.stop() }
        let client = try NBDTestClient(address)
        _ = try client.connect()
        // A hang fails the test instead of stalling the run.
        var limit = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(client.socket.descriptor, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        var wire: [UInt8] = []
        for cookie in UInt64(0) ..< 50 {
            wire += NBDRequest(command: .read, cookie: cookie, offset: cookie * 512, length: 512).encode()
        }
        try client.send(wire)
        var answered = 0
        for _ in 0 ..< 50 {
            guard let reply = try? client.readReply() else { break }
            #expect(reply.error == .success)
            _ = try client.receive(512)
            answered += 1
        }
        #expect(answered == 50)
    }

    @Test func serverStopDropsClientsOnTheLoop() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let export = try NBDLoopServedExport(NBDMemoryExport(size: 4096))
        defer { export.stop() }
        let server = NBDServer(export: export)
        let address = try server.start(listeningOn: .unix(path: directory.path + "/s"))
        let client = try NBDTestClient(address)
        _ = try client.connect()
        #expect(try client.transact(.read, offset: 0, length: 512).error == .success)
        #expect(export.attachedClients == 1)
        server.stop()
        #expect(client.isClosedByServer())
        #expect(export.attachedClients == 0)
        #expect(server.clientCount == 0)
    }

    @Test func aGoneLoopDropsItsClientsAndLaterOnesAreServedOnThreads() throws {
        let export = try NBDLoopServedExport(NBDMemoryExport(size: 4096, contents: [5]))
        try withServer(export) { _, address, _ in
            let early = try NBDTestClient(address)
            _ = try early.connect()
            #expect(try early.transact(.read, offset: 0, length: 1).data == [5])
            export.stop()
            #expect(early.isClosedByServer(), "its loop is gone: dropped, not left hanging")
            let late = try NBDTestClient(address)
            _ = try late.connect()
            #expect(try late.transact(.read, offset: 0, length: 1).data == [5])
            #expect(export.attachedClients == 0)
        }
    }
}
