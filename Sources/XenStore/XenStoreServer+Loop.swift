import Glibc
import Logging
import XenRing

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

    /// Closes the connections that act as domain `domid` (toolstack sockets are never
    /// detached).
    func detach(_ domid: UInt16) {
        func isDomain(_ id: XenStoreConnectionID) -> Bool {
            guard let identity = engine.identity(of: id) else { return false }
            return identity.domid == domid && !identity.isTool
        }
        for id in rings.keys where isDomain(id) { closeRing(id, code: .none) }
        for id in sockets.keys where isDomain(id) { closeSocket(id, "domain \(domid) detached") }
    }

    func run(wakeFD: Int32, mailbox: XenStoreServer.Mailbox) {
        serve(wakeFD: wakeFD, mailbox: mailbox)
        shutdown()
        let late = mailbox.state.withLock { state -> [XenStoreServer.Command] in
            state.stopped = true
            defer { state.commands = [] }
            return state.commands
        }
        for command in late { applyStopped(command) }
    }

    /// A command that arrives after the loop ended: engine work still runs (on the
    /// sender's thread, under the mailbox lock); descriptors handed over are closed.
    func applyStopped(_ command: XenStoreServer.Command) {
        switch command {
        case let .listen(fd, _), let .socket(fd, _): close(fd)
        case let .run(body): body(engine)
        case .ring, .detach, .stop: break
        }
    }

    private func serve(wakeFD: Int32, mailbox: XenStoreServer.Mailbox) {
        var busy = false
        while true {
            var fds = [pollfd(fd: wakeFD, events: Int16(POLLIN), revents: 0)]
            let polledListeners = listeners
            for l in polledListeners { fds.append(pollfd(fd: l.fd, events: Int16(POLLIN), revents: 0)) }
            let socketIDs = Array(sockets.keys)
            for id in socketIDs {
                guard let s = sockets[id] else { continue }
                var events: Int16 = 0
                if engine.wantsInput(id) { events |= Int16(POLLIN) }
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
                let commands = mailbox.state.withLock { state -> [XenStoreServer.Command] in
                    defer { state.commands = [] }
                    return state.commands
                }
                for (i, command) in commands.enumerated() {
                    guard apply(command) else {
                        // Commands queued behind the stop are handled as late ones.
                        let rest = Array(commands[(i + 1)...])
                        mailbox.state.withLock { $0.commands.insert(contentsOf: rest, at: 0) }
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
        guard let fd = sockets[id]?.fd, engine.wantsInput(id) else {
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
            while engine.wantsInput(id) {
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
