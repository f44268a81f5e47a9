import Glibc
import Synchronization
import Testing
import XenLinux
import XenStore

/// A fake xenbus device: the far end of a SOCK_SEQPACKET pair, served by XenStore's
/// in-memory engine on its own thread. It records every packet (one per write(2) the
/// transport made) and writes each reply in two pieces, so the client must reassemble.
private final class FakeXenbusDevice: @unchecked Sendable {
    // SAFETY: `engine` is touched only by the peer thread; `packets` is behind its Mutex.
    let fd: Int32
    let packets = Mutex<[[UInt8]]>([])
    private var thread: PeerThread?

    init(fd: Int32, domid: UInt16) {
        self.fd = fd
        thread = PeerThread { [self] in serve(domid: domid) }
    }

    private func serve(domid: UInt16) {
        let engine = XenStoreEngine()
        _ = engine.introduceDomain(domid)
        let tool = engine.openConnection(identity: .tool)
        // As a toolstack does: the domain's home and its domid key, owned by the domain.
        let home = "/local/domain/\(domid)"
        engine.receive(tool, xsMessage(type: XSDSockmsgType.write.rawValue, requestID: 1,
                                       payload: Array("\(home)/domid\0\(domid)".utf8)))
        for (id, path) in [(2, home), (3, home + "/domid")] {
            engine.receive(tool, xsMessage(type: XSDSockmsgType.setPerms.rawValue, requestID: UInt32(id),
                                           payload: Array("\(path)\0n\(domid)\0".utf8)))
        }
        _ = engine.process(tool, limit: 10)
        let me = engine.openConnection(identity: .domain(domid))
        while let packet = receivePacket(fd) {
            packets.withLock { $0.append(packet) }
            engine.receive(me, packet)
            guard case .idle = engine.process(me, limit: 100) else { break }
            // A write that was not exactly one message would leave bytes in the engine.
            while let reply = engine.popOutput(me) {
                let cut = reply.count / 2 + 1
                for piece in [reply[..<cut], reply[cut...]] where !piece.isEmpty {
                    _ = piece.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                }
            }
        }
        shutdown(fd, Int32(SHUT_RDWR))
    }

    /// Stops the peer thread (shutting our end down ends its recv) and closes.
    func finish() {
        shutdown(fd, Int32(SHUT_RDWR))
        thread?.join()
        thread = nil
        Glibc.close(fd)
    }
}

@Suite struct XenbusDeviceTransportTests {
    @Test func eachMessageGoesInItsOwnWrite() throws {
        let (ours, device) = seqpacketPair()
        defer { Glibc.close(device) }
        let transport = try XenbusDeviceTransport(adopting: ours, name: "fake xenbus")
        let first = xsMessage(type: XSDSockmsgType.read.rawValue, requestID: 1, payload: Array("domid\0".utf8))
        let second = xsMessage(type: XSDSockmsgType.directory.rawValue, requestID: 2, transactionID: 9, payload: Array("device\0".utf8))
        try transport.send(first + second)
        #expect(pollPacket(device) == first)
        #expect(pollPacket(device) == second)
        #expect(pollPacket(device) == nil)
    }

    @Test func aMessageSplitAcrossSendsIsWrittenOnceWhole() throws {
        let (ours, device) = seqpacketPair()
        defer { Glibc.close(device) }
        let transport = try XenbusDeviceTransport(adopting: ours, name: "fake xenbus")
        let message = xsMessage(type: XSDSockmsgType.write.rawValue, requestID: 3, payload: Array("data/x\0value".utf8))
        let next = xsMessage(type: XSDSockmsgType.read.rawValue, requestID: 4, payload: Array("data/x\0".utf8))
        try transport.send(Array(message[..<10]))
        #expect(pollPacket(device) == nil)
        try transport.send(Array(message[10..<20]))
        #expect(pollPacket(device) == nil)
        try transport.send(Array(message[20...]) + Array(next[..<5]))
        #expect(pollPacket(device) == message)
        #expect(pollPacket(device) == nil)
        try transport.send(Array(next[5...]))
        #expect(pollPacket(device) == next)
    }

    @Test func aMessageLargerThanTheDeviceBufferIsRefusedBeforeWriting() throws {
        let (ours, device) = seqpacketPair()
        defer { Glibc.close(device) }
        let transport = try XenbusDeviceTransport(adopting: ours, name: "fake xenbus")
        let limit = XenbusDeviceTransport.maxMessageBytes - 16
        let largest = xsMessage(type: XSDSockmsgType.write.rawValue, requestID: 1, payload: [UInt8](repeating: 0x61, count: limit))
        try transport.send(largest)
        #expect(pollPacket(device)?.count == XenbusDeviceTransport.maxMessageBytes)
        let tooLong = xsMessage(type: XSDSockmsgType.write.rawValue, requestID: 2, payload: [UInt8](repeating: 0x61, count: limit + 1))
        #expect(throws: XenStoreError.payloadTooLong(length: UInt32(limit + 1), limit: limit)) {
            try transport.send(tooLong)
        }
        #expect(pollPacket(device) == nil)
        // The refused message is dropped whole; the next one goes out on its own.
        let next = xsMessage(type: XSDSockmsgType.read.rawValue, requestID: 3, payload: Array("domid\0".utf8))
        try transport.send(next)
        #expect(pollPacket(device) == next)
    }

    @Test func closeEndsABlockedReceive() throws {
        let (ours, device) = seqpacketPair()
        defer { Glibc.close(device) }
        let transport = try XenbusDeviceTransport(adopting: ours, name: "fake xenbus")
        let result = Mutex<Int?>(nil)
        let reader = PeerThread {
            var buffer = [UInt8](repeating: 0, count: 64)
            let n = buffer.withUnsafeMutableBytes { try? transport.receive(into: $0) }
            result.withLock { $0 = n }
        }
        transport.close()
        reader.join()
        #expect(result.withLock { $0 } == 0)
        #expect(throws: XenStoreError.connectionClosed) {
            try transport.send(xsMessage(type: XSDSockmsgType.read.rawValue, requestID: 1, payload: [0]))
        }
        transport.close()
    }

    @Test func theDeviceEndingIsEndOfStream() throws {
        let (ours, device) = seqpacketPair()
        let transport = try XenbusDeviceTransport(adopting: ours, name: "fake xenbus")
        let reply = xsMessage(type: XSDSockmsgType.read.rawValue, requestID: 1, payload: Array("0".utf8))
        _ = reply.withUnsafeBytes { send(device, $0.baseAddress, $0.count, 0) }
        Glibc.close(device)
        var buffer = [UInt8](repeating: 0, count: 64)
        let first = try buffer.withUnsafeMutableBytes { try transport.receive(into: $0) }
        #expect(Array(buffer[..<first]) == reply)
        #expect(try buffer.withUnsafeMutableBytes { try transport.receive(into: $0) } == 0)
    }

    @Test func anOpenOfAMissingDeviceNamesItAndErrno() {
        #expect(throws: XenStoreError.systemCall("open(/nonexistent/xen/xenbus)", errno: ENOENT)) {
            try XenbusDeviceTransport(path: "/nonexistent/xen/xenbus")
        }
    }

    @Test func theXenStoreClientWorksThroughTheDevice() async throws {
        let (ours, device) = seqpacketPair()
        let fake = FakeXenbusDevice(fd: device, domid: 7)
        let client = try XenStoreClient(transport: XenbusDeviceTransport(adopting: ours, name: "fake xenbus"))
        let domid = try await client.read("domid")
        #expect(try LinuxPlatform.parseDomainID(domid) == 7)
        let watch = try await client.watch("data")
        var events = watch.makeAsyncIterator()
        #expect(await events.next()?.path == "data")
        try await client.write("data/k", "v")
        #expect(await events.next()?.path == "data/k")
        #expect(try await client.readString("data/k") == "v")
        let id = try await client.transactionStart()
        try await client.write("data/t", "in-transaction", transaction: id)
        try await client.transactionEnd(id, commit: true)
        #expect(try await client.readString("data/t") == "in-transaction")
        client.close()
        fake.finish()
        // Every packet the device saw was one whole message.
        for packet in fake.packets.withLock({ $0 }) {
            let header = try XSDSockmsgHeader(decoding: packet[...])
            #expect(packet.count == 16 + Int(header.length))
        }
        #expect(fake.packets.withLock { $0.count } >= 7)
    }
}
