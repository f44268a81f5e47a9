import Foundation
import SharedMemory
import Testing
import XenLocal
import XenPlatform
import XenRing
import XenStore

/// The xenstore ring transport end to end between two processes: a domU process shares a
/// xenstore page and offers a port; dom0 maps it and serves it with the hypervisor's
/// xenstored, which applies the domain's permissions.
@Suite struct XenStoreRingTests {
    @Test func aDomUUsesXenStoreOverASharedRing() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let (id, _) = try await fx.createDomain("guest")
        let peer = try PeerProcess(["xenstore-ring", fx.directory, "guest"])
        let ready = try #require(peer.readLine()).split(separator: " ")
        try #require(ready.count == 3 && ready[0] == "READY", "peer said \(ready)")
        let dom0 = try fx.dom0()
        let mapping = try dom0.grantMapper.map([GrantRef(ready[1])!], from: id, writable: true)
        let events = try dom0.openEventChannel()
        let port = try events.bindInterdomain(remote: id, remotePort: EventPort(ready[2])!)
        // xenstored waits on a plain descriptor; relay the event channel into a pipe.
        var pipeFDs: [Int32] = [0, 0]
        #expect(pipe(&pipeFDs) == 0)
        let (readEnd, writeEnd) = (pipeFDs[0], pipeFDs[1])
        // xenstored reads the descriptor empty, so it must not block.
        #expect(fcntl(readEnd, F_SETFL, fcntl(readEnd, F_GETFL) | O_NONBLOCK) == 0)
        let relay = Thread {
            while true {
                var p = pollfd(fd: events.fileDescriptor, events: Int16(POLLIN), revents: 0)
                guard poll(&p, 1, 200) >= 0 else { return }
                if p.revents & Int16(POLLNVAL) != 0 { return }
                while let _ = try? events.pending() {
                    var one: UInt8 = 1
                    if write(writeEnd, &one, 1) < 0 { return }
                }
            }
        }
        relay.start()
        let endpoint = XenStoreRingEndpoint(interface: try XenstoreRingInterface(memory: mapping.view),
                                            eventFileDescriptor: readEnd, memoryOwner: nil,
                                            notify: { try? events.notify(port) })
        fx.hypervisor.xenStoreServer.attach(ring: endpoint, domid: id)
        let line = try #require(peer.readLine())
        #expect(line == "OK over-the-ring ring data/ring true", "peer said: \(line)")
        #expect(peer.waitForExit() == 0)
        // What the guest wrote over the ring is in its home, as seen from dom0's socket.
        let store = try dom0.connectXenStore()
        defer { store.close() }
        #expect(try await store.readString("/local/domain/\(id)/data/ring") == "changed")
        fx.hypervisor.xenStoreServer.detach(domid: id)
        try dom0.grantMapper.unmap(mapping)
        events.close()
        close(writeEnd)
    }
}
