import Glibc
import SharedMemory
import XenPlatform

/// One local domain as the hypervisor keeps it: its memory and grants (the same
/// ``GrantDomain`` the in-process doubles use), its event-channel ports and its socket.
final class LocalDomain {
    let id: DomainID
    let name: String
    let memory: GrantDomain
    /// Event-channel ports of this domain.
    var ports: [EventPort: ChannelEnd] = [:]
    var nextPort: EventPort = 1
    /// Listening socket for this domain's hypervisor connections (domUs).
    var listener: Int32 = -1
    /// The listener's token in the hypervisor's epoll set.
    var listenerToken: UInt64 = 0
    var directory: String?

    init(id: DomainID, name: String, poolPages: Int, grantEntries: Int) throws(PlatformError) {
        self.id = id
        self.name = name
        memory = try GrantDomain(id: id, poolPages: poolPages, grantEntries: grantEntries, label: "xensplit")
    }

    func allocatePort() -> EventPort {
        while ports[nextPort] != nil || nextPort == 0 { nextPort &+= 1 }
        defer { nextPort &+= 1 }
        return nextPort
    }
}

/// The two eventfds of one channel; closed when neither end holds them any more.
final class EventFDPair {
    let allocatorSide: Int32
    let binderSide: Int32
    init(allocatorSide: Int32, binderSide: Int32) {
        self.allocatorSide = allocatorSide
        self.binderSide = binderSide
    }
    deinit {
        Glibc.close(allocatorSide)
        Glibc.close(binderSide)
    }
}

/// One end of an interdomain event channel. Each end has an eventfd the other end signals.
final class ChannelEnd {
    let domain: DomainID
    let port: EventPort
    let remoteDomain: DomainID
    let fds: EventFDPair
    let isAllocator: Bool
    /// Signalled by the peer; this end's processes wait on it.
    var receiveFD: Int32 { isAllocator ? fds.allocatorSide : fds.binderSide }
    /// This end's peer's receive eventfd.
    var notifyFD: Int32 { isAllocator ? fds.binderSide : fds.allocatorSide }
    /// The peer once bound.
    var peer: (domain: DomainID, port: EventPort)?
    /// The connection that owns this end; its death closes the port.
    var owner: ObjectIdentifier?

    init(domain: DomainID, port: EventPort, remoteDomain: DomainID, fds: EventFDPair, isAllocator: Bool) {
        self.domain = domain
        self.port = port
        self.remoteDomain = remoteDomain
        self.fds = fds
        self.isAllocator = isAllocator
    }
}
