import Dispatch
import Glibc
import Logging
import Synchronization
import URing
import XenPlatform

/// A backend worker thread: it owns one I/O engine (made on the thread, as io_uring's
/// single-issuer mode needs) and serves many ``BlkbackQueue``s, sleeping only in the
/// engine's `wait`.
///
/// Each queue's event-channel descriptor is watched by a one-shot `.pollReadable` in the
/// same engine as the disk I/O. When it fires the worker takes every pending port from
/// that handle (unmasking each before it looks at the ring, so nothing signalled later is
/// missed), services the queues those ports belong to and re-arms the poll. Control
/// threads add and remove queues through a mailbox: a mutex-guarded command list and an
/// eventfd the worker also polls. An idle queue costs one armed poll and no CPU.
///
/// Queues that share one event-channel handle each keep their own poll on its
/// descriptor; whichever fires first delivers the ports of all of them.
public final class BlkbackWorker: Sendable {
    /// The most queues one worker serves.
    public let maxQueues: Int
    /// ``maxQueues`` unless a caller says otherwise.
    public static let defaultMaxQueues = 64
    /// Commands for the worker; nil once it stopped taking them.
    let mailbox: Mutex<[BlkbackCommand]?>
    /// The mailbox's doorbell: the worker polls its read end, senders wake it.
    let doorbell: WakePipe
    let thread: Mutex<pthread_t?>
    let logger: Logger

    /// Starts a worker thread whose engine `factory` makes. Throws if the thread or the
    /// engine cannot be made.
    public init(factory: BlockIOEngineFactory, maxQueues: Int = BlkbackWorker.defaultMaxQueues,
                logger: Logger = Logger(label: "xensplit.blkback")) throws(BlockBackendError) {
        do { doorbell = try WakePipe() } catch { throw .platform(error) }
        self.maxQueues = maxQueues
        self.mailbox = Mutex([])
        self.thread = Mutex(nil)
        self.logger = logger
        let started = BlkbackReply()
        let loop = BlkbackWorkerLoop(worker: self, factory: factory)
        let context = Unmanaged.passRetained(BlkbackThreadStart {
            // Named, so `top -H` and /proc tell the workers from the rest of the daemon.
            nameThisThread("blkback-worker")
            loop.run(started: started)
        }).toOpaque()
        var handle = pthread_t()
        let result = pthread_create(&handle, nil, { context in
            guard let context else { return nil }
            Unmanaged<BlkbackThreadStart>.fromOpaque(context).takeRetainedValue().body()
            return nil
        }, context)
        guard result == 0 else {
            Unmanaged<BlkbackThreadStart>.fromOpaque(context).release()
            throw .platform(.system("pthread_create", errno: result))
        }
        if let error = started.wait() {
            pthread_join(handle, nil)
            throw error
        }
        thread.withLock { $0 = handle }
    }

    /// Hands `queue` to the worker, which starts serving it; `onDisconnect` runs on the
    /// worker thread, once, if the frontend breaks the protocol (keep it short: schedule
    /// the xenbus work and the ``removeQueue(_:)`` elsewhere; blocking calls made from the
    /// worker's thread throw ``BlockBackendError/calledFromWorker``). Blocks until the
    /// worker took it.
    public func addQueue(_ queue: BlkbackQueue,
                         onDisconnect: @escaping @Sendable (BlockBackendError) -> Void = { _ in }) throws(BlockBackendError) {
        let done = BlkbackReply()
        try send(.add(BlkbackQueueBox(queue), onDisconnect, done))
        if let error = done.wait() { throw error }
    }

    /// Stops serving `queue`: no more requests are taken, in-flight ones complete, its
    /// poll is cancelled and its copy buffer released. Blocks until then; afterwards the
    /// caller may unbind the port, unmap the ring and close the store.
    public func removeQueue(_ queue: BlkbackQueue) throws(BlockBackendError) {
        let done = BlkbackReply()
        try send(.remove(ObjectIdentifier(queue), done))
        if let error = done.wait() { throw error }
    }

    /// ``removeQueue(_:)`` for async callers: suspends instead of blocking a thread, so a
    /// disk that takes long to finish its in-flight I/O (a hung NFS file, a dying device)
    /// holds up only this removal, not the cooperative threads every other device's xenbus
    /// work runs on.
    public func removeQueue(_ queue: BlkbackQueue) async throws(BlockBackendError) {
        let done = BlkbackReply()
        try send(.remove(ObjectIdentifier(queue), done))
        if let error = await done.value() { throw error }
    }

    /// Sets the disk size requests of `queue` are checked against (online resize); the
    /// device layer then writes the new `sectors` node.
    public func resize(_ queue: BlkbackQueue, sectors512: UInt64) throws(BlockBackendError) {
        let done = BlkbackReply()
        try send(.resize(ObjectIdentifier(queue), sectors512, done))
        if let error = done.wait() { throw error }
    }

    /// Removes every queue, stops the engine and joins the thread. Idempotent; does
    /// nothing when called from the worker's own thread.
    public func stop() {
        if let handle = thread.withLock({ $0 }), pthread_equal(handle, pthread_self()) != 0 { return }
        guard let handle = thread.withLock({ value -> pthread_t? in
            defer { value = nil }
            return value
        }) else { return }
        let done = BlkbackReply()
        if (try? send(.stop(done))) != nil { _ = done.wait() }
        pthread_join(handle, nil)
    }

    func send(_ command: BlkbackCommand) throws(BlockBackendError) {
        if let handle = thread.withLock({ $0 }), pthread_equal(handle, pthread_self()) != 0 {
            throw .calledFromWorker
        }
        let open = mailbox.withLock { commands -> Bool in
            guard commands != nil else { return false }
            commands!.append(command)
            return true
        }
        guard open else { throw .workerStopped }
        doorbell.wake()
    }
}

/// A control request to a worker.
enum BlkbackCommand: Sendable {
    case add(BlkbackQueueBox, @Sendable (BlockBackendError) -> Void, BlkbackReply)
    case remove(ObjectIdentifier, BlkbackReply)
    case resize(ObjectIdentifier, UInt64, BlkbackReply)
    case stop(BlkbackReply)
}

/// Carries a queue to its worker (ownership moves with it).
struct BlkbackQueueBox: @unchecked Sendable {
    // SAFETY (@unchecked): the sender gives the queue up; the mailbox mutex orders memory.
    let queue: BlkbackQueue
    init(_ queue: BlkbackQueue) { self.queue = queue }
}

/// A one-shot answer from the worker to a control thread, which either blocks for it
/// (``wait()``) or suspends (``value()``); one of the two, once.
final class BlkbackReply: Sendable {
    struct State {
        var answered = false
        var failure: BlockBackendError?
        var waiter: CheckedContinuation<BlockBackendError?, Never>?
    }

    let semaphore = DispatchSemaphore(value: 0)
    let state = Mutex(State())

    func signal(_ failure: BlockBackendError? = nil) {
        let waiter = state.withLock { s -> CheckedContinuation<BlockBackendError?, Never>? in
            s.answered = true
            s.failure = failure
            defer { s.waiter = nil }
            return s.waiter
        }
        semaphore.signal()
        waiter?.resume(returning: failure)
    }

    func wait() -> BlockBackendError? {
        semaphore.wait()
        return state.withLock { $0.failure }
    }

    func value() async -> BlockBackendError? {
        await withCheckedContinuation { continuation in
            let answered = state.withLock { s -> Bool in
                if !s.answered { s.waiter = continuation }
                return s.answered
            }
            if answered { continuation.resume(returning: state.withLock { $0.failure }) }
        }
    }
}

final class BlkbackThreadStart {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}
