import Foundation
import Glibc
import SharedMemory
import Testing
import XenRing
@testable import XenStore

/// A one-way notification channel over a pipe: `notify` makes the read end readable.
final class PipeChannel: @unchecked Sendable {
    let readFD: Int32
    let writeFD: Int32
    init() {
        var fds: [Int32] = [-1, -1]
        precondition(pipe(&fds) == 0)
        readFD = fds[0]
        writeFD = fds[1]
    }
    deinit {
        Glibc.close(readFD)
        Glibc.close(writeFD)
    }
    func notify() {
        var b: UInt8 = 1
        _ = Glibc.write(writeFD, &b, 1)
    }
    /// Blocks until notified; false once the channel is shut.
    func wait() -> Bool {
        var buffer = [UInt8](repeating: 0, count: 64)
        return buffer.withUnsafeMutableBytes { Glibc.read(readFD, $0.baseAddress, 64) } > 0 && !shut.isSet
    }
    let shut = Flag()
    func shutDown() {
        shut.set()
        notify()
    }
}

/// A guest connected to `server` through a xenstore ring page, as domain `domid`.
struct RingGuest {
    let region: MemoryRegion
    let interface: XenstoreRingInterface
    let toServer = PipeChannel()
    let toGuest = PipeChannel()
    let client: XenStoreClient

    init(server: XenStoreServer, domid: UInt16) throws {
        region = try MemoryRegion.anonymous(pages: 1)
        interface = try XenstoreRingInterface(memory: region.view)
        let toServer = self.toServer, toGuest = self.toGuest
        server.attach(ring: XenStoreRingEndpoint(interface: interface, eventFileDescriptor: toServer.readFD,
                                                 memoryOwner: region, notify: { toGuest.notify() }), domid: domid)
        client = try XenStoreClient(transport: XenStoreRingTransport(
            interface: interface, memoryOwner: region, notify: { toServer.notify() }, wait: { toGuest.wait() }))
    }

    func close() {
        toGuest.shutDown()
        client.close()
    }
}

@Suite struct RingTransportTests {
    @Test func clientOverARingBetweenThreads() async throws {
        try await withServer("ring") { server, socket in
            let dom0 = try XenStoreClient(socketPath: socket)
            defer { dom0.close() }
            try await dom0.mkdir("/local/domain/3")
            try await dom0.setPermissions("/local/domain/3", [.init(domid: 3, access: .none)])
            let guest = try RingGuest(server: server, domid: 3)
            defer { guest.close() }
            let client = guest.client
            try await client.write("name", "guest3")
            #expect(try await dom0.readString("/local/domain/3/name") == "guest3")
            // Values larger than the 1024-byte ring (and within the entry quota) wrap around it
            // in both directions.
            let big = (0 ..< 1900).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            try await client.write("big", big)
            #expect(try await client.read("big") == big)
            #expect(try await dom0.read("/local/domain/3/big") == big)
            // Many concurrent requests share the ring.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0 ..< 16 {
                    group.addTask {
                        for j in 0 ..< 20 {
                            try await client.write("c/\(i)/\(j)", "\(i * j)")
                            #expect(try await client.readString("c/\(i)/\(j)") == "\(i * j)")
                        }
                    }
                }
                try await group.waitForAll()
            }
            #expect(try await client.directory("c").count == 16)
            // Watches with relative paths, transactions with retry, denials.
            let watch = try await client.watch("device")
            var events = watch.makeAsyncIterator()
            #expect(await events.next()?.path == "device")
            try await dom0.write("/local/domain/3/device/vbd/768/state", "1")
            #expect(await events.next()?.path == "device/vbd/768/state")
            let total = try await client.withTransaction { tx in
                try await tx.write("tx/a", "1")
                try await tx.write("tx/b", "2")
                return try await tx.directory("tx").count
            }
            #expect(total == 2)
            await #expect(throws: XenStoreError.daemon(.eacces)) { try await client.read("/tool") }
            // Releasing the domain closes its ring connection; the socket client stays.
            try await dom0.introduce(domid: 3, mfn: 0x1234, port: 5)
            try await dom0.release(domid: 3)
            #expect(await server.withEngine { $0.connectionCount } == 1)
        }
    }

    @Test func corruptRingIndicesDropOnlyThatGuest() async throws {
        try await withServer("ringbad") { server, socket in
            let dom0 = try XenStoreClient(socketPath: socket)
            defer { dom0.close() }
            let region = try MemoryRegion.anonymous(pages: 1)
            let interface = try XenstoreRingInterface(memory: region.view)
            let toServer = PipeChannel()
            let toGuest = PipeChannel()
            server.attach(ring: XenStoreRingEndpoint(interface: interface, eventFileDescriptor: toServer.readFD,
                                                     memoryOwner: region, notify: { toGuest.notify() }), domid: 4)
            // The guest claims 5000 bytes in a 1024-byte ring.
            region.view.atomicStore32(5000, at: XenstoreRingInterface.Layout.requestProducer, ordering: .releasing)
            toServer.notify()
            #expect(toGuest.wait())
            #expect(interface.errorRaw == XenstoreRingInterface.RingErrorCode.ringIndex.rawValue)
            try await dom0.write("/alive", "yes")
            #expect(try await dom0.readString("/alive") == "yes")
            #expect(await server.withEngine { $0.connectionCount } == 1)
        }
    }

    @Test func oversizedMessageOnARingSetsTheProtocolError() async throws {
        try await withServer("ringproto") { server, socket in
            let dom0 = try XenStoreClient(socketPath: socket)
            defer { dom0.close() }
            let region = try MemoryRegion.anonymous(pages: 1)
            let interface = try XenstoreRingInterface(memory: region.view)
            let toServer = PipeChannel()
            let toGuest = PipeChannel()
            server.attach(ring: XenStoreRingEndpoint(interface: interface, eventFileDescriptor: toServer.readFD,
                                                     memoryOwner: region, notify: { toGuest.notify() }), domid: 4)
            var header: [UInt8] = []
            XSDSockmsgHeader(type: 2, requestID: 1, transactionID: 0, length: 5000).encode(into: &header)
            #expect(try header.withUnsafeBytes { try interface.requests.write($0) } == 16)
            toServer.notify()
            while interface.errorRaw == 0 { #expect(toGuest.wait()) }
            #expect(interface.errorRaw == XenstoreRingInterface.RingErrorCode.protocolViolation.rawValue)
            #expect(try await dom0.getDomainPath(1) == "/local/domain/1")
        }
    }
}
