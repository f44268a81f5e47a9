import Glibc
import SharedMemory
import XenPlatform

/// One local domain as the hypervisor keeps it: its memory pool and grant table (both
/// memfds its own processes map), what it has shared, its event-channel ports, and the
/// grants other domains hold pinned.
final class LocalDomain {
    let id: DomainID
    let name: String
    /// The domain's memory: frame N is page N of this memfd.
    let pool: MemoryRegion
    /// The domain's grant table, v1 entries.
    let grantTableMemory: MemoryRegion
    let grants: GrantEntryTable
    var frames: RunAllocator
    var refs: RunAllocator
    /// Shared runs by their first frame: the refs that grant them.
    var shares: [UInt32: [GrantRef]] = [:]
    /// Copy buffers by id (their first frame) and length in pages.
    var buffers: [UInt32: Int] = [:]
    /// Pins on this domain's grants held by mappers: ref -> (readers, writers).
    var pins: [GrantRef: (readers: Int, writers: Int)] = [:]
    /// Event-channel ports of this domain.
    var ports: [EventPort: ChannelEnd] = [:]
    var nextPort: EventPort = 1
    /// Listening sockets for this domain's hypervisor and xenstore connections (domUs).
    var listener: Int32 = -1
    var directory: String?

    init(id: DomainID, name: String, poolPages: Int, grantEntries: Int) throws(PlatformError) {
        self.id = id
        self.name = name
        do {
            pool = try MemoryRegion.memfd(name: "xensplit-d\(id)-pool", pages: poolPages)
            let tablePages = (grantEntries * GrantEntryTable.entrySize + pageSize - 1) / pageSize
            grantTableMemory = try MemoryRegion.memfd(name: "xensplit-d\(id)-grants", pages: tablePages)
        } catch {
            throw .system("memory for d\(id): \(error)", errno: 12)
        }
        grants = GrantEntryTable(view: grantTableMemory.view)
        frames = RunAllocator(count: poolPages)
        refs = RunAllocator(count: Int(grants.count) - Int(GrantEntryTable.reservedEntries),
                            base: Int(GrantEntryTable.reservedEntries))
    }

    var poolPages: Int { frames.capacity }

    func allocatePort() -> EventPort {
        while ports[nextPort] != nil { nextPort &+= 1 }
        defer { nextPort &+= 1 }
        return nextPort
    }

    /// The view of `count` pages from `frame`, if inside the pool.
    func pages(at frame: UInt32, count: Int) -> SharedView? {
        try? pool.view.slice(offset: Int(frame) * pageSize, length: count * pageSize)
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
