import Foundation
import Testing
import XenLocal
import XenPlatform
import XenStore
import XenTesting

/// A guest that goes over its xenstore quotas (Protocols/xenstore-quotas.md, the defaults)
/// through its own socket of the local hypervisor: its writes and watches past the quota
/// are refused with the wire's errors, its connection stays up, and another guest and dom0
/// go on as before.
@Suite struct XenStoreQuotaTests {
    @Test("a guest over its node and watch quotas is refused with ENOSPC and E2BIG; others are not")
    func aGuestOverQuotaIsRefusedAndOthersAreNot() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let (greedyID, greedy) = try await fx.createDomain("greedy")
        let (_, other) = try await fx.createDomain("other")
        let greedyStore = try greedy.connectXenStore()
        defer { greedyStore.close() }
        let otherStore = try other.connectXenStore()
        defer { otherStore.close() }
        let dom0Store = try fx.dom0().connectXenStore()
        defer { dom0Store.close() }
        let quotas = XenStoreQuotas()

        // Nodes, forty a directory so that no directory's record nears the entry-size quota
        // (also ENOSPC) and the refusal is the node count's. The guest also owns its home and
        // what the toolstack gave it, so the refusal comes a little before the quota'th write.
        let node = { (i: Int) in "data/d\(i / 40)/n\(i % 40)" }
        var written = 0
        var refusal: XenStoreError?
        while written <= quotas.nodesPerDomain {
            do {
                try await greedyStore.write(node(written), "x")
                written += 1
            } catch {
                refusal = error
                break
            }
        }
        #expect(refusal == .daemon(.enospc), "after \(written) writes")
        #expect(written > quotas.nodesPerDomain * 9 / 10 && written < quotas.nodesPerDomain, "\(written) writes")
        // Nothing was created by the refused write; what it had stays readable, and its
        // connection is still served.
        await #expect(throws: XenStoreError.daemon(.enoent)) { _ = try await greedyStore.read(node(written)) }
        #expect(try await greedyStore.readString(node(0)) == "x")
        // Xen's own client on the guest's socket is refused the same way.
        let greedySocket = LocalHypervisor.xenStorePath(stateDirectory: fx.directory, domain: "greedy")
        #expect(try xenTool("xenstore-write", ["data/by-xen-tool", "x"], socket: greedySocket).status != 0)
        // Overwriting an existing node creates none, so it is allowed.
        try await greedyStore.write(node(0), "y")
        #expect(try await greedyStore.readString(node(0)) == "y")

        // Watches: the 129th is E2BIG.
        var watches: [XenStoreWatch] = []
        var watchRefusal: XenStoreError?
        while watches.count <= quotas.watchesPerDomain {
            do { watches.append(try await greedyStore.watch(node(watches.count))) } catch {
                watchRefusal = error
                break
            }
        }
        #expect(watchRefusal == .daemon(.e2big))
        #expect(watches.count == quotas.watchesPerDomain)

        // Another guest writes and watches as if nothing happened, and its events come.
        try await otherStore.write("data/fine", "1")
        #expect(try await otherStore.readString("data/fine") == "1")
        let otherWatch = try await otherStore.watch("data/fine")
        var events = otherWatch.makeAsyncIterator()
        #expect(await events.next()?.path == "data/fine") // the initial event
        try await otherStore.write("data/fine", "2")
        #expect(await events.next()?.path == "data/fine")
        // dom0 (the toolstack) is not bound, even under the greedy guest's home, where its
        // new nodes inherit the guest as owner and so take the guest further over.
        for i in 0 ..< 8 { try await dom0Store.write("/local/domain/\(greedyID)/toolstack/k\(i)", "v") }
        await #expect(throws: XenStoreError.daemon(.enospc)) { try await greedyStore.write("data/still-full", "x") }
        try await dom0Store.rm("/local/domain/\(greedyID)/toolstack")

        // The greedy guest's own watches still fire, and freeing nodes lets it write again.
        var first = watches[0].makeAsyncIterator()
        #expect(await first.next()?.path == node(0)) // the initial event
        try await dom0Store.write("/local/domain/\(greedyID)/" + node(0), "from dom0")
        #expect(await first.next()?.path == node(0))
        try await greedyStore.rm("data/d1")
        try await greedyStore.write("data/again", "x")
        #expect(try await greedyStore.readString("data/again") == "x")
        #expect(try xenTool("xenstore-write", ["data/by-xen-tool", "x"], socket: greedySocket).status == 0)
    }
}
