import CXenLocal
import Glibc
import SharedMemory
import Synchronization
import XenPlatform
import XenStore

/// Several Xen domains in one process, for device unit tests: grants, event channels and
/// xenstore with the hypervisor's checks, and no daemon (the test-double counterpart of
/// XenLocal, after swift-nio's `NIOEmbedded` and rust-vmm's `MockSplitQueue`).
///
/// Each domain has a grant table in the v1 entry format (XenLocal's ``GrantEntryTable``,
/// so mapping and copying make exactly the checks the local hypervisor and Xen make) and a
/// memfd of pages it shares from; a mapping is a second mapping of the same pages, so a
/// backend sees the frontend's writes. Event channels signal eventfds a worker can really
/// wait on. xenstore is an embedded ``XenStoreServer``; each domain's connections are
/// socketpairs attached with that domain's identity.
///
/// Besides the platform, it offers what a test needs to look inside: notifications sent
/// per port, grant flags, pinned refs, and one-shot ``InProcessFault``s.
///
/// Thread-safe: all state sits behind one mutex, taken for the length of one operation.
/// That lock is on the notify path too, which a real platform would not accept; a double
/// trades that for determinism.
///
/// ```swift
/// let hv = try InProcessHypervisor()
/// let guest = try hv.platform(for: hv.createDomain(name: "guest"))
/// let (front, back) = try MockRingPeer.connect(frontend: guest, backend: hv.platform(for: .dom0),
///                                              entrySize: 112)
/// // run the device under test on `back.platform`, or script `back` against a frontend
/// ```
public final class InProcessHypervisor: Sendable {
    /// Sizes of every domain's resources.
    public struct Configuration: Sendable {
        /// Pages in each domain's memory pool (a sparse memfd): the most it can share at once.
        public var poolPages = 4096
        /// Entries in each domain's grant table; the first
        /// ``GrantEntryTable/reservedEntries`` are never handed out, as on Xen.
        public var grantEntries = 1024
        /// Largest batch of one share, map or copy.
        public var maxBatch = 1024
        /// Mask each port as ``EventChannel/pending()`` hands it out, until
        /// ``EventChannel/unmask(_:)``, as Linux's evtchn device (libxenevtchn) does; events
        /// meanwhile are held, not lost. XenLocal never masks, hence off by default; turn it
        /// on to prove a device unmasks every port it takes.
        public var masksDeliveredPorts = false

        public init() {}
    }

    /// The settings in force.
    public let configuration: Configuration
    let state: Mutex<HypervisorState>
    /// The embedded xenstored.
    public let xenStore: XenStoreServer
    let toolstack: Mutex<ToolstackSession>

    /// A hypervisor with dom0 and its xenstore home, and xenstored running.
    public init(configuration: Configuration = Configuration()) throws(PlatformError) {
        self.configuration = configuration
        state = Mutex(HypervisorState(masksDeliveredPorts: configuration.masksDeliveredPorts))
        do {
            xenStore = try XenStoreServer()
            try xenStore.start()
        } catch {
            throw .hypervisor("embedded xenstored: \(error)")
        }
        toolstack = Mutex(try ToolstackSession(server: xenStore))
        try state.withLock { (s) throws(PlatformError) in
            s.domains[.dom0] = try InProcessDomain(id: .dom0, name: "Domain-0", configuration: configuration)
        }
        // Dom0's home, by the same rule as the local hypervisor's xenstored.
        let failures = xenStore.withEngineBlocking { engine in engine.writeDom0Home() }
        guard failures.isEmpty else { throw .hypervisor("xenstored refused dom0's home: \(failures.joined(separator: "; "))") }
    }

    deinit {
        xenStore.stop()
    }

    // MARK: Domains

    /// Creates a domain (the lowest free id unless `id` is given), introduces it to
    /// xenstore (@introduceDomain) and lays out its home `/local/domain/<id>` as libxl does:
    /// the home, `device` and `control` owned by dom0 and readable by the domain; `data`
    /// owned by the domain. Another domU can read none of them.
    @discardableResult
    public func createDomain(name: String, id: DomainID? = nil) throws(PlatformError) -> DomainID {
        let domid = try state.withLock { (s) throws(PlatformError) -> DomainID in
            guard !s.domains.values.contains(where: { $0.name == name }) else {
                throw .invalidArgument("domain '\(name)' exists")
            }
            let chosen: DomainID
            if let id {
                guard id != .dom0, id < .domidSelf, s.domains[id] == nil else {
                    throw .invalidArgument("domain id \(id) is taken or reserved")
                }
                chosen = id
            } else {
                guard let free = (1 ..< DomainID.domidSelf).first(where: { s.domains[$0] == nil }) else {
                    throw .invalidArgument("no free domain id")
                }
                chosen = free
            }
            s.domains[chosen] = try InProcessDomain(id: chosen, name: name, configuration: configuration)
            return chosen
        }
        do {
            try toolstack.withLock { (session) throws(PlatformError) in try session.createHome(domid, name: name) }
        } catch {
            _ = state.withLock { $0.domains.removeValue(forKey: domid) }
            throw error
        }
        return domid
    }

    /// Destroys a domain: its ports close (their peers fall back to unbound), its grant
    /// maps of others' pages are released, its xenstore home goes and @releaseDomain fires,
    /// and its connections to xenstored close. Mappings others hold of its pages stay valid
    /// until they unmap, as with XenLocal.
    public func destroyDomain(_ domid: DomainID) throws(PlatformError) {
        try state.withLock { (s) throws(PlatformError) in
            guard domid != .dom0, let d = s.domains[domid] else {
                throw .invalidArgument("no domain \(domid) to destroy")
            }
            for port in Array(d.ports.keys) { s.closePort(PortKey(domain: domid, port: port)) }
            // As Xen tears down a dying domain's grant maps: its pins on others' grants go,
            // so their frontends can end access.
            for (handle, m) in s.mappings where m.mapper == domid {
                s.mappings[handle] = nil
                s.domains[m.granter]?.memory.releasePins(m.refs, writable: m.writable)
            }
            s.domains[domid] = nil
        }
        try toolstack.withLock { (session) throws(PlatformError) in
            try session.perform(.rm(path: Array(XenStorePath.domainPath(domid).utf8)))
            try session.perform(.release(domid: domid))
        }
    }

    /// The ids of every domain, dom0 first.
    public var domains: [DomainID] { state.withLock { $0.domains.keys.sorted() } }

    /// The platform of domain `domid`: what a device running in that domain is given.
    public func platform(for domid: DomainID) throws(PlatformError) -> InProcessPlatform {
        guard state.withLock({ $0.domains[domid] != nil }) else {
            throw .invalidArgument("no domain \(domid); create it with createDomain(name:) first")
        }
        return InProcessPlatform(hypervisor: self, domainID: domid)
    }

    /// A xenstore connection with an arbitrary identity (for example ``XenStoreIdentity/tool``
    /// for a toolstack that writes both ends' device nodes).
    public func connectXenStore(as identity: XenStoreIdentity) throws(PlatformError) -> XenStoreClient {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw .system("socketpair", errno: errno)
        }
        xenStore.attach(fileDescriptor: fds[0], identity: identity)
        do {
            return try XenStoreClient(transport: SocketPairTransport(fileDescriptor: fds[1]))
        } catch {
            throw .hypervisor("xenstore client for \(identity): \(error)")
        }
    }

    // MARK: Test hooks

    /// Queues a one-shot fault; it fires on the next operation it matches.
    public func inject(_ fault: InProcessFault) {
        state.withLock { $0.faults.append(fault) }
    }

    /// Faults queued and not yet fired, oldest first.
    public var pendingFaults: [InProcessFault] { state.withLock { $0.faults } }

    /// Notifications sent from `port` of `domain` (successful EVTCHNOP_send calls,
    /// including those dropped because the port was not yet bound).
    public func notificationCount(domain: DomainID, port: EventPort) -> Int {
        state.withLock { $0.notifications[PortKey(domain: domain, port: port)] ?? 0 }
    }

    /// The flags of grant entry `ref` of `domain` as they stand, or nil if out of range.
    public func grantFlags(domain: DomainID, ref: GrantRef) -> GrantFlags? {
        state.withLock { s in
            guard let d = s.domains[domain], ref < d.grants.count else { return nil }
            return d.grants.flags(ref)
        }
    }

    /// The grant table of `domain` as the domain itself sees it: a test acting as a
    /// hostile guest may rewrite entries (flags, domid, frame) under a mapper's feet.
    public func grantEntryTable(of domain: DomainID) -> GrantEntryTable? {
        state.withLock { $0.domains[domain]?.grants }
    }

    /// Refs of `domain` currently pinned by a mapping, ascending.
    public func pinnedRefs(of domain: DomainID) -> [GrantRef] {
        state.withLock { $0.domains[domain]?.memory.pins.keys.sorted() ?? [] }
    }

    /// Mappings not yet unmapped, across all domains.
    public var liveMappings: Int { state.withLock { $0.mappings.count } }

    /// Ports of `domain` that are open, ascending.
    public func openPorts(of domain: DomainID) -> [EventPort] {
        state.withLock { $0.domains[domain]?.ports.keys.sorted() ?? [] }
    }

    /// The peer of `port` of `domain` once bound: (domain, port), or nil while unbound.
    public func peer(of port: EventPort, domain: DomainID) -> (domain: DomainID, port: EventPort)? {
        state.withLock { s in
            s.domains[domain]?.ports[port]?.peer.map { ($0.domain, $0.port) }
        }
    }
}

/// A (domain, port) pair: one end of an event channel.
struct PortKey: Hashable, Sendable {
    var domain: DomainID
    var port: EventPort
}

/// Everything the hypervisor knows, guarded by its mutex.
struct HypervisorState: ~Copyable {
    let masksDeliveredPorts: Bool
    var domains: [DomainID: InProcessDomain] = [:]
    /// Live grant mappings by handle.
    var mappings: [UInt64: MappingRecord] = [:]
    var nextMappingHandle: UInt64 = 1
    /// Open event-channel handles by id.
    var eventHandles: [UInt64: EventHandleRecord] = [:]
    var nextEventHandle: UInt64 = 1
    var notifications: [PortKey: Int] = [:]
    var faults: [InProcessFault] = []

    init(masksDeliveredPorts: Bool) {
        self.masksDeliveredPorts = masksDeliveredPorts
    }

    /// Removes and returns the first queued fault `match` accepts.
    mutating func takeFault<T>(_ match: (InProcessFault) -> T?) -> T? {
        for (i, fault) in faults.enumerated() {
            if let hit = match(fault) {
                faults.remove(at: i)
                return hit
            }
        }
        return nil
    }
}

/// One live mapping: who mapped which refs of whom.
struct MappingRecord {
    var mapper: DomainID
    var granter: DomainID
    var refs: [GrantRef]
    var writable: Bool
}

/// One domain's memory, grants and ports; touched only under the hypervisor's mutex.
/// Memory and grants are XenPlatform's ``GrantDomain``, the same the local hypervisor uses.
final class InProcessDomain {
    let id: DomainID
    let name: String
    let memory: GrantDomain
    var ports: [EventPort: PortRecord] = [:]
    var nextPort: EventPort = 1

    init(id: DomainID, name: String, configuration: InProcessHypervisor.Configuration) throws(PlatformError) {
        self.id = id
        self.name = name
        memory = try GrantDomain(id: id, poolPages: configuration.poolPages, grantEntries: configuration.grantEntries,
                                 label: "xentesting")
    }

    var grants: GrantEntryTable { memory.grants }
    var poolFD: Int32 { memory.pool.fileDescriptor! }

    func allocatePort() -> EventPort {
        while ports[nextPort] != nil || nextPort == 0 { nextPort &+= 1 }
        defer { nextPort &+= 1 }
        return nextPort
    }
}

