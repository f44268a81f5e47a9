import CXenLocal
import Glibc
import XenPlatform

/// One open event-channel handle: its domain, the eventfd it is readable through, and the
/// ports bound through it that are pending, in the order they became pending.
struct EventHandleRecord {
    var domain: DomainID
    var eventFD: Int32
    var ports: Set<EventPort> = []
    var pending: [EventPort] = []
    /// Ports handed out by pending() and not yet unmasked (masking mode only).
    var masked: Set<EventPort> = []
    /// Masked ports signalled meanwhile: delivered on unmask.
    var held: Set<EventPort> = []
}

/// One end of an interdomain channel (event_channel.h: ECS_UNBOUND or ECS_INTERDOMAIN).
struct PortRecord {
    /// The domain allowed to bind (unbound) or bound (interdomain).
    var remoteDomain: DomainID
    /// The other end once bound.
    var peer: PortKey?
    /// The handle the port was opened through.
    var handle: UInt64
}

/// Event-channel operations on behalf of a handle. Semantics follow Xen's: a send on a port
/// whose peer has not bound yet is dropped (ECS_UNBOUND); binding marks the new local port
/// pending, because sends to the unbound end may have been lost; closing one end returns
/// the other to unbound, still offered to the same domain, so a restarted peer can rebind.
/// Pending ports coalesce: many sends before ``EventChannel/pending()`` are one event.
extension InProcessHypervisor {
    func openEventHandle(for domid: DomainID) throws(PlatformError) -> (id: UInt64, fd: Int32) {
        let fd = xl_eventfd(1)
        guard fd >= 0 else { throw .system("eventfd", errno: -fd) }
        return state.withLock { s in
            let id = s.nextEventHandle
            s.nextEventHandle &+= 1
            s.eventHandles[id] = EventHandleRecord(domain: domid, eventFD: fd)
            return (id, fd)
        }
    }

    func allocateUnbound(handle: UInt64, remote: DomainID) throws(PlatformError) -> EventPort {
        try state.withLock { (s) throws(PlatformError) -> EventPort in
            let h = try s.handle(handle, "allocate unbound")
            guard s.domains[remote] != nil else { throw .eventChannel("no domain \(remote) to offer a port to", errno: ESRCH) }
            guard let d = s.domains[h.domain] else { throw .eventChannel("domain \(h.domain) is gone", errno: ESRCH) }
            let port = d.allocatePort()
            d.ports[port] = PortRecord(remoteDomain: remote, peer: nil, handle: handle)
            s.eventHandles[handle]?.ports.insert(port)
            return port
        }
    }

    func bindInterdomain(handle: UInt64, remote: DomainID, remotePort: EventPort) throws(PlatformError) -> EventPort {
        try state.withLock { (s) throws(PlatformError) -> EventPort in
            let h = try s.handle(handle, "bind interdomain")
            if let e = s.takeFault({ f -> Int32? in
                if case let .bind(d, e) = f, d == h.domain { return e }
                return nil
            }) {
                throw .eventChannel("bind to d\(remote) port \(remotePort) (injected fault)", errno: e)
            }
            guard let rd = s.domains[remote] else { throw .eventChannel("no domain \(remote)", errno: ESRCH) }
            guard let target = rd.ports[remotePort] else {
                throw .eventChannel("d\(remote) has no port \(remotePort)", errno: EINVAL)
            }
            guard target.remoteDomain == h.domain else {
                throw .eventChannel("d\(remote) port \(remotePort) was offered to d\(target.remoteDomain), not d\(h.domain)", errno: EINVAL)
            }
            guard target.peer == nil else {
                throw .eventChannel("d\(remote) port \(remotePort) is already bound", errno: EINVAL)
            }
            guard let d = s.domains[h.domain] else { throw .eventChannel("domain \(h.domain) is gone", errno: ESRCH) }
            let port = d.allocatePort()
            d.ports[port] = PortRecord(remoteDomain: remote, peer: PortKey(domain: remote, port: remotePort), handle: handle)
            rd.ports[remotePort]?.peer = PortKey(domain: h.domain, port: port)
            s.eventHandles[handle]?.ports.insert(port)
            // As Xen's bind: sends to the unbound end may have been lost, so the new port
            // starts pending and the binder always looks at the ring once.
            s.deliver(to: PortKey(domain: h.domain, port: port))
            return port
        }
    }

    func notify(handle: UInt64, port: EventPort) throws(PlatformError) {
        try state.withLock { (s) throws(PlatformError) in
            let h = try s.handle(handle, "notify")
            guard h.ports.contains(port), let record = s.domains[h.domain]?.ports[port] else {
                throw .eventChannel("notify on port \(port), which this handle has not bound", errno: EINVAL)
            }
            let key = PortKey(domain: h.domain, port: port)
            if let e = s.takeFault({ f -> Int32? in
                if case let .notify(d, p, e) = f, d == h.domain, p == port { return e }
                return nil
            }) {
                throw .eventChannel("notify on port \(port) (injected fault)", errno: e)
            }
            s.notifications[key, default: 0] += 1
            if let peer = record.peer { s.deliver(to: peer) }
        }
    }

    func unbind(handle: UInt64, port: EventPort) throws(PlatformError) {
        try state.withLock { (s) throws(PlatformError) in
            let h = try s.handle(handle, "unbind")
            guard h.ports.contains(port) else {
                throw .eventChannel("unbind of port \(port), which this handle has not bound", errno: EINVAL)
            }
            s.closePort(PortKey(domain: h.domain, port: port))
        }
    }

    func pending(handle: UInt64) throws(PlatformError) -> EventPort? {
        try state.withLock { (s) throws(PlatformError) -> EventPort? in
            let h = try s.handle(handle, "pending")
            guard let port = h.pending.first else { return nil }
            s.eventHandles[handle]?.pending.removeFirst()
            if s.masksDeliveredPorts { s.eventHandles[handle]?.masked.insert(port) }
            // The eventfd is readable exactly while something is pending.
            if h.pending.count == 1 { _ = xl_eventfd_drain(h.eventFD) }
            return port
        }
    }

    /// Re-enables a port masked by pending() and delivers what arrived meanwhile.
    func unmask(handle: UInt64, port: EventPort) throws(PlatformError) {
        try state.withLock { (s) throws(PlatformError) in
            let h = try s.handle(handle, "unmask")
            guard h.ports.contains(port) else {
                throw .eventChannel("unmask of port \(port), which this handle has not bound", errno: EINVAL)
            }
            s.eventHandles[handle]?.masked.remove(port)
            if s.eventHandles[handle]?.held.remove(port) != nil {
                s.deliver(to: PortKey(domain: h.domain, port: port))
            }
        }
    }

    func closeEventHandle(_ handle: UInt64) {
        state.withLock { s in
            guard let h = s.eventHandles[handle] else { return }
            for port in h.ports { s.closePort(PortKey(domain: h.domain, port: port)) }
            s.eventHandles[handle] = nil
            Glibc.close(h.eventFD)
        }
    }
}

extension HypervisorState {
    func handle(_ id: UInt64, _ what: String) throws(PlatformError) -> EventHandleRecord {
        guard let h = eventHandles[id] else { throw .eventChannel("\(what) on a closed event-channel handle", errno: EBADF) }
        return h
    }

    /// Marks `key` pending on the handle it was bound through and makes that handle's
    /// eventfd readable.
    mutating func deliver(to key: PortKey) {
        guard let record = domains[key.domain]?.ports[key.port], var h = eventHandles[record.handle] else { return }
        guard !h.masked.contains(key.port) else {
            eventHandles[record.handle]?.held.insert(key.port)
            return
        }
        guard !h.pending.contains(key.port) else { return }
        h.pending.append(key.port)
        eventHandles[record.handle] = h
        if h.pending.count == 1 { _ = xl_eventfd_signal(h.eventFD) }
    }

    /// EVTCHNOP_close of one end; its peer goes back to unbound.
    mutating func closePort(_ key: PortKey) {
        guard let d = domains[key.domain], let record = d.ports.removeValue(forKey: key.port) else { return }
        if let peer = record.peer { domains[peer.domain]?.ports[peer.port]?.peer = nil }
        guard var h = eventHandles[record.handle] else { return }
        h.ports.remove(key.port)
        h.masked.remove(key.port)
        h.held.remove(key.port)
        if let i = h.pending.firstIndex(of: key.port) {
            h.pending.remove(at: i)
            if h.pending.isEmpty { _ = xl_eventfd_drain(h.eventFD) }
        }
        eventHandles[record.handle] = h
    }
}
