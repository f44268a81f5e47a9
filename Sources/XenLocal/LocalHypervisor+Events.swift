import CXenLocal
import Glibc
import XenPlatform

extension LocalHypervisor {
    /// EVTCHNOP_alloc_unbound: a port of the caller's domain that `remote` may bind.
    func allocateUnbound(_ r: inout PayloadReader, _ c: HypervisorConnection) throws(HypervisorProtocolError) -> HandlerReply {
        let remote = try r.u16("remote")
        guard domains[remote] != nil else { return .errno(ESRCH, "no domain \(remote) to offer a port to") }
        guard let d = domains[c.domain] else { return .errno(ESRCH, "domain \(c.domain) is gone") }
        guard d.ports.count < Self.maxPortsPerDomain else {
            return .errno(ENOSPC, "d\(d.id) holds \(Self.maxPortsPerDomain) ports, the most allowed")
        }
        let a = xl_eventfd(1)
        let b = xl_eventfd(1)
        guard a >= 0, b >= 0 else {
            if a >= 0 { Glibc.close(a) }
            if b >= 0 { Glibc.close(b) }
            return .errno(EMFILE, "no eventfd for a new channel")
        }
        let port = d.allocatePort()
        let end = ChannelEnd(domain: d.id, port: port, remoteDomain: remote,
                             fds: EventFDPair(allocatorSide: a, binderSide: b), isAllocator: true)
        end.owner = ObjectIdentifier(c)
        d.ports[port] = end
        c.ports.append((d.id, port))
        return portReply(end)
    }

    /// EVTCHNOP_bind_interdomain: binds to `remotePort` of `remote`, which must have been
    /// offered to the caller's domain and not be bound already.
    func bindInterdomain(_ r: inout PayloadReader, _ c: HypervisorConnection) throws(HypervisorProtocolError) -> HandlerReply {
        let remote = try r.u16("remote")
        _ = try r.u16("pad")
        let remotePort = try r.u32("remote-port")
        guard let rd = domains[remote] else { return .errno(ESRCH, "no domain \(remote)") }
        guard let target = rd.ports[remotePort] else { return .errno(EINVAL, "d\(remote) has no port \(remotePort)") }
        guard target.remoteDomain == c.domain else {
            return .errno(EINVAL, "d\(remote) port \(remotePort) was offered to d\(target.remoteDomain), not d\(c.domain)")
        }
        guard target.peer == nil else { return .errno(EINVAL, "d\(remote) port \(remotePort) is already bound") }
        guard let d = domains[c.domain] else { return .errno(ESRCH, "domain \(c.domain) is gone") }
        guard d.ports.count < Self.maxPortsPerDomain else {
            return .errno(ENOSPC, "d\(d.id) holds \(Self.maxPortsPerDomain) ports, the most allowed")
        }
        let port = d.allocatePort()
        let end = ChannelEnd(domain: d.id, port: port, remoteDomain: remote, fds: target.fds, isAllocator: !target.isAllocator)
        end.peer = (remote, remotePort)
        end.owner = ObjectIdentifier(c)
        target.peer = (d.id, port)
        d.ports[port] = end
        c.ports.append((d.id, port))
        // As Xen does, the new port starts pending, so a binder that missed a notification
        // sent before it bound still looks at the ring once.
        _ = xl_eventfd_signal(end.receiveFD)
        return portReply(end)
    }

    func portReply(_ end: ChannelEnd) -> HandlerReply {
        var w = PayloadWriter()
        w.u32(end.port)
        return HandlerReply(payload: w.bytes, fds: [end.receiveFD, end.notifyFD])
    }

    func eventClose(_ r: inout PayloadReader, _ c: HypervisorConnection) throws(HypervisorProtocolError) -> HandlerReply {
        let port = try r.u32("port")
        guard let i = c.ports.firstIndex(where: { $0.domain == c.domain && $0.port == port }) else {
            return .errno(EINVAL, "port \(port) is not open on this connection")
        }
        c.ports.remove(at: i)
        closePort(domain: c.domain, port: port)
        return HandlerReply()
    }

    /// Closes one end. As on Xen, the other end goes back to unbound, still offered to the
    /// same domain, so a restarted peer can bind it again.
    func closePort(domain: DomainID, port: EventPort) {
        guard let d = domains[domain], let end = d.ports.removeValue(forKey: port) else { return }
        if let peer = end.peer, let pd = domains[peer.domain], let other = pd.ports[peer.port] {
            other.peer = nil
        }
    }
}
