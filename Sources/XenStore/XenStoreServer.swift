import Dispatch
import Glibc
import Logging
import Synchronization

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

    /// Commands for the loop thread. Once the loop has ended, `stopped` is set and commands
    /// are carried out by the sender under the lock (the engine has no other user then).
    final class Mailbox: Sendable {
        let state = Mutex<(commands: [Command], stopped: Bool)>(([], false))
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
        stop()
        close(wakeFD)
        close(wakeWriteFD)
    }

    private func send(_ command: Command) {
        let queued = mailbox.state.withLock { state -> Bool in
            if state.stopped {
                loop.applyStopped(command)
                return false
            }
            state.commands.append(command)
            return true
        }
        if queued { Syscall.signal(wakeWriteFD) }
    }

    /// Listens on a Unix socket at `path` (replacing a stale one), mode 0600 from before it
    /// accepts anyone; accepted connections get `identity`.
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

    /// Runs `body` on the loop thread with the engine and blocks the calling thread until it
    /// returns, for callers outside Swift concurrency (a hypervisor's own thread). Never call
    /// it from the loop thread itself (inside another `withEngine` body).
    public func withEngineBlocking<T: Sendable>(_ body: @escaping @Sendable (XenStoreEngine) -> T) -> T {
        let result = BlockingResult<T>()
        send(.run { engine in result.set(body(engine)) })
        return result.wait()
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

/// A value handed from the loop thread to a thread blocked waiting for it.
final class BlockingResult<T: Sendable>: Sendable {
    private let value = Mutex<T?>(nil)
    private let gate = Gate()

    func set(_ v: T) {
        value.withLock { $0 = v }
        gate.advance()
    }

    func wait() -> T {
        while true {
            let seen = gate.current
            if let v = value.withLock({ $0 }) { return v }
            _ = gate.wait(past: seen)
        }
    }
}
