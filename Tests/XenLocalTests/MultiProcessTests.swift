import Foundation
import Testing
import XenLocal
import XenPlatform

/// Separate processes on the local hypervisor: a ring over granted pages with event
/// channels, and what happens when a process dies holding a mapping.
@Suite(.serialized) struct MultiProcessTests {
    @Test func twoProcessesExchangeAMillionRequestsOverAFourPageRing() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let (id, _) = try await fx.createDomain("guest")
        let count = 1_000_000
        let front = try PeerProcess(["ring-front", fx.directory, "guest", "4", "\(count)"])
        let ready = try #require(front.readLine())
        let parts = ready.split(separator: " ")
        try #require(parts.count == 3 && parts[0] == "READY", "frontend said: \(ready)")
        #expect(parts[1].split(separator: ",").count == 4)
        let back = try PeerProcess(["ring-back", fx.directory, "\(id)", String(parts[1]), String(parts[2]), "\(count)"])
        #expect(back.readLine() == "DONE \(count)")
        #expect(front.readLine() == "DONE \(count)")
        #expect(back.waitForExit() == 0)
        #expect(front.waitForExit() == 0)
    }

    @Test func aKilledMapperReleasesItsMappings() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let (id, guest) = try await fx.createDomain("guest")
        let pages = try guest.grantTable.share(pages: 2, with: 0, writable: true)
        let holder = try PeerProcess(["map-and-hold", fx.directory, "\(id)", pages.refs.map(String.init).joined(separator: ",")])
        #expect(holder.readLine() == "MAPPED")
        // The mapper wrote through its mapping into our page.
        #expect(pages.view.load(UInt32.self, at: 0) == 0xFEED)
        #expect(throws: PlatformError.grantBusy(ref: pages.refs[0])) { try guest.grantTable.endAccess(pages) }
        holder.kill()
        // Its death closes its connection; the hypervisor then drops the pins.
        try eventually("end access after the mapper died") { try guest.grantTable.endAccess(pages) }
    }
}
