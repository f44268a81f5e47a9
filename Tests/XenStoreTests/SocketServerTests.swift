import Foundation
import Glibc
import Testing
@testable import XenStore

/// A server on a fresh socket, stopped at the end of `body`.
func withServer<T>(_ name: String, quotas: XenStoreQuotas = XenStoreQuotas(),
                   _ body: (XenStoreServer, String) async throws -> T) async throws -> T {
    let dir = temporaryDirectory(name)
    let path = dir + "/socket"
    let server = try XenStoreServer(quotas: quotas)
    try server.listen(path: path)
    try server.start()
    defer { server.stop() }
    return try await body(server, path)
}

/// A raw blocking socket for sending hand-made bytes.
final class RawSocket {
    let fd: Int32
    init(_ path: String) throws {
        fd = try Syscall.connect(path: path)
    }
    deinit { close(fd) }
    func send(_ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }
    /// Reads one message, or nil at end of stream.
    func receiveMessage() -> XenStoreMessage? {
        var framer = XenStoreMessageFramer()
        var buffer = [UInt8](repeating: 0, count: 1)
        while true {
            if let m = try? framer.next() { return m }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 1, 0) }
            if n <= 0 { return nil }
            framer.append(buffer)
        }
    }
}

@Suite struct SocketServerTests {
    @Test func clientBasicsOverTheSocket() async throws {
        try await withServer("basics") { _, path in
            let client = try XenStoreClient(socketPath: path)
            defer { client.close() }
            try await client.write("/vm/1/name", "one")
            #expect(try await client.readString("/vm/1/name") == "one")
            try await client.mkdir("/vm/1/device")
            #expect(try await client.directory("/vm/1") == ["name", "device"])
            try await client.setPermissions("/vm/1", [.init(domid: 1, access: .none), .init(domid: 2, access: .read)])
            #expect(try await client.getPermissions("/vm/1") == [.init(domid: 1, access: .none), .init(domid: 2, access: .read)])
            try await client.rm("/vm/1/name")
            await #expect(throws: XenStoreError.daemon(.enoent)) { try await client.read("/vm/1/name") }
            #expect(try await client.getDomainPath(4) == "/local/domain/4")
            #expect(try await client.isDomainIntroduced(0))
        }
    }

    @Test func directoryFallsBackToParts() async throws {
        try await withServer("parts") { _, path in
            let client = try XenStoreClient(socketPath: path)
            defer { client.close() }
            let names = (0 ..< 40).map { "child-\(String(repeating: "x", count: 150))-\($0)" }
            for n in names { try await client.mkdir("/wide/\(n)") }
            #expect(try await client.directory("/wide") == names)
        }
    }

    @Test func concurrentTransactionsRetryToTheRightCount() async throws {
        try await withServer("retry") { _, path in
            let setup = try XenStoreClient(socketPath: path)
            defer { setup.close() }
            try await setup.write("/counter", "0")
            let clients = try (0 ..< 4).map { _ in try XenStoreClient(socketPath: path) }
            defer { clients.forEach { $0.close() } }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for client in clients {
                    group.addTask {
                        for _ in 0 ..< 25 {
                            try await client.withTransaction(maxAttempts: 1000) { tx in
                                let n = Int(try await tx.readString("/counter"))!
                                try await tx.write("/counter", "\(n + 1)")
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            #expect(try await setup.readString("/counter") == "100")
        }
    }

    @Test func watchesAsAsyncSequence() async throws {
        try await withServer("watch") { _, path in
            let writer = try XenStoreClient(socketPath: path)
            let watcher = try XenStoreClient(socketPath: path)
            defer { writer.close(); watcher.close() }
            let watch = try await watcher.watch("/w")
            var iterator = watch.makeAsyncIterator()
            #expect(await iterator.next()?.path == "/w")
            for i in 0 ..< 500 { try await writer.write("/w/k\(i % 7)", "\(i)") }
            for i in 0 ..< 500 {
                let event = await iterator.next()
                #expect(event == XenStoreWatchEvent(path: "/w/k\(i % 7)", token: watch.token))
            }
            await #expect(throws: XenStoreError.duplicateWatchToken(watch.token)) {
                _ = try await watcher.watch("/other", token: watch.token)
            }
            try await watch.cancel()
            #expect(await iterator.next() == nil)
        }
    }

    @Test func watchStormFromSeveralWritersReachesEveryWatcher() async throws {
        try await withServer("storm") { _, path in
            let writers = try (0 ..< 4).map { _ in try XenStoreClient(socketPath: path) }
            let watchers = try (0 ..< 4).map { _ in try XenStoreClient(socketPath: path) }
            defer { (writers + watchers).forEach { $0.close() } }
            var iterators: [XenStoreWatch.AsyncIterator] = []
            for w in watchers {
                var it = try await w.watch("/storm").makeAsyncIterator()
                #expect(await it.next()?.path == "/storm")
                iterators.append(it)
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (n, writer) in writers.enumerated() {
                    group.addTask {
                        for i in 0 ..< 250 { try await writer.write("/storm/w\(n)", "\(i)") }
                    }
                }
                try await group.waitForAll()
            }
            for k in iterators.indices {
                var perWriter = [Int](repeating: 0, count: 4)
                for _ in 0 ..< 1000 {
                    guard let event = await iterators[k].next(), let n = Int(event.path.dropFirst("/storm/w".count)) else {
                        Issue.record("watch \(k) ended early")
                        return
                    }
                    perWriter[n] += 1
                }
                #expect(perWriter == [250, 250, 250, 250])
            }
        }
    }

    @Test func malformedClientIsDroppedOthersServed() async throws {
        try await withServer("malformed") { _, path in
            let good = try XenStoreClient(socketPath: path)
            defer { good.close() }
            try await good.write("/keep", "1")
            // A length over the payload limit: the connection is closed.
            let bad = try RawSocket(path)
            var header: [UInt8] = []
            XSDSockmsgHeader(type: 11, requestID: 1, transactionID: 0, length: 100_000).encode(into: &header)
            bad.send(header + [UInt8](repeating: 0x41, count: 64))
            #expect(bad.receiveMessage() == nil)
            // Bad payloads get error replies and the connection lives on.
            let rude = try RawSocket(path)
            rude.send(XenStoreMessage(rawType: 999, requestID: 5, transactionID: 0, payload: []).encoded())
            #expect(rude.receiveMessage()?.payload == XSDErrorCode.enosys.payload)
            rude.send(XenStoreMessage(type: .write, requestID: 6, payload: Array("/no-nul".utf8)).encoded())
            #expect(rude.receiveMessage()?.payload == XSDErrorCode.einval.payload)
            // A truncated header followed by a hang-up leaves nothing behind.
            let quitter = try RawSocket(path)
            quitter.send([11, 0, 0])
            try await good.write("/keep", "2")
            #expect(try await good.readString("/keep") == "2")
        }
    }

    @Test func clientDisconnectingMidTransactionLeavesNothing() async throws {
        try await withServer("midtx") { server, path in
            let quitter = try XenStoreClient(socketPath: path)
            let tx = try await quitter.transactionStart()
            try await quitter.write("/half/applied", "1", transaction: tx)
            quitter.close()
            let other = try XenStoreClient(socketPath: path)
            defer { other.close() }
            await #expect(throws: XenStoreError.daemon(.enoent)) { try await other.read("/half") }
            #expect(await server.withEngine { $0.checkInvariants() } == nil)
        }
    }

    @Test func floodingClientDoesNotStarveOthers() async throws {
        try await withServer("flood") { _, path in
            // The flooder writes thousands of requests and never reads its replies.
            let flooder = try RawSocket(path)
            let message = XenStoreMessage(type: .write, requestID: 1, payload: Array("/flood\0xxxxxxxx".utf8)).encoded()
            let flooding = Task.detached {
                let burst = Array([[UInt8]](repeating: message, count: 1000).joined())
                for _ in 0 ..< 200 {
                    let n = burst.withUnsafeBytes { Glibc.send(flooder.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
                    if n < 0 { break }
                }
            }
            let client = try XenStoreClient(socketPath: path)
            defer { client.close() }
            for i in 0 ..< 200 {
                try await client.write("/polite/\(i % 5)", "\(i)")
                #expect(try await client.readString("/polite/\(i % 5)") == "\(i)")
            }
            await flooding.value
        }
    }

    @Test func socketPathFollowsLibxenstore() async throws {
        #expect(XenStoreSocketTransport.defaultPath(environment: ["XENSTORED_PATH": "/x/s"]) == "/x/s")
        #expect(XenStoreSocketTransport.defaultPath(environment: ["XENSTORED_RUNDIR": "/r"]) == "/r/socket")
        #expect(XenStoreSocketTransport.defaultPath(environment: ["XENSTORED_PATH": "/x/s", "XENSTORED_RUNDIR": "/r"]) == "/x/s")
        #expect(XenStoreSocketTransport.defaultPath(environment: [:]) == "/var/run/xenstored/socket")
    }

    @Test func engineStaysReachableAfterStop() async throws {
        let server = try XenStoreServer()
        try server.start()
        #expect(await server.withEngine { $0.connectionCount } == 0)
        #expect(server.withEngineBlocking { engine in engine.introduceDomain(3) })
        server.stop()
        #expect(server.withEngineBlocking { $0.isIntroduced(3) })
        #expect(await server.withEngine { engine in engine.introduceDomain(4) })
        #expect(await server.withEngine { $0.isIntroduced(4) })
    }

    @Test func identityHookGivesDomainConnections() async throws {
        try await withServer("identity") { server, path in
            let dom0 = try XenStoreClient(socketPath: path)
            defer { dom0.close() }
            try await dom0.mkdir("/local/domain/9")
            try await dom0.setPermissions("/local/domain/9", [.init(domid: 9, access: .none)])
            // The acceptor (here the test, later the local hypervisor) vouches for dom9.
            var pair: [Int32] = [-1, -1]
            #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
            server.attach(fileDescriptor: pair[0], identity: .domain(9))
            let dom9 = try XenStoreClient(transport: FDTransport(fd: pair[1]))
            defer { dom9.close() }
            try await dom9.write("device/vif/0/state", "1")
            #expect(try await dom0.readString("/local/domain/9/device/vif/0/state") == "1")
            await #expect(throws: XenStoreError.daemon(.eacces)) { try await dom9.read("/tool") }
            await #expect(throws: XenStoreError.daemon(.eacces)) { try await dom9.introduce(domid: 3, mfn: 1, port: 1) }
        }
    }
}

/// A transport over an already-connected socket (one end of a socketpair).
final class FDTransport: XenStoreTransport, @unchecked Sendable {
    let fd: Int32
    init(fd: Int32) { self.fd = fd }
    deinit { Glibc.close(fd) }
    func send(_ bytes: [UInt8]) throws(XenStoreError) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw .connectionClosed }
            offset += n
        }
    }
    func receive(into buffer: UnsafeMutableRawBufferPointer) throws(XenStoreError) -> Int {
        max(0, recv(fd, buffer.baseAddress, buffer.count, 0))
    }
    func close() { shutdown(fd, Int32(SHUT_RDWR)) }
}
