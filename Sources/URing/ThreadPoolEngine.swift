import Glibc

/// The `BlockIOEngine` for machines without io_uring: a fixed pool of threads runs each
/// request as one preadv/pwritev/fdatasync/fallocate call and reports the result with
/// io_uring's convention (bytes, or -errno), so callers cannot tell the engines apart.
///
/// Waking the owner: the pool writes `completionEventFD` when completions become available
/// (or when as many are ready as a blocked `wait` asked for). `wait` sleeps in one poll(2)
/// over that eventfd, every fd watched by `.pollReadable`/`.pollWritable` and every fd a
/// stream operation waits on (it runs in the pool once its fd is ready), which is how this engine gives
/// a worker the same single place to sleep as io_uring does. A caller that runs its own
/// poll loop can watch `completionEventFD` directly and call `wait(minimum: 0)` when it fires.
///
/// Everything is preallocated at init (request slots, queues, poll array); a request is
/// copied into a slot and the slot index travels through the queues. The owner and the pool
/// meet under one mutex: this fallback trades lock-freedom for simplicity.
public final class ThreadPoolEngine: BlockIOEngine {
    let shared: ThreadPoolShared
    let queueDepth: Int
    public let capacity: Int
    public private(set) var inFlight = 0
    var isOpen = true
    var threads: [pthread_t] = []

    // Owner-only state.
    let freeSlots: UnsafeMutablePointer<Int32>
    var freeCount: Int
    let pending: UnsafeMutablePointer<Int32>
    var pendingCount = 0
    let watches: UnsafeMutablePointer<Int32>
    var watchCount = 0
    let pollSet: UnsafeMutablePointer<pollfd>
    var files: [Int32] = []
    var buffers: [UnsafeMutableRawBufferPointer] = []

    /// The eventfd the pool signals when completions are ready (owned by the engine).
    public var completionEventFD: Int32 { shared.eventFD }

    public var kind: BlockIOEngineKind { .threads }

    /// Starts `configuration.threads` threads.
    public init(configuration: BlockIOEngineConfiguration = .init()) throws(URingError) {
        guard configuration.queueDepth >= 1, configuration.queueDepth <= 65536 else {
            throw .invalidArgument(name: "queueDepth", value: configuration.queueDepth, limit: 65536)
        }
        guard configuration.capacity >= configuration.queueDepth, configuration.capacity <= 65536 else {
            throw .invalidArgument(name: "capacity", value: configuration.capacity, limit: 65536)
        }
        guard configuration.threads >= 1, configuration.threads <= 256 else {
            throw .invalidArgument(name: "threads", value: configuration.threads, limit: 256)
        }
        let eventFD: Int32
        switch Syscall.eventfd(initialValue: 0) {
        case let .success(fd): eventFD = fd
        case let .failure(errno): throw .system(call: "eventfd", errno)
        }
        let capacity = configuration.capacity
        self.capacity = capacity
        self.queueDepth = configuration.queueDepth
        self.shared = ThreadPoolShared(capacity: capacity, eventFD: eventFD)
        self.freeSlots = .allocate(capacity: capacity)
        for i in 0..<capacity { freeSlots[i] = Int32(capacity - 1 - i) }
        self.freeCount = capacity
        self.pending = .allocate(capacity: configuration.queueDepth)
        self.watches = .allocate(capacity: capacity)
        self.pollSet = .allocate(capacity: capacity + 1)
        for _ in 0..<configuration.threads {
            switch shared.startThread() {
            case let .success(thread): threads.append(thread)
            case let .failure(errno):
                close()
                throw .system(call: "pthread_create", errno)
            }
        }
    }

    deinit { close() }

    public func registerFiles(_ descriptors: [Int32]) throws(URingError) {
        guard isOpen else { throw .closed }
        files = descriptors
    }

    public func updateRegisteredFiles(_ descriptors: [Int32], at offset: Int) throws(URingError) {
        guard isOpen else { throw .closed }
        guard offset >= 0, offset <= files.count, descriptors.count <= files.count - offset else {
            throw .invalidArgument(name: "offset", value: offset, limit: files.count - descriptors.count)
        }
        files.replaceSubrange(offset..<(offset + descriptors.count), with: descriptors)
    }

    public func registerBuffers(_ buffers: [UnsafeMutableRawBufferPointer]) throws(URingError) {
        guard isOpen else { throw .closed }
        self.buffers = buffers
    }

    public func enqueue(_ request: BlockRequest) -> EnqueueOutcome {
        guard isOpen, freeCount > 0 else { return .queueFull(request) }
        if pendingCount == queueDepth {
            startPending()
        }
        freeCount -= 1
        let index = Int(freeSlots[freeCount])
        let (descriptor, failure) = resolve(request.operation)
        shared.slots[index] = ThreadPoolShared.Slot(
            request: request, descriptor: descriptor, state: .pending, result: failure)
        pending[pendingCount] = Int32(index)
        pendingCount += 1
        inFlight += 1
        return .accepted
    }

    /// The descriptor an operation runs on, and the -errno io_uring would report for a bad
    /// registered index or a fixed buffer outside its registration (0: none).
    func resolve(_ operation: BlockIOOperation) -> (Int32, Int32) {
        let file: FileReference
        switch operation {
        case let .read(f, _, _), let .write(f, _, _), let .readVector(f, _, _), let .writeVector(f, _, _),
             let .flush(f), let .discard(f, _, _), let .writeZeroes(f, _, _), let .streamRead(f, _),
             let .streamReadVector(f, _), let .streamWriteVector(f, _):
            file = f
        case let .readFixed(f, _, buffer, index):
            guard fixedBufferFits(UnsafeRawPointer(buffer.baseAddress), buffer.count, index) else {
                return (-1, -Glibc.EFAULT)
            }
            file = f
        case let .writeFixed(f, _, buffer, index):
            guard fixedBufferFits(buffer.baseAddress, buffer.count, index) else { return (-1, -Glibc.EFAULT) }
            file = f
        case let .pollReadable(fd), let .pollWritable(fd):
            file = .descriptor(fd)
        case .cancel:
            return (-1, 0)
        }
        switch file {
        case let .descriptor(fd): return (fd, 0)
        case let .registered(index):
            return Int(index) < files.count ? (files[Int(index)], 0) : (-1, -Glibc.EBADF)
        }
    }

    func fixedBufferFits(_ address: UnsafeRawPointer?, _ count: Int, _ index: UInt16) -> Bool {
        guard Int(index) < buffers.count, let base = buffers[Int(index)].baseAddress, let address else {
            return false
        }
        let offset = UnsafeRawPointer(base).distance(to: address)
        let length = buffers[Int(index)].count
        return offset >= 0 && offset <= length && count <= length - offset
    }

    public func submit() throws(URingError) {
        guard isOpen else { throw .closed }
        startPending()
    }

    /// Moves every pending request to where it runs: I/O to the pool, polls to the watch
    /// list, cancels resolved at once.
    func startPending() {
        guard pendingCount > 0 else { return }
        var queued = 0
        shared.lock()
        for i in 0..<pendingCount {
            let index = Int(pending[i])
            let slot = shared.slots[index]
            if slot.result != 0 {
                shared.completeLocked(index, result: slot.result)
                continue
            }
            switch slot.request.operation {
            case .pollReadable, .pollWritable, .streamRead, .streamReadVector, .streamWriteVector:
                // A stream operation waits for its descriptor here, as io_uring arms a poll
                // for it, and goes to the pool once ready: a pool thread never blocks on a
                // TAP or a pipe, and the wait can be cancelled.
                shared.slots[index].state = .watching
                watches[watchCount] = Int32(index)
                watchCount += 1
            case let .cancel(target):
                shared.completeLocked(index, result: cancelLocked(target))
            default:
                shared.queueLocked(index)
                queued += 1
            }
        }
        shared.unlock()
        pendingCount = 0
        shared.wakeWorkers(queued)
    }

    /// io_uring's cancel results: 0 when the target was stopped (it completes with
    /// -ECANCELED), -EALREADY when it is running, -ENOENT when nothing matches.
    func cancelLocked(_ target: UInt64) -> Int32 {
        if let index = shared.unqueueLocked(userData: target) {
            shared.completeLocked(index, result: -Glibc.ECANCELED)
            return 0
        }
        for w in 0..<watchCount where shared.slots[Int(watches[w])].request.userData == target {
            let index = Int(watches[w])
            removeWatch(at: w)
            shared.completeLocked(index, result: -Glibc.ECANCELED)
            return 0
        }
        for index in 0..<capacity
        where shared.slots[index].state == .running && shared.slots[index].request.userData == target {
            return -Glibc.EALREADY
        }
        return -Glibc.ENOENT
    }

    func removeWatch(at position: Int) {
        watchCount -= 1
        watches[position] = watches[watchCount]
    }

    public func wait(minimum: Int, timeout: Duration?) throws(URingError) {
        guard isOpen else { throw .closed }
        startPending()
        let target = max(0, min(minimum, inFlight))
        let clock = ContinuousClock()
        let deadline = timeout.map { clock.now.advanced(by: $0) }
        while true {
            let ready = shared.readyCount(arming: target)
            if ready >= target {
                if watchCount > 0 { try pollOnce(milliseconds: 0) }
                shared.disarm()
                return
            }
            var milliseconds: Int32 = -1
            if let deadline {
                let left = clock.now.duration(to: deadline)
                if left <= .zero {
                    shared.disarm()
                    return
                }
                let (seconds, attoseconds) = left.components
                milliseconds = Int32(clamping: seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
            }
            try pollOnce(milliseconds: milliseconds)
        }
    }

    /// One poll(2) over the completion eventfd and the watched fds; ready watches
    /// complete with their ready mask (-EBADF for a descriptor poll calls invalid).
    func pollOnce(milliseconds: Int32) throws(URingError) {
        pollSet[0] = pollfd(fd: shared.eventFD, events: Int16(POLLIN), revents: 0)
        for w in 0..<watchCount {
            let slot = shared.slots[Int(watches[w])]
            let events: Int32
            switch slot.request.operation {
            case .pollWritable, .streamWriteVector: events = POLLOUT
            default: events = POLLIN
            }
            pollSet[w + 1] = pollfd(fd: slot.descriptor, events: Int16(events), revents: 0)
        }
        let ready: Int32
        switch Syscall.poll(pollSet, watchCount + 1, milliseconds) {
        case let .success(n): ready = n
        case let .failure(errno):
            shared.disarm()
            throw .system(call: "poll", errno)
        }
        guard ready > 0 else { return }
        if pollSet[0].revents != 0 { shared.drainEventFD() }
        guard watchCount > 0 else { return }
        shared.lock()
        var queued = 0
        // Backwards, so removing by swapping in the last watch never skips one.
        var w = watchCount - 1
        while w >= 0 {
            let revents = pollSet[w + 1].revents
            if revents != 0 {
                let index = Int(watches[w])
                removeWatch(at: w)
                if revents & Int16(POLLNVAL) != 0 {
                    shared.completeLocked(index, result: -Glibc.EBADF)
                } else if case .pollReadable = shared.slots[index].request.operation {
                    shared.completeLocked(index, result: Int32(UInt16(bitPattern: revents)))
                } else if case .pollWritable = shared.slots[index].request.operation {
                    shared.completeLocked(index, result: Int32(UInt16(bitPattern: revents)))
                } else {
                    // A stream operation whose descriptor is ready (or in error, which the
                    // call itself then reports): run it.
                    shared.queueLocked(index)
                    queued += 1
                }
            }
            w -= 1
        }
        shared.unlock()
        shared.wakeWorkers(queued)
    }

    public func reap(into buffer: UnsafeMutableBufferPointer<Completion>) -> Int {
        guard isOpen else { return 0 }
        let count = shared.takeCompletions(into: buffer, freeSlots: freeSlots, freeCount: &freeCount)
        inFlight -= count
        return count
    }

    /// Stops the pool after it finishes the requests already handed to it; pending
    /// (unsubmitted) requests and watches are dropped.
    public func close() {
        guard isOpen else { return }
        isOpen = false
        shared.stop()
        for thread in threads { ThreadPoolShared.join(thread) }
        threads = []
        Syscall.close(shared.eventFD)
        freeSlots.deallocate()
        pending.deallocate()
        watches.deallocate()
        pollSet.deallocate()
    }
}
