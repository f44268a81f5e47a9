import Glibc
import Testing
import XenLocal
import XenPlatform
import XenTesting

/// The event-channel semantics every platform shares (Protocols/local-hypervisor.md, "Event
/// channels", and event_channel.h), run the same way on the local hypervisor and on the
/// in-process double, so the double cannot drift from the real thing: a new binding
/// starts pending, notifications before the receiver looks are one event, an event sent
/// between pending() and unmask() is not lost, the descriptor is readable exactly while
/// something is pending, and closing one end lets a restarted peer bind again.
@Suite("one event-channel contract on the local hypervisor and the in-process double", .serialized)
struct EventChannelContractTests {
    /// The local hypervisor never masks (unmask is a no-op); Linux's evtchn driver, which
    /// XenLinux runs on, masks a port when it delivers it until unmask; the double does
    /// either. Code written to the contract works under both.
    enum Kind: String, CaseIterable, CustomStringConvertible {
        case local, inProcess, inProcessMasking
        var description: String { rawValue }
    }

    /// Two domains' platforms on one hypervisor of `kind`, and what stops it.
    final class World: @unchecked Sendable {
        let dom0: any Platform
        let guest: any Platform
        let guestID: DomainID
        let stop: () -> Void

        init(_ kind: Kind) async throws {
            switch kind {
            case .local:
                let fixture = try HypervisorFixture()
                let (id, guest) = try await fixture.createDomain("contract")
                dom0 = try fixture.dom0()
                self.guest = guest
                guestID = id
                stop = { fixture.stop() }
            case .inProcess, .inProcessMasking:
                var configuration = InProcessHypervisor.Configuration()
                configuration.masksDeliveredPorts = kind == .inProcessMasking
                let hypervisor = try InProcessHypervisor(configuration: configuration)
                let id = try hypervisor.createDomain(name: "contract")
                dom0 = try hypervisor.platform(for: .dom0)
                guest = try hypervisor.platform(for: id)
                guestID = id
                stop = {}
            }
        }
    }

    /// Whether `channel`'s descriptor polls readable now.
    static func readable(_ channel: any EventChannel) -> Bool {
        var p = pollfd(fd: channel.fileDescriptor, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, 0) == 1
    }

    /// Waits (bounded) for `port` to come out of pending(); nil if it never does.
    static func nextPending(_ channel: any EventChannel) throws -> EventPort? {
        for _ in 0..<2000 {
            if let port = try channel.pending() { return port }
            var p = pollfd(fd: channel.fileDescriptor, events: Int16(POLLIN), revents: 0)
            _ = poll(&p, 1, 10)
        }
        return nil
    }

    @Test("bind, notify, coalesce, unmask, readable, rebind", arguments: Kind.allCases)
    func contract(kind: Kind) async throws {
        let world = try await World(kind)
        defer { world.stop() }
        let front = try world.guest.openEventChannel()
        defer { front.close() }
        let frontPort = try front.allocateUnbound(remote: .dom0)
        // A notification before the backend binds may be lost; the binding starts pending,
        // so the binder looks at its ring once anyway.
        try? front.notify(frontPort)
        let back = try world.dom0.openEventChannel()
        let backPort = try back.bindInterdomain(remote: world.guestID, remotePort: frontPort)
        #expect(try Self.nextPending(back) == backPort, "a new binding starts pending")
        try back.unmask(backPort)
        #expect(try back.pending() == nil)

        // Several notifications before the receiver looks are one event.
        for _ in 0..<5 { try front.notify(frontPort) }
        #expect(try Self.nextPending(back) == backPort)
        #expect(try back.pending() == nil, "five notifications, one event")
        #expect(!Self.readable(back), "nothing pending: the descriptor does not poll readable")

        // Sent after pending() returned the port and before unmask(): not lost.
        try back.notify(backPort)
        #expect(try Self.nextPending(front) == frontPort)
        try front.notify(frontPort)
        try front.unmask(frontPort)
        try back.unmask(backPort)
        #expect(try Self.nextPending(back) == backPort, "the event sent before unmask is delivered")
        try back.unmask(backPort)
        #expect(try back.pending() == nil)

        // Readable exactly while something is pending.
        try front.notify(frontPort)
        var readable = false
        for _ in 0..<200 where !readable {
            readable = Self.readable(back)
            if !readable { usleep(5000) }
        }
        #expect(readable, "a pending event makes the descriptor readable")
        #expect(try back.pending() == backPort)
        try back.unmask(backPort)

        // The backend goes away: the frontend's port is unbound again and a new backend
        // binds the same port; its binding starts pending.
        back.close()
        let again = try world.dom0.openEventChannel()
        defer { again.close() }
        let againPort = try again.bindInterdomain(remote: world.guestID, remotePort: frontPort)
        #expect(try Self.nextPending(again) == againPort)
        try again.unmask(againPort)
        try front.notify(frontPort)
        #expect(try Self.nextPending(again) == againPort, "the rebound channel carries events")
        // Binding it twice is refused.
        let third = try world.dom0.openEventChannel()
        defer { third.close() }
        #expect(throws: PlatformError.self) { try third.bindInterdomain(remote: world.guestID, remotePort: frontPort) }
    }
}
