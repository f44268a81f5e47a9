import Foundation
import Glibc
import Testing
import XenPlatform
import XenTesting

/// Event channels between domains of one ``InProcessHypervisor`` (event_channel.h
/// semantics): eventfd-backed handles a worker can poll, pending() that never blocks.
@Suite struct InProcessEventChannelTests {
    /// guest1 offers a port to dom0, dom0 binds it; both handles start with nothing pending.
    func connected(_ w: World) throws -> (front: InProcessEventChannel, frontPort: EventPort,
                                          back: InProcessEventChannel, backPort: EventPort) {
        let front = try w.guest1.openInProcessEventChannel()
        let back = try w.dom0.openInProcessEventChannel()
        let frontPort = try front.allocateUnbound(remote: .dom0)
        let backPort = try back.bindInterdomain(remote: w.guest1.domainID, remotePort: frontPort)
        // Binding leaves the new port pending, as Xen's EVTCHNOP_bind_interdomain does.
        #expect(try back.pending() == backPort)
        #expect(try back.pending() == nil)
        #expect(try front.pending() == nil)
        return (front, frontPort, back, backPort)
    }

    @Test func notifyReachesTheOtherDomainAndPendingNeverBlocks() throws {
        let w = try World()
        let c = try connected(w)
        #expect(!isReadable(c.back.fileDescriptor))
        #expect(try c.back.pending() == nil)
        try c.front.notify(c.frontPort)
        #expect(isReadable(c.back.fileDescriptor))
        #expect(!isReadable(c.front.fileDescriptor), "a notify signals the other end only")
        #expect(try c.back.pending() == c.backPort)
        #expect(!isReadable(c.back.fileDescriptor), "readable exactly while something is pending")
        #expect(try c.back.pending() == nil)
        try c.back.unmask(c.backPort)

        try c.back.notify(c.backPort)
        #expect(try c.front.pending() == c.frontPort)
        #expect(w.hypervisor.notificationCount(domain: w.guest1.domainID, port: c.frontPort) == 1)
        #expect(w.hypervisor.notificationCount(domain: .dom0, port: c.backPort) == 1)
        #expect(w.hypervisor.peer(of: c.frontPort, domain: w.guest1.domainID)! == (.dom0, c.backPort))
    }

    @Test func aWorkerThreadWaitsOnTheDescriptorWithPoll() throws {
        let w = try World()
        let c = try connected(w)
        let woke = DispatchSemaphore(value: 0)
        let result = Box()
        let backFD = c.back.fileDescriptor
        let back = c.back
        let waiter = Thread {
            var p = pollfd(fd: backFD, events: Int16(POLLIN), revents: 0)
            let n = poll(&p, 1, -1)
            result.polled = n == 1 && p.revents & Int16(POLLIN) != 0
            result.port = try? back.pending()
            woke.signal()
        }
        waiter.start()
        try c.front.notify(c.frontPort)
        woke.wait()
        #expect(result.polled)
        #expect(result.port == c.backPort)
    }

    @Test func notificationsCoalesceUntilTaken() throws {
        let w = try World()
        let c = try connected(w)
        for _ in 0 ..< 3 { try c.front.notify(c.frontPort) }
        #expect(try c.back.pending() == c.backPort)
        #expect(try c.back.pending() == nil)
        #expect(w.hypervisor.notificationCount(domain: w.guest1.domainID, port: c.frontPort) == 3)
    }

    /// Three guest handles, each with a port bound by one dom0 handle, nothing pending.
    func threePortsOnOneHandle(_ w: World) throws
        -> (back: InProcessEventChannel, fronts: [InProcessEventChannel], pairs: [(front: EventPort, back: EventPort)]) {
        let back = try w.dom0.openInProcessEventChannel()
        let fronts = try (0 ..< 3).map { _ in try w.guest1.openInProcessEventChannel() }
        var pairs: [(front: EventPort, back: EventPort)] = []
        for f in fronts {
            let p = try f.allocateUnbound(remote: .dom0)
            pairs.append((p, try back.bindInterdomain(remote: w.guest1.domainID, remotePort: p)))
        }
        while try back.pending() != nil {}
        return (back, fronts, pairs)
    }

    @Test func pendingPortsComeOutOldestFirstPerHandle() throws {
        let w = try World()
        let (back, fronts, pairs) = try threePortsOnOneHandle(w)
        for i in [2, 0, 1] { try fronts[i].notify(pairs[i].front) }
        #expect(try back.pending() == pairs[2].back)
        #expect(try back.pending() == pairs[0].back)
        #expect(try back.pending() == pairs[1].back)
        #expect(try back.pending() == nil)
    }

    @Test func takePendingStopsAtItsLimitAndLeavesTheRestPending() throws {
        let w = try World()
        let (back, fronts, pairs) = try threePortsOnOneHandle(w)
        for i in [1, 2, 0] { try fronts[i].notify(pairs[i].front) }
        var taken: [EventPort] = []
        try back.takePending(atMost: 2) { taken.append($0) }
        #expect(taken == [pairs[1].back, pairs[2].back])
        try back.takePending(atMost: 8) { taken.append($0) }
        #expect(taken == [pairs[1].back, pairs[2].back, pairs[0].back])
        try back.takePending(atMost: 8) { taken.append($0) }
        #expect(taken.count == 3, "nothing is left")
    }

    @Test func sendBeforeBindIsDroppedButTheBinderStartsPending() throws {
        let w = try World()
        let front = try w.guest1.openInProcessEventChannel()
        let port = try front.allocateUnbound(remote: .dom0)
        try front.notify(port)
        #expect(w.hypervisor.notificationCount(domain: w.guest1.domainID, port: port) == 1)
        #expect(w.hypervisor.peer(of: port, domain: w.guest1.domainID) == nil)
        let back = try w.dom0.openInProcessEventChannel()
        let backPort = try back.bindInterdomain(remote: w.guest1.domainID, remotePort: port)
        #expect(isReadable(back.fileDescriptor))
        #expect(try back.pending() == backPort)
    }

    @Test func bindingIsCheckedAgainstTheOfferedDomainAndOnce() throws {
        let w = try World()
        let front = try w.guest1.openInProcessEventChannel()
        let port = try front.allocateUnbound(remote: .dom0)
        let intruder = try w.guest2.openInProcessEventChannel()
        #expect(eventErrno { _ = try intruder.bindInterdomain(remote: w.guest1.domainID, remotePort: port) } == EINVAL)
        #expect(eventErrno { _ = try intruder.bindInterdomain(remote: w.guest1.domainID, remotePort: 999) } == EINVAL)
        #expect(eventErrno { _ = try intruder.bindInterdomain(remote: 77, remotePort: port) } == ESRCH)
        #expect(eventErrno { _ = try front.allocateUnbound(remote: 77) } == ESRCH)
        let back = try w.dom0.openInProcessEventChannel()
        _ = try back.bindInterdomain(remote: w.guest1.domainID, remotePort: port)
        #expect(eventErrno { _ = try back.bindInterdomain(remote: w.guest1.domainID, remotePort: port) } == EINVAL,
                "a port binds once")
    }

    @Test func aHandleUsesOnlyItsOwnPorts() throws {
        let w = try World()
        let c = try connected(w)
        let other = try w.guest1.openInProcessEventChannel()
        #expect(eventErrno { try other.notify(c.frontPort) } == EINVAL)
        #expect(eventErrno { try other.unbind(c.frontPort) } == EINVAL)
        #expect(eventErrno { try c.back.notify(c.frontPort + 100) } == EINVAL)
    }

    @Test func unbindReturnsThePeerToUnboundSoARestartedPeerCanRebind() throws {
        let w = try World()
        let c = try connected(w)
        try c.back.unbind(c.backPort)
        #expect(w.hypervisor.peer(of: c.frontPort, domain: w.guest1.domainID) == nil)
        #expect(!w.hypervisor.openPorts(of: .dom0).contains(c.backPort))
        try c.front.notify(c.frontPort)
        #expect(try c.back.pending() == nil, "the closed port gets nothing")
        let back2 = try w.dom0.openInProcessEventChannel()
        let port2 = try back2.bindInterdomain(remote: w.guest1.domainID, remotePort: c.frontPort)
        #expect(try back2.pending() == port2)
        try c.front.notify(c.frontPort)
        #expect(try back2.pending() == port2)
    }

    @Test func closingAHandleClosesItsPortsAndDropsItsPendingEvents() throws {
        let w = try World()
        let c = try connected(w)
        try c.front.notify(c.frontPort)
        c.back.close()
        #expect(!w.hypervisor.openPorts(of: .dom0).contains(c.backPort))
        #expect(eventErrno { _ = try c.back.pending() } == EBADF)
        try c.front.notify(c.frontPort)
        #expect(w.hypervisor.peer(of: c.frontPort, domain: w.guest1.domainID) == nil)
        c.back.close()
    }

    @Test func withMaskingAPortDeliversAgainOnlyAfterUnmask() throws {
        var configuration = InProcessHypervisor.Configuration()
        configuration.masksDeliveredPorts = true
        let w = try World(configuration)
        let c = try connected(w)
        // connected() took the bind's event, so the port is masked now.
        try c.front.notify(c.frontPort)
        try c.front.notify(c.frontPort)
        #expect(!isReadable(c.back.fileDescriptor))
        #expect(try c.back.pending() == nil, "held while masked")
        try c.back.unmask(c.backPort)
        #expect(isReadable(c.back.fileDescriptor), "the held event arrives on unmask")
        #expect(try c.back.pending() == c.backPort)
        try c.back.unmask(c.backPort)
        #expect(try c.back.pending() == nil, "held events coalesce too")
        #expect(eventErrno { try c.back.unmask(c.backPort + 50) } == EINVAL)
    }

    @Test func withoutMaskingUnmaskOnlyChecksThePort() throws {
        let w = try World()
        let c = try connected(w)
        try c.front.notify(c.frontPort)
        #expect(try c.back.pending() == c.backPort)
        try c.front.notify(c.frontPort)
        #expect(try c.back.pending() == c.backPort, "XenLocal's semantics: no unmask needed")
        #expect(eventErrno { try c.front.unmask(c.backPort + 50) } == EINVAL)
    }

    @Test func destroyingADomainUnbindsItsPeers() throws {
        let w = try World()
        let c = try connected(w)
        try w.hypervisor.destroyDomain(w.guest1.domainID)
        #expect(w.hypervisor.peer(of: c.backPort, domain: .dom0) == nil)
        #expect(!w.hypervisor.domains.contains(w.guest1.domainID))
        try c.back.notify(c.backPort)
    }
}

/// Results written by the waiter thread before it signals the semaphore the test waits on.
private final class Box: @unchecked Sendable {
    var polled = false
    var port: EventPort?
}
