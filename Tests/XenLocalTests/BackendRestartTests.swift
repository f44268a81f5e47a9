import Foundation
import SharedMemory
import Testing
import XenLocal
import XenPlatform

/// A backend process that dies leaves its guest's side as it was (event_channel.h: closing
/// one end of an interdomain channel returns the other end to unbound, offered to the
/// same domain): the guest's grants, ring pages and port stay, the dead process's
/// mappings and ports go, and a new process binds the guest's same port again and finds
/// it pending. Each step is checked against the hypervisor's own count (`domain usage`).
@Suite(.serialized) struct BackendRestartTests {
    @Test("a killed backend's replacement binds the guest's same port, and events flow both ways", arguments: 1...3)
    func killedBackendIsReplaced(generations: Int) async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let (id, guest) = try await fx.createDomain("guest")
        let dom0 = try fx.dom0()
        let before = try dom0.domainUsage()
        let pages = try guest.grantTable.share(pages: 2, with: 0, writable: true)
        let events = try guest.openEventChannel()
        defer { events.close() }
        let port = try events.allocateUnbound(remote: 0)
        let refs = pages.refs.map(String.init).joined(separator: ",")
        var asked: UInt32 = 0

        for generation in 1...generations {
            let backend = try PeerProcess(["bind-and-echo", fx.directory, "\(id)", refs, "\(port)"])
            let bound = try #require(backend.readLine())
            #expect(bound.hasPrefix("BOUND "), "generation \(generation): \(bound)")
            let holding = try dom0.domainUsage()
            #expect(holding[0]?.mappingsHeld == (before[0]?.mappingsHeld ?? 0) + 1)
            #expect(holding[0]?.ports == (before[0]?.ports ?? 0) + 1)
            #expect(holding[id]?.pinnedGrants == 2)

            if generation > 1 {
                // Written while no process was bound, with no notification: the new
                // binding starts pending, so the new process looks at the page anyway.
                #expect(try waitForAnswer(asked, pages.view, events, port))
            }
            for _ in 0..<3 {
                asked += 1
                pages.view.store(asked, at: 0)
                try events.notify(port)
                #expect(try waitForAnswer(asked, pages.view, events, port), "generation \(generation), value \(asked)")
            }

            backend.kill()
            // The hypervisor notices the death: the mapping and dom0's port go.
            try eventually("the dead backend's mapping and port released") {
                let now = try dom0.domainUsage()
                guard now[0]?.mappingsHeld == before[0]?.mappingsHeld, now[0]?.ports == before[0]?.ports,
                      now[id]?.pinnedGrants == 0
                else { throw PlatformError.hypervisor("still held: \(now[0].map(String.init(describing:)) ?? "-")") }
            }
            // The guest keeps everything it had.
            let after = try dom0.domainUsage()
            #expect(after[id]?.grantedPages == 2)
            #expect(after[id]?.ports == (before[id]?.ports ?? 0) + 1)
            asked += 1
            pages.view.store(asked, at: 0)
        }

        try events.unbind(port)
        try guest.grantTable.endAccess(pages)
        let end = try dom0.domainUsage()
        for domain in [DomainID(0), id] {
            #expect(end[domain]?.ports == before[domain]?.ports)
            #expect(end[domain]?.grantedPages == before[domain]?.grantedPages)
            #expect(end[domain]?.pinnedGrants == before[domain]?.pinnedGrants)
            #expect(end[domain]?.mappingsHeld == before[domain]?.mappingsHeld)
        }
    }

    @Test("while its binder lives, the guest's port cannot be bound a second time")
    func boundPortRefusesASecondBinder() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let (id, guest) = try await fx.createDomain("guest")
        let pages = try guest.grantTable.share(pages: 1, with: 0, writable: true)
        let events = try guest.openEventChannel()
        defer { events.close() }
        let port = try events.allocateUnbound(remote: 0)
        let backend = try PeerProcess(["bind-and-echo", fx.directory, "\(id)", "\(pages.refs[0])", "\(port)"])
        defer { backend.kill() }
        #expect(backend.readLine()?.hasPrefix("BOUND ") == true)
        let other = try fx.dom0().openEventChannel()
        defer { other.close() }
        #expect(throws: PlatformError.self) { _ = try other.bindInterdomain(remote: id, remotePort: port) }
    }

    /// Waits (bounded) for the backend's echo of `value` at byte 4, taking the guest's
    /// events as they come; true once it is there.
    func waitForAnswer(_ value: UInt32, _ view: SharedView, _ events: any EventChannel, _ port: EventPort) throws -> Bool {
        for _ in 0..<1000 {
            if view.load(UInt32.self, at: 4) == value { return true }
            if let p = try events.pending() { try events.unmask(p) }
            var fds = pollfd(fd: events.fileDescriptor, events: Int16(POLLIN), revents: 0)
            _ = poll(&fds, 1, 10)
        }
        return view.load(UInt32.self, at: 4) == value
    }
}
