import Dispatch
import Glibc
import Logging
import SharedMemory
import Synchronization
import XenRing

/// A domain's xenstore ring as the server sees it: the shared page, a descriptor that
/// becomes readable when the domain notifies (an eventfd or a pipe: the server reads it
/// empty), and the function that notifies the domain.
public struct XenStoreRingEndpoint: Sendable {
    /// The `xenstore_domain_interface` page.
    public var interface: XenstoreRingInterface
    /// Readable when the domain has sent a notification; not owned by the server.
    public var eventFileDescriptor: Int32
    /// Notifies the domain that requests were consumed or responses produced.
    public var notify: @Sendable () -> Void
    /// The mapping that holds the page, kept alive while the server uses the ring.
    public var memoryOwner: MemoryRegion?

    /// An endpoint. Pass the page's region as `memoryOwner` unless something else keeps it
    /// mapped until the ring is detached or the server stops.
    public init(interface: XenstoreRingInterface, eventFileDescriptor: Int32, memoryOwner: MemoryRegion?,
                notify: @escaping @Sendable () -> Void) {
        self.interface = interface
        self.eventFileDescriptor = eventFileDescriptor
        self.memoryOwner = memoryOwner
        self.notify = notify
    }
}

/// xenstored: a ``XenStoreEngine`` served on Unix sockets and xenstore rings by one
/// thread running a poll loop.
///
/// Each connection's identity comes from whoever attaches it: sockets accepted from a
/// listener get the listener's identity (``XenStoreIdentity/tool`` by default, as C
/// xenstored treats socket clients), and an embedding hypervisor attaches a domain's
/// socket with ``attach(fileDescriptor:identity:)`` or its ring with
/// ``attach(ring:domid:)``. A connection is served at most 64 requests per loop turn and
/// is not read while its replies are undelivered past the quota, so a flooding or
/// non-reading client cannot starve the others.
public final class XenStoreServer: Sendable {
    enum Command: Sendable {
        case listen(Int32, XenStoreIdentity)
        case socket(Int32, XenStoreIdentity)
        case ring(XenStoreRingEndpoint, UInt16)
        case run(@Sendable (XenStoreEngine) -> Void)
        case detach(UInt16)
        case stop
    }

    final class Mailbox: Sendable {
        let commands = Mutex<[Command]>([])
    }

    private let mailbox = Mailbox()
    private let wakeFD: Int32
    private let wakeWriteFD: Int32
    private let loop: Loop
    private let thread = Mutex<JoinableThread?>(nil)
    private let listenPaths = Mutex<[String]>([])

    /// A server with an empty store (`/`, `/tool`, `/tool/xenstored`).
    public init(quotas: XenStoreQuotas = XenStoreQuotas(), logger: Logger = Logger(label: "xenstored")) throws(XenStoreError) {
        (wakeFD, wakeWriteFD) = try Syscall.wakePipe()
        loop = Loop(engine: XenStoreEngine(quotas: quotas), logger: logger)
    }

    deinit {
        close(wakeFD)
        close(wakeWriteFD)
    }

    private func send(_ command: Command) {
        mailbox.commands.withLock { $0.append(command) }
        Syscall.signal(wakeWriteFD)
    }

    /// Listens on a Unix socket at `path` (replacing a stale one); accepted connections get
    /// `identity`.
    public func listen(path: String, identity: XenStoreIdentity = .tool) throws(XenStoreError) {
        let fd = try Syscall.listen(path: path)
        listenPaths.withLock { $0.append(path) }
        send(.listen(fd, identity))
    }

    /// Serves an already-connected stream socket as `identity`. The server owns `fd` from
    /// now on and closes it when the connection ends.
    public func attach(fileDescriptor fd: Int32, identity: XenStoreIdentity) {
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        send(.socket(fd, identity))
    }

    /// Serves a domain's xenstore ring as `.domain(domid)`.
    public func attach(ring: XenStoreRingEndpoint, domid: UInt16) {
        send(.ring(ring, domid))
    }

    /// Closes every connection acting as `domid` (its ring and attached sockets). After
    /// this the ring's memory and event descriptor are no longer used. XS_RELEASE of a
    /// domain does the same.
    public func detach(domid: UInt16) {
        send(.detach(domid))
    }

    /// Runs `body` on the loop thread with the engine (introduce or release a domain,
    /// inspect the store) and returns its result.
    public func withEngine<T: Sendable>(_ body: @escaping @Sendable (XenStoreEngine) -> T) async -> T {
        await withCheckedContinuation { (continuation: CheckedContinuation<T, Never>) in
            send(.run { engine in continuation.resume(returning: body(engine)) })
        }
    }

    /// Like ``withEngine(_:)``, for callers on a plain thread (an embedding hypervisor's
    /// loop): blocks the calling thread, never the loop's, until `body` has run.
    public func withEngineBlocking<T: Sendable>(_ body: @escaping @Sendable (XenStoreEngine) -> T) -> T {
        let done = DispatchSemaphore(value: 0)
        let result = Mutex<T?>(nil)
        send(.run { engine in
            let value = body(engine)
            result.withLock { $0 = value }
            done.signal()
        })
        done.wait()
        return result.withLock { $0! }
    }

    /// Starts the loop on its own thread.
    public func start() throws(XenStoreError) {
        let loop = self.loop
        let wakeFD = self.wakeFD
        let mailbox = self.mailbox
        let t = try JoinableThread { loop.run(wakeFD: wakeFD, mailbox: mailbox) }
        thread.withLock { $0 = t }
    }

    /// Runs the loop on the calling thread until ``stop()``.
    public func run() {
        loop.run(wakeFD: wakeFD, mailbox: mailbox)
    }

    /// Stops the loop, closes every socket and removes the listening socket files.
    public func stop() {
        send(.stop)
        if let t = thread.withLock({ t -> JoinableThread? in defer { t = nil }; return t }) { t.join() }
        for path in listenPaths.withLock({ $0 }) { unlink(path) }
    }
}

/// The loop thread's state; touched only by that thread once it runs.
final class Loop: @unchecked Sendable {
    // SAFETY (@unchecked): every field is used by the single loop thread only.
    struct SocketConnection {
        var fd: Int32
        var pending: [UInt8] = []
        var pendingOffset = 0
    }

    struct RingConnection {
        var endpoint: XenStoreRingEndpoint
        var pending: [UInt8] = []
        var pendingOffset = 0
    }

    static let requestsPerTurn = 64

    let engine: XenStoreEngine
    let logger: Logger
    var listeners: [(fd: Int32, identity: XenStoreIdentity)] = []
    var sockets: [XenStoreConnectionID: SocketConnection] = [:]
    var rings: [XenStoreConnectionID: RingConnection] = [:]
    var scratch = [UInt8](repeating: 0, count: 65536)

    /// Domains released while a request was handled; their connections close after it.
    var released: [UInt16] = []

    init(engine: XenStoreEngine, logger: Logger) {
        self.engine = engine
        self.logger = logger
        engine.onRelease = { [unowned self] domid in self.released.append(domid) }
    }

    func detach(_ domid: UInt16) {
        for (id, _) in rings where engine.identity(of: id) == .domain(domid) { closeRing(id, code: .none) }
        for (id, _) in sockets where engine.identity(of: id) == .domain(domid) { closeSocket(id, "domain \(domid) detached") }
    }

    func run(wakeFD: Int32, mailbox: XenStoreServer.Mailbox) {
        var busy = false
        while true {
            var fds = [pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
            let polledListeners = listeners
            for l in polledListeners { fds.append(pollfd(fd: l.fd, events: Int16(POLLIN), revents: 0)) }
            let socketIDs = Array(sockets.keys)
            for id in socketIDs {
                guard let s = sockets[id] else { continue }
                var events: Int16 = 0
                if engine.canReceive(id) { events |= Int16(POLLIN) }
                if s.pendingOffset < s.pending.count || engine.hasOutput(id) { events |= Int16(POLLOUT) }
                fds.append(pollfd(fd: s.fd, events: events, revents: 0))
            }
            let ringIDs = Array(rings.keys)
            for id in ringIDs {
                fds.append(pollfd(fd: rings[id]?.endpoint.eventFileDescriptor ?? -1, events: Int16(POLLIN), revents: 0))
            }
            let ready = poll(&fds, nfds_t(fds.count), busy ? 0 : -1)
            if ready < 0 && errno != EINTR {
                logger.error("poll failed", metadata: ["errno": "\(errno)"])
                return
            }
            busy = false
            if fds[0].revents != 0 {
                Syscall.drain(wakeFD)
                let commands = mailbox.commands.withLock { list -> [XenStoreServer.Command] in defer { list = [] }; return list }
                for command in commands {
                    if !apply(command) {
                        shutdown()
                        return
                    }
                }
            }
            var index = 1
            for l in polledListeners {
                if fds[index].revents != 0 { acceptAll(l.fd, l.identity) }
                index += 1
            }
            for id in socketIDs {
                let revents = fds[index].revents
                index += 1
                guard revents != 0, sockets[id] != nil else { continue }
                if revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 { readSocket(id) }
            }
            for id in ringIDs {
                if fds[index].revents != 0, let fd = rings[id]?.endpoint.eventFileDescriptor {
                    Syscall.drain(fd)
                }
                index += 1
            }
            // Serve every connection: handle buffered requests, then flush output, which
            // other connections' writes may have produced.
            for id in Array(sockets.keys) where sockets[id] != nil {
                if serve(id) { busy = true }
            }
            for id in Array(rings.keys) where rings[id] != nil {
                if serveRing(id) { busy = true }
            }
            while let domid = released.popLast() { detach(domid) }
            for id in Array(sockets.keys) where sockets[id] != nil {
                flushSocket(id)
            }
            for id in Array(rings.keys) where rings[id] != nil {
                flushRing(id)
            }
        }
    }

    /// False for `.stop`.
    private func apply(_ command: XenStoreServer.Command) -> Bool {
        switch command {
        case let .listen(fd, identity):
            listeners.append((fd, identity))
        case let .socket(fd, identity):
            let id = engine.openConnection(identity: identity)
            sockets[id] = SocketConnection(fd: fd)
        case let .ring(endpoint, domid):
            let id = engine.openConnection(identity: .domain(domid))
            endpoint.interface.serverFeatures = [.error]
            rings[id] = RingConnection(endpoint: endpoint)
        case let .run(body):
            body(engine)
        case let .detach(domid):
            detach(domid)
        case .stop:
            return false
        }
        return true
    }

    private func shutdown() {
        for l in listeners { close(l.fd) }
        listeners = []
        for (id, s) in sockets {
            engine.closeConnection(id)
            close(s.fd)
        }
        sockets = [:]
        for id in rings.keys { engine.closeConnection(id) }
        rings = [:]
    }

    private func acceptAll(_ listener: Int32, _ identity: XenStoreIdentity) {
        while true {
            let fd = accept(listener, nil, nil)
            if fd < 0 {
                if errno == EINTR { continue }
                return
            }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            let id = engine.openConnection(identity: identity)
            sockets[id] = SocketConnection(fd: fd)
        }
    }

    private func closeSocket(_ id: XenStoreConnectionID, _ reason: String) {
        guard let s = sockets.removeValue(forKey: id) else { return }
        logger.debug("closing connection", metadata: ["conn": "\(id)", "reason": "\(reason)"])
        engine.closeConnection(id)
        close(s.fd)
    }

    private func readSocket(_ id: XenStoreConnectionID) {
        guard let fd = sockets[id]?.fd, engine.canReceive(id) else {
            // Not reading: hang-ups are noticed when it is read again.
            return
        }
        let n = scratch.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        if n > 0 {
            scratch.withUnsafeBytes { engine.receive(id, UnsafeRawBufferPointer(rebasing: $0[0 ..< n])) }
        } else if n == 0 {
            closeSocket(id, "peer closed")
        } else if errno != EAGAIN && errno != EINTR {
            closeSocket(id, "recv errno \(errno)")
        }
    }

    /// Handles buffered requests; true if more remain for the next turn.
    private func serve(_ id: XenStoreConnectionID) -> Bool {
        switch engine.process(id, limit: Self.requestsPerTurn) {
        case .idle:
            return false
        case .more:
            return engine.canReceive(id)
        case let .close(error):
            logger.warning("dropping connection", metadata: ["conn": "\(id)", "error": "\(error)"])
            if sockets[id] != nil { closeSocket(id, "\(error)") } else { closeRing(id, code: .protocolViolation) }
            return false
        }
    }

    private func flushSocket(_ id: XenStoreConnectionID) {
        guard var s = sockets[id] else { return }
        defer { if sockets[id] != nil { sockets[id] = s } }
        while true {
            if s.pendingOffset == s.pending.count {
                // Coalesce queued messages into one send.
                s.pending.removeAll(keepingCapacity: true)
                s.pendingOffset = 0
                while s.pending.count < 65536, let next = engine.popOutput(id) { s.pending += next }
                if s.pending.isEmpty { return }
            }
            let n = s.pending.withUnsafeBytes { raw in
                send(s.fd, raw.baseAddress! + s.pendingOffset, raw.count - s.pendingOffset, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
            }
            if n > 0 {
                s.pendingOffset += n
            } else {
                if n < 0 && (errno == EAGAIN || errno == EINTR) { return }
                closeSocket(id, "send errno \(errno)")
                return
            }
        }
    }

    private func closeRing(_ id: XenStoreConnectionID, code: XenstoreRingInterface.RingErrorCode) {
        guard let r = rings.removeValue(forKey: id) else { return }
        if code != .none {
            r.endpoint.interface.errorRaw = code.rawValue
            r.endpoint.notify()
        }
        engine.closeConnection(id)
    }

    /// Reads what the domain produced and handles it; true if more remain.
    private func serveRing(_ id: XenStoreConnectionID) -> Bool {
        guard let r = rings[id] else { return false }
        var consumed = false
        do {
            while engine.canReceive(id) {
                let n = try scratch.withUnsafeMutableBytes { try r.endpoint.interface.requests.read(into: $0) }
                if n == 0 { break }
                consumed = true
                scratch.withUnsafeBytes { engine.receive(id, UnsafeRawBufferPointer(rebasing: $0[0 ..< n])) }
            }
        } catch {
            logger.warning("dropping ring", metadata: ["conn": "\(id)", "error": "\(error)"])
            closeRing(id, code: .ringIndex)
            return false
        }
        if consumed { r.endpoint.notify() }
        return serve(id)
    }

    private func flushRing(_ id: XenStoreConnectionID) {
        guard var r = rings[id] else { return }
        var produced = false
        do {
            while true {
                if r.pendingOffset == r.pending.count {
                    guard let next = engine.popOutput(id) else { break }
                    r.pending = next
                    r.pendingOffset = 0
                }
                let n = try r.pending.withUnsafeBytes { raw in
                    try r.endpoint.interface.responses.write(UnsafeRawBufferPointer(rebasing: raw[r.pendingOffset...]))
                }
                if n == 0 { break }
                produced = true
                r.pendingOffset += n
            }
        } catch {
            logger.warning("dropping ring", metadata: ["conn": "\(id)", "error": "\(error)"])
            closeRing(id, code: .ringIndex)
            return
        }
        rings[id] = r
        if produced { r.endpoint.notify() }
    }
}
