import Dispatch
import Glibc
import Logging
import Synchronization
import URing
import XenPlatform

/// A backend worker thread, for any device type: it owns one I/O engine (made on the
/// thread, as io_uring's single-issuer mode needs) and serves many ``BackendQueue``s,
/// sleeping only in the engine's `wait`.
///
/// Each queue's event-channel descriptor is watched by a one-shot `.pollReadable` in the
/// same engine as the queues' I/O. When it fires the worker takes every pending port from
/// that handle (unmasking each before it looks at the ring, so nothing signalled later is
/// missed), services the queues those ports belong to and re-arms the poll. Control
/// threads add and remove queues through a mailbox: a mutex-guarded command list and a
/// pipe the worker also polls. An idle queue costs one armed poll and no CPU.
///
/// Queues that share one event-channel handle each keep their own poll on its
/// descriptor; whichever fires first delivers the ports of all of them.
public final class BackendWorker: Sendable {
    /// The most queues one worker serves.
    public let maxQueues: Int
    /// ``maxQueues`` unless a caller says otherwise.
    public static let defaultMaxQueues = 64
    /// Commands for the worker; nil once it stopped taking them.
    let mailbox: Mutex<[BackendWorkerCommand]?>
    /// The mailbox's doorbell: the worker polls its read end, senders wake it.
    let doorbell: WakePipe
    let thread: Mutex<pthread_t?>
    let logger: Logger

    /// Starts a worker thread named `threadName` (so `top -H` and /proc tell the workers
    /// from the rest of a daemon) whose engine `factory` makes. Throws if the thread or the
    /// engine cannot be made.
    public init(factory: BlockIOEngineFactory, maxQueues: Int = BackendWorker.defaultMaxQueues,
                threadName: String = "backend-worker",
                logger: Logger = Logger(label: "xensplit.worker")) throws(BackendWorkerError) {
        do { doorbell = try WakePipe() } catch { throw .platform(error) }
        self.maxQueues = maxQueues
        self.mailbox = Mutex([])
        self.thread = Mutex(nil)
        self.logger = logger
        let started = BackendWorkerReply()
        let loop = BackendWorkerLoop(worker: self, factory: factory)
        let context = Unmanaged.passRetained(BackendWorkerThreadStart {
            nameThisThread(threadName)
            loop.run(started: started)
        }).toOpaque()
        var handle = pthread_t()
        let result = pthread_create(&handle, nil, { context in
            guard let context else { return nil }
            Unmanaged<BackendWorkerThreadStart>.fromOpaque(context).takeRetainedValue().body()
            return nil
        }, context)
        guard result == 0 else {
            Unmanaged<BackendWorkerThreadStart>.fromOpaque(context).release()
            throw .platform(.system("pthread_create", errno: result))
        }
        if let error = started.wait() {
            pthread_join(handle, nil)
            throw error
        }
        thread.withLock { $0 = handle }
    }

    /// Hands `queue` to the worker, which starts serving it; `onDisconnect` runs on the
    /// worker thread, once, when the queue stops serving its frontend (keep it short:
    /// schedule the xenbus work and the ``removeQueue(_:)`` elsewhere; blocking calls made
    /// from the worker's thread throw ``BackendWorkerError/calledFromWorker``). Blocks
    /// until the worker took it.
    public func addQueue<Queue: BackendQueue>(_ queue: Queue,
                                              onDisconnect: @escaping @Sendable () -> Void = {}) throws(BackendWorkerError) {
        let done = BackendWorkerReply()
        try send(.add(BackendQueueBox(queue), onDisconnect, done))
        if let error = done.wait() { throw error }
    }

    /// Stops serving `queue`: no more requests are taken, in-flight ones complete, its
    /// poll is cancelled and it is retired (``BackendQueue/retire()``). Blocks until then;
    /// afterwards the queue is the caller's again, and it may unbind the port and unmap
    /// the ring.
    public func removeQueue<Queue: BackendQueue>(_ queue: Queue) throws(BackendWorkerError) {
        let done = BackendWorkerReply()
        try send(.remove(ObjectIdentifier(queue), queue.name, done))
        if let error = done.wait() { throw error }
    }

    /// ``removeQueue(_:)`` for async callers: suspends instead of blocking a thread, so a
    /// queue that takes long to finish its in-flight I/O (a hung NFS file, a dying device)
    /// holds up only this removal, not the cooperative threads every other device's xenbus
    /// work runs on.
    public func removeQueue<Queue: BackendQueue>(_ queue: Queue) async throws(BackendWorkerError) {
        let done = BackendWorkerReply()
        try send(.remove(ObjectIdentifier(queue), queue.name, done))
        if let error = await done.value() { throw error }
    }

    /// Runs `body` with `queue` on the worker's thread, between services, and waits for it:
    /// how a control thread changes what the queue checks requests against (a disk's size
    /// after an online resize) without a lock on the data path.
    public func perform<Queue: BackendQueue>(on queue: Queue,
                                             _ body: @escaping @Sendable (Queue) -> Void) throws(BackendWorkerError) {
        let done = BackendWorkerReply()
        let call: @Sendable (any BackendQueue) -> Void = { body(unsafeDowncast($0, to: Queue.self)) }
        try send(.perform(ObjectIdentifier(queue), queue.name, call, done))
        if let error = done.wait() { throw error }
    }

    /// ``perform(on:_:)`` for async callers (a device's housekeeping): suspends instead of
    /// blocking a thread of the cooperative pool while the worker is busy.
    public func perform<Queue: BackendQueue>(on queue: Queue,
                                             _ body: @escaping @Sendable (Queue) -> Void) async throws(BackendWorkerError) {
        let done = BackendWorkerReply()
        let call: @Sendable (any BackendQueue) -> Void = { body(unsafeDowncast($0, to: Queue.self)) }
        try send(.perform(ObjectIdentifier(queue), queue.name, call, done))
        if let error = await done.value() { throw error }
    }

    /// Removes every queue, stops the engine and joins the thread. Idempotent; does
    /// nothing when called from the worker's own thread.
    public func stop() {
        if let handle = thread.withLock({ $0 }), pthread_equal(handle, pthread_self()) != 0 { return }
        guard let handle = thread.withLock({ value -> pthread_t? in
            defer { value = nil }
            return value
        }) else { return }
        let done = BackendWorkerReply()
        if (try? send(.stop(done))) != nil { _ = done.wait() }
        pthread_join(handle, nil)
    }

    func send(_ command: BackendWorkerCommand) throws(BackendWorkerError) {
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
enum BackendWorkerCommand: Sendable {
    case add(BackendQueueBox, @Sendable () -> Void, BackendWorkerReply)
    case remove(ObjectIdentifier, String, BackendWorkerReply)
    case perform(ObjectIdentifier, String, @Sendable (any BackendQueue) -> Void, BackendWorkerReply)
    case stop(BackendWorkerReply)
}

/// Carries a queue to its worker (ownership moves with it).
struct BackendQueueBox: @unchecked Sendable {
    // SAFETY (@unchecked): the sender gives the queue up; the mailbox mutex orders memory.
    let queue: any BackendQueue
    init(_ queue: any BackendQueue) { self.queue = queue }
}

/// A one-shot answer from the worker to a control thread, which either blocks for it
/// (``wait()``) or suspends (``value()``); one of the two, once.
final class BackendWorkerReply: Sendable {
    struct State {
        var answered = false
        var failure: BackendWorkerError?
        var waiter: CheckedContinuation<BackendWorkerError?, Never>?
    }

    let semaphore = DispatchSemaphore(value: 0)
    let state = Mutex(State())

    func signal(_ failure: BackendWorkerError? = nil) {
        let waiter = state.withLock { s -> CheckedContinuation<BackendWorkerError?, Never>? in
            s.answered = true
            s.failure = failure
            defer { s.waiter = nil }
            return s.waiter
        }
        semaphore.signal()
        waiter?.resume(returning: failure)
    }

    func wait() -> BackendWorkerError? {
        semaphore.wait()
        return state.withLock { $0.failure }
    }

    func value() async -> BackendWorkerError? {
        await withCheckedContinuation { continuation in
            let answered = state.withLock { s -> Bool in
                if !s.answered { s.waiter = continuation }
                return s.answered
            }
            if answered { continuation.resume(returning: state.withLock { $0.failure }) }
        }
    }
}

final class BackendWorkerThreadStart {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}
