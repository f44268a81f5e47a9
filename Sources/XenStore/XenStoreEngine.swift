/// A connection's handle inside a ``XenStoreEngine``.
public struct XenStoreConnectionID: Hashable, Sendable, CustomStringConvertible {
    /// A unique number, never reused by one engine.
    public let rawValue: UInt64
    public var description: String { "conn\(rawValue)" }
}

/// The xenstored state machine with no I/O: the in-memory tree, transactions, watches,
/// permissions, quotas and domains, fed with bytes per connection and producing bytes per
/// connection. Semantics follow C xenstored 4.17 (Protocols/xenstore-semantics.md).
///
/// Not thread-safe: one owner (the server's loop thread, a test, a fuzzer) drives it.
public final class XenStoreEngine {
    struct Node {
        var value: [UInt8]
        var permissions: [XenStorePermission]
        var children: [String] = []
        /// Sum of child name lengths plus their NULs: the size of the DIRECTORY reply.
        var childBytes = 0
        var generation: UInt64 = 0

        var owner: UInt16 { permissions[0].domid }
        var recordSize: Int { 24 + 8 * permissions.count + value.count + childBytes }
    }

    struct Rights: OptionSet {
        let rawValue: UInt8
        static let read = Rights(rawValue: 1)
        static let write = Rights(rawValue: 2)
        static let owner = Rights(rawValue: 4)
        static let all: Rights = [.read, .write, .owner]
    }

    struct Watch {
        /// Absolute path, or a special `@` name.
        var path: String
        var token: [UInt8]
        /// Events are reported relative to the domain home.
        var relative: Bool
    }

    struct PendingEvent {
        var path: String
        var permissions: [XenStorePermission]
        var oldPermissions: [XenStorePermission]?
        var exact: Bool
    }

    final class Transaction {
        /// Generation of every node the transaction looked at, when it first did (0: absent).
        var accessed: [String: UInt64] = [:]
        /// Nodes written in the transaction; nil for removed.
        var overlay: [String: Node?] = [:]
        /// Change in nodes owned per domain.
        var entryDelta: [UInt16: Int] = [:]
        /// Watch events to fire at commit.
        var events: [PendingEvent] = []
    }

    final class Connection {
        let id: XenStoreConnectionID
        let identity: XenStoreIdentity
        var framer = XenStoreMessageFramer()
        var output: [(bytes: [UInt8], isReply: Bool)] = []
        var outputHead = 0
        var outputBytes = 0
        var pendingReplies = 0
        var pendingEvents = 0
        var droppedEvents = 0
        var watches: [Watch] = []
        var transactions: [UInt32: Transaction] = [:]
        var nextTransactionID: UInt32 = 1
        var overflowed = false

        init(id: XenStoreConnectionID, identity: XenStoreIdentity) {
            self.id = id
            self.identity = identity
        }
    }

    /// What ``process(_:limit:)`` did.
    public enum ProcessResult: Equatable, Sendable {
        /// Every complete message was handled; more bytes are needed.
        case idle
        /// Stopped at the limit or at the outstanding-reply quota; call again later.
        case more
        /// The stream broke the protocol (a length over the payload limit) or the peer stopped
        /// reading its output; the connection must be closed.
        case close(XenStoreError)
    }

    /// Domains introduced with XS_INTRODUCE (or by the embedding hypervisor).
    public struct DomainRecord: Equatable, Sendable {
        /// The frame of the domain's xenstore page.
        public var mfn: UInt64
        /// The domain's xenstore event channel port.
        public var port: UInt32
    }

    /// The limits in force.
    public let quotas: XenStoreQuotas
    /// Output bytes a privileged connection may have queued before the engine stops reading
    /// it; a connection with 64 times this queued (a peer that never reads) is closed.
    public let outputHighWater: Int

    var nodes: [String: Node] = [:]
    var generationCounter: UInt64 = 0
    var entries: [UInt16: Int] = [:]
    var specialPermissions: [String: [XenStorePermission]] = [
        XenStorePath.introduceDomain: [XenStorePermission(domid: 0, access: .none)],
        XenStorePath.releaseDomain: [XenStorePermission(domid: 0, access: .none)],
    ]
    var domains: [UInt16: DomainRecord] = [:]
    var connections: [XenStoreConnectionID: Connection] = [:]
    var connectionOrder: [XenStoreConnectionID] = []
    var nextConnection: UInt64 = 1

    /// Called after XS_INTRODUCE of a new domain (domid, mfn, port), so an embedding
    /// hypervisor can attach the domain's ring.
    public var onIntroduce: ((UInt16, DomainRecord) -> Void)?
    /// Called after XS_RELEASE of a domain.
    public var onRelease: ((UInt16) -> Void)?

    /// An engine holding `/`, `/tool` and `/tool/xenstored`, owned by dom0 with no access
    /// for others, as C xenstored starts.
    public init(quotas: XenStoreQuotas = XenStoreQuotas(), outputHighWater: Int = 1 << 20) {
        self.quotas = quotas
        self.outputHighWater = outputHighWater
        let dom0 = [XenStorePermission(domid: 0, access: .none)]
        for path in ["/", "/tool", "/tool/xenstored"] {
            generationCounter += 1
            nodes[path] = Node(value: [], permissions: dom0, generation: generationCounter)
            entries[0, default: 0] += 1
        }
        addChild("tool", to: "/")
        addChild("xenstored", to: "/tool")
    }

    private func addChild(_ name: String, to path: String) {
        nodes[path]?.children.append(name)
        nodes[path]?.childBytes += name.utf8.count + 1
    }

    // MARK: Connections

    /// Opens a connection with the identity its acceptor vouches for.
    public func openConnection(identity: XenStoreIdentity) -> XenStoreConnectionID {
        let id = XenStoreConnectionID(rawValue: nextConnection)
        nextConnection += 1
        connections[id] = Connection(id: id, identity: identity)
        connectionOrder.append(id)
        return id
    }

    /// Closes a connection: its watches, open transactions (aborted) and queued output go.
    public func closeConnection(_ id: XenStoreConnectionID) {
        guard connections.removeValue(forKey: id) != nil else { return }
        connectionOrder.removeAll { $0 == id }
    }

    /// The identity of an open connection.
    public func identity(of id: XenStoreConnectionID) -> XenStoreIdentity? { connections[id]?.identity }

    /// Number of open connections.
    public var connectionCount: Int { connections.count }

    /// Adds bytes received from a connection; call ``process(_:limit:)`` to act on them.
    public func receive(_ id: XenStoreConnectionID, _ bytes: UnsafeRawBufferPointer) {
        connections[id]?.framer.append(bytes)
    }

    /// Adds bytes received from a connection.
    public func receive(_ id: XenStoreConnectionID, _ bytes: [UInt8]) {
        connections[id]?.framer.append(bytes)
    }

    /// Whether the connection may send more requests now: false once it has
    /// ``XenStoreQuotas/outstandingRequests`` replies undelivered (unprivileged) or
    /// ``outputHighWater`` bytes queued (privileged). The server stops reading it until then.
    public func canReceive(_ id: XenStoreConnectionID) -> Bool {
        guard let c = connections[id] else { return false }
        if c.identity.privileged { return c.outputBytes < outputHighWater }
        return c.pendingReplies < quotas.outstandingRequests
    }

    /// Input bytes the engine holds for a connection before its transport should stop
    /// reading: keeps a flood of small requests from piling up faster than they are served.
    public static let inputHighWater = 65536

    /// Whether the transport should read more from the connection now: it may send
    /// (``canReceive(_:)``) and less than ``inputHighWater`` bytes wait to be handled.
    public func wantsInput(_ id: XenStoreConnectionID) -> Bool {
        guard let c = connections[id] else { return false }
        return c.framer.bufferedCount < Self.inputHighWater && canReceive(id)
    }

    /// Handles up to `limit` complete messages from the connection's input.
    public func process(_ id: XenStoreConnectionID, limit: Int) -> ProcessResult {
        guard let c = connections[id] else { return .idle }
        var handled = 0
        while handled < limit {
            if c.overflowed {
                return .close(.peerNotReading(queuedBytes: c.outputBytes, limit: 64 * outputHighWater))
            }
            guard canReceive(id) else { return .more }
            let message: XenStoreMessage?
            do {
                message = try c.framer.next()
            } catch {
                return .close(error)
            }
            guard let message else { return .idle }
            handle(c, message)
            handled += 1
        }
        return .more
    }

    /// Whether the connection has output queued.
    public func hasOutput(_ id: XenStoreConnectionID) -> Bool {
        guard let c = connections[id] else { return false }
        return c.outputHead < c.output.count
    }

    /// Whether the connection's peer let its output grow past every bound; it must be closed.
    public func isOverflowed(_ id: XenStoreConnectionID) -> Bool { connections[id]?.overflowed ?? false }

    /// Removes and returns the next queued message (a reply or a watch event) as bytes.
    public func popOutput(_ id: XenStoreConnectionID) -> [UInt8]? {
        guard let c = connections[id], c.outputHead < c.output.count else { return nil }
        let item = c.output[c.outputHead]
        c.outputHead += 1
        if c.outputHead == c.output.count {
            c.output.removeAll(keepingCapacity: true)
            c.outputHead = 0
        } else if c.outputHead >= 256 {
            c.output.removeFirst(c.outputHead)
            c.outputHead = 0
        }
        c.outputBytes -= item.bytes.count
        if item.isReply { c.pendingReplies -= 1 } else { c.pendingEvents -= 1 }
        return item.bytes
    }

    /// Watch events dropped for this connection because its queue was full.
    public func droppedEvents(_ id: XenStoreConnectionID) -> Int { connections[id]?.droppedEvents ?? 0 }

    func enqueue(_ c: Connection, _ message: XenStoreMessage, isReply: Bool) {
        let bytes = message.encoded()
        c.output.append((bytes, isReply))
        c.outputBytes += bytes.count
        if isReply { c.pendingReplies += 1 } else { c.pendingEvents += 1 }
        if c.outputBytes > 64 * outputHighWater { c.overflowed = true }
    }

    // MARK: Domains

    /// Records a domain as introduced and fires @introduceDomain (what XS_INTRODUCE does);
    /// false if it already was.
    @discardableResult
    public func introduceDomain(_ domid: UInt16, mfn: UInt64 = 0, port: UInt32 = 0) -> Bool {
        guard domains[domid] == nil else { return false }
        let record = DomainRecord(mfn: mfn, port: port)
        domains[domid] = record
        deliverSpecial(XenStorePath.introduceDomain)
        onIntroduce?(domid, record)
        return true
    }

    /// Forgets a domain and fires @releaseDomain (what XS_RELEASE does); false if unknown.
    @discardableResult
    public func releaseDomain(_ domid: UInt16) -> Bool {
        guard domains.removeValue(forKey: domid) != nil else { return false }
        deliverSpecial(XenStorePath.releaseDomain)
        onRelease?(domid)
        return true
    }

    /// Whether a domain is introduced (dom0 always is).
    public func isIntroduced(_ domid: UInt16) -> Bool { domid == 0 || domains[domid] != nil }

    // MARK: Inspection (tests, model checks)

    /// A node's value outside any transaction, bypassing permissions.
    public func value(at path: String) -> [UInt8]? { nodes[path]?.value }
    /// A node's children outside any transaction, bypassing permissions.
    public func children(at path: String) -> [String]? { nodes[path]?.children }
    /// A node's permissions outside any transaction.
    public func permissions(at path: String) -> [XenStorePermission]? { nodes[path]?.permissions }
    /// Number of nodes in the tree.
    public var nodeCount: Int { nodes.count }
    /// Nodes owned by a domain.
    public func ownedNodes(_ domid: UInt16) -> Int { entries[domid] ?? 0 }
    /// Every node path, sorted (tests compare whole trees).
    public var allPaths: [String] { nodes.keys.sorted() }
    /// Open transactions of a connection.
    public func transactionCount(_ id: XenStoreConnectionID) -> Int { connections[id]?.transactions.count ?? 0 }
    /// Watches of a connection.
    public func watchCount(_ id: XenStoreConnectionID) -> Int { connections[id]?.watches.count ?? 0 }

    /// Checks the tree's internal invariants: every child listed exists, every node but
    /// the root is listed by its parent once, ownership counts match. Returns a problem or nil.
    public func checkInvariants() -> String? {
        var owned: [UInt16: Int] = [:]
        for (path, node) in nodes {
            owned[node.owner, default: 0] += 1
            guard !node.permissions.isEmpty else { return "\(path) has no permissions" }
            var bytes = 0
            for child in node.children {
                bytes += child.utf8.count + 1
                if nodes[XenStorePath.join(path, child)] == nil { return "\(path) lists missing child \(child)" }
            }
            if bytes != node.childBytes { return "\(path) childBytes \(node.childBytes) != \(bytes)" }
            if Set(node.children).count != node.children.count { return "\(path) lists a child twice" }
            if path != "/" {
                let parent = XenStorePath.parent(of: path)
                guard let p = nodes[parent], p.children.contains(XenStorePath.basename(of: path)) else {
                    return "\(path) is not listed by its parent \(parent)"
                }
            }
        }
        let counted = entries.filter { $0.value != 0 }
        if owned != counted { return "ownership counts \(counted) != \(owned)" }
        return nil
    }
}
