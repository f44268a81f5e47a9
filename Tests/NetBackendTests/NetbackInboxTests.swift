import Glibc
import Testing
import XenPlatform
import XenTesting
@testable import NetBackend

/// The inbox a queue's packets for another queue go through, on its own.
@Suite struct NetbackInboxTests {
    static func readable(_ fd: Int32) -> Bool {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&poller, 1, 0) > 0
    }

    @Test("puts fill the slots in order, the eventfd wakes the owner, a full or closed inbox refuses, a released slot is reused")
    func slots() throws {
        let hypervisor = try InProcessHypervisor()
        let dom0 = try hypervisor.platform(for: .dom0)
        let inbox = try NetbackInbox(mapper: dom0.grantMapper, capacity: 4, stride: 4096)
        #expect(!Self.readable(inbox.eventFD))
        for n in 1...4 {
            let packet = [UInt8](repeating: UInt8(n), count: 100 * n)
            #expect(packet.withUnsafeBytes { inbox.put($0) })
        }
        #expect(Self.readable(inbox.eventFD))
        #expect(![UInt8](repeating: 9, count: 10).withUnsafeBytes { inbox.put($0) }, "full: dropped")
        #expect(![UInt8](repeating: 9, count: 4097).withUnsafeBytes { inbox.put($0) }, "larger than a slot")
        var taken: [(Int, Int)] = []
        inbox.take { slot, length in
            taken.append((slot, length))
            let bytes = UnsafeRawBufferPointer(start: inbox.base(slot), count: length)
            #expect(bytes.allSatisfy { $0 == UInt8(length / 100) })
        }
        #expect(taken.map(\.1) == [100, 200, 300, 400])
        #expect(Set(taken.map(\.0)) == [0, 1, 2, 3])
        #expect(!Self.readable(inbox.eventFD), "taking clears the wake-up")
        // Nothing free until released.
        #expect(![UInt8](repeating: 1, count: 10).withUnsafeBytes { inbox.put($0) })
        inbox.release(taken[2].0)
        #expect([UInt8](repeating: 7, count: 700).withUnsafeBytes { inbox.put($0) })
        #expect(inbox.waiting == 1)
        inbox.close()
        inbox.release(taken[0].0)
        #expect(![UInt8](repeating: 1, count: 10).withUnsafeBytes { inbox.put($0) }, "closed")
        inbox.close()
    }
}
