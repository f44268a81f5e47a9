import CXenLocal
import Foundation
import Logging
import SharedMemory
import XenPlatform
import XenStore

/// The local hypervisor: grants, event channels and xenstore between ordinary processes,
/// with the same checks Xen makes. One thread serves the hypervisor sockets; the embedded
/// xenstored runs on its own.
///
/// The domain a connection acts as is decided here, by the socket it came in on:
/// `DIR/hypervisor.socket` is dom0, `DIR/domains/NAME/hypervisor.socket` is domain NAME.
/// Nothing a peer sends can change that.
public final class LocalHypervisor: @unchecked Sendable {
    // SAFETY (@unchecked): all mutable state is touched only by the loop thread, except
    // `wakeFD`, which is written to stop it.

    /// Settings for a hypervisor instance.
    public struct Configuration: Sendable {
        /// Where the sockets live.
        public var stateDirectory: String
        /// Pages in each domain's memory pool (memfd, sparse until used).
        public var poolPages: Int = 65536
        /// Entries in each domain's grant table.
        public var grantEntries: Int = 32768

        public init(stateDirectory: String) { self.stateDirectory = stateDirectory }
    }

    public let configuration: Configuration
    let logger: Logger
    let xenstore: XenStoreServer
    /// The embedded xenstored, for attaching a domain's xenstore ring.
    public var xenStoreServer: XenStoreServer { xenstore }
    var domains: [DomainID: LocalDomain] = [:]
    var connections: [Int32: HypervisorConnection] = [:]
    var dom0Listener: Int32 = -1
    let wakeFD: Int32
    var running = true
    private let finished = DispatchSemaphore(value: 0)
    var nextHandle: UInt64 = 1
    /// The loop's epoll set: the wake eventfd, every listener and every connection, kept in
    /// the kernel and changed only when one comes, goes or changes what it waits for.
    let epollFD: Int32
    /// What each registered token stands for. Tokens are never reused, so an event taken
    /// for something closed since finds nothing here.
    var registrations: [UInt64: PollSlot] = [:]
    var nextToken: UInt64 = 1
    /// Where the loop takes ready tokens and their events, reused for every wait.
    var readyTokens = [UInt64](repeating: 0, count: 64)
    var readyEvents = [UInt32](repeating: 0, count: 64)
    /// The loop's receive buffer and descriptor slots, reused for every read.
    var receiveBuffer = [UInt8](repeating: 0, count: 65536)
    var receivedFDs = [Int32](repeating: -1, count: 16)

    /// Replies queued for a client before the hypervisor stops reading its requests.
    static let maxQueuedReplies = 64
    /// Concurrent connections one domain may hold.
    static let maxConnectionsPerDomain = 256
    /// Event-channel ports one domain may hold.
    static let maxPortsPerDomain = 1024

    /// Sets up dom0, the sockets and the embedded xenstored. Call ``run()`` to serve.
    public init(configuration: Configuration, logger: Logger = Logger(label: "xensplit.hypervisor")) throws(PlatformError) {
        self.configuration = configuration
        self.logger = logger
        let dir = configuration.stateDirectory
        do {
            try FileManager.default.createDirectory(atPath: dir + "/domains", withIntermediateDirectories: true)
        } catch {
            throw .system("mkdir \(dir)/domains: \(error)", errno: EACCES)
        }
        let w = xl_eventfd(1)
        guard w >= 0 else { throw .system("eventfd", errno: -w) }
        wakeFD = w
        let ep = xl_epoll_create()
        guard ep >= 0 else { throw .system("epoll_create1", errno: -ep) }
        epollFD = ep
        do {
            xenstore = try XenStoreServer(logger: Logger(label: "xensplit.xenstored"))
            try xenstore.listen(path: dir + "/xenstored.socket", identity: .tool)
            try xenstore.start()
        } catch {
            throw .hypervisor("xenstored: \(error)")
        }
        domains[0] = try LocalDomain(id: 0, name: "Domain-0", poolPages: configuration.poolPages,
                                     grantEntries: configuration.grantEntries)
        try Self.writeDom0Home(xenstore)
        let l = xl_listen_unix(dir + "/hypervisor.socket", 64)
        guard l >= 0 else { throw .system("listen on \(dir)/hypervisor.socket", errno: -l) }
        dom0Listener = l
        _ = xl_set_nonblocking(l)
        guard register(wakeFD, events: Int16(POLLIN), as: .wake) != nil,
              register(l, events: Int16(POLLIN), as: .listener(fd: l, domain: 0)) != nil
        else { throw .hypervisor("its wake eventfd or dom0's listener could not join its epoll set (logged)") }
        logger.info("local hypervisor ready", metadata: ["state-dir": "\(dir)"])
    }

    /// Dom0's home (``XenStoreEngine/dom0HomeNodes``), as Xen's dom0 set-up writes it.
    static func writeDom0Home(_ xenstore: XenStoreServer) throws(PlatformError) {
        let failures = xenstore.withEngineBlocking { engine in engine.writeDom0Home() }
        guard failures.isEmpty else { throw .hypervisor("xenstored refused dom0's home: \(failures.joined(separator: "; "))") }
    }

    /// The dom0 hypervisor socket path for a state directory.
    public static func socketPath(stateDirectory: String) -> String { stateDirectory + "/hypervisor.socket" }
    /// A domain's hypervisor socket path.
    public static func socketPath(stateDirectory: String, domain name: String) -> String {
        stateDirectory + "/domains/\(name)/hypervisor.socket"
    }
    /// The xenstore socket a domain's processes use (dom0: the one Xen's tools use too).
    public static func xenStorePath(stateDirectory: String, domain name: String?) -> String {
        name.map { stateDirectory + "/domains/\($0)/xenstored.socket" } ?? stateDirectory + "/xenstored.socket"
    }

    /// Asks a running ``run()`` to return. Safe from any thread.
    public func stop() {
        _ = xl_eventfd_signal(wakeFD)
    }

    /// Serves on a new thread, for embedding (tests, benchmarks, the demo); end it with
    /// ``stopAndWait()``.
    public func start() {
        let finished = self.finished
        Thread { [self] in
            run()
            finished.signal()
        }.start()
    }

    /// Stops a hypervisor started with ``start()`` and returns once it has closed every
    /// connection and removed its sockets.
    public func stopAndWait() {
        stop()
        finished.wait()
    }

    /// Serves until ``stop()``, then closes every socket and removes the socket files.
    ///
    /// Everything the loop waits for stays registered in its epoll set (level-triggered,
    /// as poll): a wake-up costs the ready descriptors, not all of them, and a connection's
    /// interest changes with one epoll_ctl only when its wish to read or write does.
    public func run() {
        while running {
            let n = readyTokens.withUnsafeMutableBufferPointer { tokens in
                readyEvents.withUnsafeMutableBufferPointer { events in
                    xl_epoll_wait_events(epollFD, tokens.baseAddress, events.baseAddress, Int32(tokens.count), -1)
                }
            }
            if n < 0 {
                if n == -EINTR { continue }
                logger.error("epoll_wait failed: errno \(-n)")
                break
            }
            for i in 0..<Int(n) {
                guard let slot = registrations[readyTokens[i]] else { continue }
                switch slot {
                case .wake:
                    _ = xl_eventfd_drain(wakeFD)
                    running = false
                case let .listener(fd, domain):
                    accept(on: fd, domain: domain)
                case let .connection(c):
                    guard !c.closed else { continue }
                    // EPOLLIN, EPOLLOUT, EPOLLERR and EPOLLHUP have poll's values.
                    service(c, revents: Int16(truncatingIfNeeded: readyEvents[i]))
                    if !c.closed { updateInterest(c) }
                }
            }
        }
        shutdown()
    }

    /// Adds `fd` to the loop's epoll set; its token, or nil (logged) if epoll refused it.
    func register(_ fd: Int32, events: Int16, as slot: PollSlot) -> UInt64? {
        let token = nextToken
        nextToken += 1
        let rc = xl_epoll_control(epollFD, EPOLL_CTL_ADD, fd, UInt32(UInt16(bitPattern: events)), token)
        guard rc == 0 else {
            logger.error("epoll_ctl add failed: errno \(-rc)")
            return nil
        }
        registrations[token] = slot
        return token
    }

    /// Tells epoll what `c` waits for now, if that changed.
    func updateInterest(_ c: HypervisorConnection) {
        let wanted = c.pollEvents
        guard wanted != c.registeredEvents else { return }
        let rc = xl_epoll_control(epollFD, EPOLL_CTL_MOD, c.fd, UInt32(UInt16(bitPattern: wanted)), c.token)
        guard rc == 0 else {
            disconnect(c, reason: "epoll_ctl mod failed: errno \(-rc)")
            return
        }
        c.registeredEvents = wanted
    }

    func accept(on listener: Int32, domain: DomainID) {
        while true {
            let fd = xl_accept(listener)
            guard fd >= 0 else { return }
            let pid = xl_peer_pid(fd)
            guard connections.values.count(where: { $0.domain == domain }) < Self.maxConnectionsPerDomain else {
                logger.warning("refused a connection: domain has \(Self.maxConnectionsPerDomain) already",
                               metadata: ["domain": "\(domain)", "pid": "\(pid)"])
                Glibc.close(fd)
                continue
            }
            let c = HypervisorConnection(fd: fd, domain: domain, pid: pid)
            guard let token = register(fd, events: c.pollEvents, as: .connection(c)) else {
                Glibc.close(fd)
                continue
            }
            c.token = token
            c.registeredEvents = c.pollEvents
            connections[fd] = c
            logger.debug("connection", metadata: ["domain": "\(domain)", "pid": "\(pid)"])
        }
    }

    func service(_ c: HypervisorConnection, revents: Int16) {
        if revents & Int16(POLLOUT) != 0 {
            flush(c)
            // Requests held back while replies were queued.
            if !c.closed { processInbox(c) }
            if c.closed { return }
        }
        if revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
            var count: Int32 = 0
            // One buffer for every read: the loop is the only reader.
            let n = receiveBuffer.withUnsafeMutableBytes { b in
                receivedFDs.withUnsafeMutableBufferPointer {
                    xl_recv_with_fds(c.fd, b.baseAddress, b.count, $0.baseAddress, Int32($0.count), &count)
                }
            }
            // Clients never pass descriptors to the hypervisor; drop any they try.
            for i in 0..<Int(count) { Glibc.close(receivedFDs[i]) }
            if n == -Int(EAGAIN) { return }
            guard n > 0 else {
                disconnect(c, reason: n == 0 ? "closed" : "read error \(-n)")
                return
            }
            receiveBuffer.withUnsafeBytes { c.inbox.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            processInbox(c)
        }
    }

    func processInbox(_ c: HypervisorConnection) {
        while c.inbox.count >= HypervisorMessage.headerSize, c.outbox.count < Self.maxQueuedReplies {
            let header: (kind: HypervisorMessage.Kind, tag: UInt32, status: Int32, length: Int)
            do {
                header = try c.inbox.withUnread { try HypervisorMessage.decodeHeader($0.prefix(HypervisorMessage.headerSize)) }
            } catch {
                disconnect(c, reason: "protocol violation: \(error)")
                return
            }
            let total = HypervisorMessage.headerSize + header.length
            guard c.inbox.count >= total else { return }
            let payload = c.inbox.withUnread { Array($0.dropFirst(HypervisorMessage.headerSize).prefix(header.length)) }
            c.inbox.consume(total)
            let reply = handle(header.kind, payload: payload, from: c)
            enqueue(HypervisorMessage(kind: header.kind, tag: header.tag, status: reply.status, payload: reply.payload),
                    fds: reply.fds, to: c)
            if c.closed { return }
        }
    }

    func enqueue(_ message: HypervisorMessage, fds: [Int32], to c: HypervisorConnection) {
        // Descriptors are duplicated so they stay valid until sent, whatever happens to
        // their owner meanwhile.
        let owned = fds.map { dup($0) }
        c.outbox.append(OutgoingMessage(bytes: message.encoded(), fds: owned))
        flush(c)
    }

    func flush(_ c: HypervisorConnection) {
        while var first = c.outbox.first {
            let remaining = first.bytes.count - first.sent
            let n = first.bytes.withUnsafeBytes { b in
                let fds = first.sent == 0 ? first.fds : []
                return fds.withUnsafeBufferPointer {
                    xl_send_with_fds(c.fd, b.baseAddress! + first.sent, remaining, $0.baseAddress, Int32($0.count))
                }
            }
            if n == -Int(EAGAIN) { return }
            guard n > 0 else {
                disconnect(c, reason: "write error \(-n)")
                return
            }
            if first.sent == 0 {
                first.closeDescriptors()
                first.fds = []
            }
            first.sent += n
            if first.sent == first.bytes.count {
                c.outbox.removeFirst()
            } else {
                c.outbox[0] = first
                return
            }
        }
    }

    /// Ends a connection: its mappings, ports and copy buffers go with it; what its
    /// domain shared stays, since the domain outlives its processes.
    func disconnect(_ c: HypervisorConnection, reason: String) {
        guard !c.closed else { return }
        c.closed = true
        for (handle, m) in c.mappings {
            releasePins(domain: m.domain, refs: m.refs, writable: m.writable)
            c.mappings[handle] = nil
        }
        for key in c.ports { closePort(domain: key.domain, port: key.port) }
        c.ports.removeAll()
        if let d = domains[c.domain] {
            for id in c.buffers.keys { d.memory.freeBuffer(id) }
        }
        c.buffers.removeAll()
        for m in c.outbox { m.closeDescriptors() }
        c.outbox.removeAll()
        connections[c.fd] = nil
        // Closing the descriptor takes it out of the epoll set.
        registrations[c.token] = nil
        Glibc.close(c.fd)
        logger.debug("connection ended", metadata: ["domain": "\(c.domain)", "pid": "\(c.pid)", "reason": "\(reason)"])
    }

    func shutdown() {
        for c in Array(connections.values) { disconnect(c, reason: "hypervisor stopping") }
        for d in domains.values where d.id != 0 { closeListener(d) }
        Glibc.close(dom0Listener)
        unlink(Self.socketPath(stateDirectory: configuration.stateDirectory))
        Glibc.close(epollFD)
        xenstore.stop()
        logger.info("local hypervisor stopped")
    }

    func closeListener(_ d: LocalDomain) {
        if d.listener >= 0 {
            Glibc.close(d.listener)
            d.listener = -1
            registrations[d.listenerToken] = nil
        }
        if let dir = d.directory {
            unlink(dir + "/hypervisor.socket")
            unlink(dir + "/xenstored.socket")
            rmdir(dir)
        }
    }
}

/// What one descriptor in the hypervisor's epoll set stands for.
enum PollSlot {
    /// The eventfd ``LocalHypervisor/stop()`` signals.
    case wake
    /// A domain's listening socket.
    case listener(fd: Int32, domain: DomainID)
    case connection(HypervisorConnection)
}

/// One client of the hypervisor and what it holds.
final class HypervisorConnection {
    let fd: Int32
    let domain: DomainID
    let pid: Int32
    /// Bytes received and not yet taken as requests.
    var inbox = ByteQueue()
    /// Its token in the loop's epoll set, and the events registered there.
    var token: UInt64 = 0
    var registeredEvents: Int16 = 0
    var outbox: [OutgoingMessage] = []
    var closed = false
    /// Grant mappings by handle.
    var mappings: [UInt64: (domain: DomainID, refs: [GrantRef], writable: Bool)] = [:]
    /// Event-channel ports this connection bound or allocated.
    var ports: [(domain: DomainID, port: EventPort)] = []
    /// Copy buffers (first frame -> pages) in its own domain's pool.
    var buffers: [UInt32: Int] = [:]

    init(fd: Int32, domain: DomainID, pid: Int32) {
        self.fd = fd
        self.domain = domain
        self.pid = pid
    }

    /// What the loop waits for on this connection. A client that does not read its
    /// replies is not read either.
    var pollEvents: Int16 {
        (outbox.count < LocalHypervisor.maxQueuedReplies ? Int16(POLLIN) : 0) | (outbox.isEmpty ? 0 : Int16(POLLOUT))
    }
}

/// A byte FIFO that takes from the front by moving an index, not by shifting what is left:
/// the consumed prefix is dropped in one move, only once it is at least half the storage.
struct ByteQueue {
    private var storage: [UInt8] = []
    private var start = 0

    /// Bytes waiting.
    var count: Int { storage.count - start }

    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        if start > 0, start >= storage.count / 2 {
            storage.removeSubrange(0..<start)
            start = 0
        }
        storage.append(contentsOf: bytes)
    }

    /// Storage kept once empty; a larger one (a big request's) is given back.
    static let keptCapacity = 65536

    /// Drops the first `n` waiting bytes.
    mutating func consume(_ n: Int) {
        precondition(n <= count, "consumed \(n) of \(count) waiting bytes")
        start += n
        if start == storage.count {
            storage.removeAll(keepingCapacity: storage.capacity <= Self.keptCapacity)
            start = 0
        }
    }

    /// Calls `body` with the waiting bytes (a slice: index it relative to its start). The
    /// slice must not outlive `body`, or the next change copies the storage.
    func withUnread<T, E: Error>(_ body: (ArraySlice<UInt8>) throws(E) -> T) throws(E) -> T {
        try body(storage[start...])
    }
}

struct OutgoingMessage {
    var bytes: [UInt8]
    var fds: [Int32]
    var sent = 0
    func closeDescriptors() { for fd in fds where fd >= 0 { Glibc.close(fd) } }
}

/// What a handler answers.
struct HandlerReply {
    var status: Int32 = 0
    var payload: [UInt8] = []
    var fds: [Int32] = []

    static func errno(_ e: Int32, _ message: String) -> HandlerReply {
        HandlerReply(status: e, payload: Array(message.utf8))
    }

    /// The reply for a platform error: a GNTST status with its ref, or an errno.
    static func platform(_ error: PlatformError) -> HandlerReply {
        switch error {
        case let .grant(status, ref, _, reason): return .grant(status, ref: ref, reason)
        case let .system(what, errno): return .errno(errno, what)
        case let .invalidArgument(what): return .errno(EINVAL, what)
        case let .grantBusy(ref): return .errno(EBUSY, "grant \(ref) is mapped")
        default: return .errno(EIO, "\(error)")
        }
    }

    static func grant(_ status: GrantStatus, ref: GrantRef, _ message: String) -> HandlerReply {
        var w = PayloadWriter()
        w.u32(ref)
        w.raw(Array(message.utf8))
        return HandlerReply(status: Int32(status.rawValue), payload: w.bytes)
    }
}
