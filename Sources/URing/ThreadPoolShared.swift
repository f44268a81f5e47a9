import Glibc
import SystemCalls

/// What the owner of a `ThreadPoolEngine` and its threads share; every field except the
/// immutable ones is read and written only under `mutex`.
final class ThreadPoolShared: @unchecked Sendable {
    enum SlotState: UInt8 {
        case free, pending, queued, running, watching, done
    }

    /// A request in flight. `result` is preset to a -errno when the owner rejects the
    /// request before it runs.
    struct Slot {
        var request: BlockRequest
        var descriptor: Int32
        var state: SlotState
        var result: Int32
    }

    let capacity: Int
    let eventFD: Int32
    let slots: UnsafeMutablePointer<Slot>
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let workAvailable: UnsafeMutablePointer<pthread_cond_t>
    /// Ring of slot indices waiting for a thread.
    private let work: UnsafeMutablePointer<Int32>
    private var workHead = 0
    private var workCount = 0
    /// Ring of slot indices whose completion the owner has not reaped.
    private let done: UnsafeMutablePointer<Int32>
    private var doneHead = 0
    private var doneCount = 0
    /// The eventfd is written when `doneCount` reaches this (1 unless a `wait` wants more).
    private var wakeThreshold = 1
    private var stopping = false

    init(capacity: Int, eventFD: Int32) {
        self.capacity = capacity
        self.eventFD = eventFD
        slots = .allocate(capacity: capacity)
        slots.initialize(
            repeating: Slot(request: BlockRequest(.cancel(target: 0), userData: 0), descriptor: -1,
                            state: .free, result: 0),
            count: capacity)
        work = .allocate(capacity: capacity)
        done = .allocate(capacity: capacity)
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        workAvailable = .allocate(capacity: 1)
        pthread_cond_init(workAvailable, nil)
    }

    deinit {
        pthread_cond_destroy(workAvailable)
        pthread_mutex_destroy(mutex)
        workAvailable.deallocate()
        mutex.deallocate()
        slots.deinitialize(count: capacity)
        slots.deallocate()
        work.deallocate()
        done.deallocate()
    }

    func lock() { pthread_mutex_lock(mutex) }
    func unlock() { pthread_mutex_unlock(mutex) }

    // MARK: owner side

    func queueLocked(_ index: Int) {
        slots[index].state = .queued
        work[(workHead + workCount) % capacity] = Int32(index)
        workCount += 1
    }

    /// Takes the queued request tagged `userData` off the work queue, if no thread has it yet.
    func unqueueLocked(userData: UInt64) -> Int? {
        for i in 0..<workCount {
            let index = Int(work[(workHead + i) % capacity])
            guard slots[index].request.userData == userData else { continue }
            for j in i..<(workCount - 1) {
                work[(workHead + j) % capacity] = work[(workHead + j + 1) % capacity]
            }
            workCount -= 1
            return index
        }
        return nil
    }

    func wakeWorkers(_ count: Int) {
        if count == 1 {
            pthread_cond_signal(workAvailable)
        } else if count > 1 {
            wakeAllWorkers()
        }
    }

    private func wakeAllWorkers() {
        pthread_cond_broadcast(workAvailable)
    }

    /// The number of completions ready; when fewer than `target`, the pool is asked to
    /// write the eventfd once that many are.
    func readyCount(arming target: Int) -> Int {
        lock()
        defer { unlock() }
        if doneCount < target { wakeThreshold = target }
        return doneCount
    }

    func disarm() {
        lock()
        wakeThreshold = 1
        unlock()
    }

    func drainEventFD() {
        var counter: UInt64 = 0
        _ = Syscall.read(eventFD, &counter, MemoryLayout<UInt64>.size)
    }

    func takeCompletions(
        into buffer: UnsafeMutableBufferPointer<Completion>, freeSlots: UnsafeMutablePointer<Int32>,
        freeCount: inout Int
    ) -> Int {
        lock()
        defer { unlock() }
        let count = min(doneCount, buffer.count)
        for i in 0..<count {
            let index = Int(done[doneHead])
            doneHead = (doneHead + 1) % capacity
            buffer[i] = Completion(userData: slots[index].request.userData, result: slots[index].result)
            slots[index].state = .free
            freeSlots[freeCount] = Int32(index)
            freeCount += 1
        }
        doneCount -= count
        return count
    }

    func stop() {
        lock()
        stopping = true
        unlock()
        wakeAllWorkers()
    }

    // MARK: both sides

    /// Records a result; returns whether the owner should be woken.
    @discardableResult
    func completeLocked(_ index: Int, result: Int32) -> Bool {
        slots[index].result = result
        slots[index].state = .done
        done[(doneHead + doneCount) % capacity] = Int32(index)
        doneCount += 1
        return doneCount == wakeThreshold
    }

    // MARK: pool side

    func startThread() -> Result<pthread_t, Errno> {
        var thread = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let result = pthread_create(&thread, nil, { context in
            guard let context else { return nil }
            Unmanaged<ThreadPoolShared>.fromOpaque(context).takeRetainedValue().serve()
            return nil
        }, context)
        guard result == 0 else {
            Unmanaged<ThreadPoolShared>.fromOpaque(context).release()
            return .failure(Errno(code: result))
        }
        return .success(thread)
    }

    static func join(_ thread: pthread_t) {
        pthread_join(thread, nil)
    }

    /// A pool thread: take a request, run it unlocked, record the result, repeat; leave
    /// once stopping and the queue is empty.
    private func serve() {
        lock()
        while true {
            while workCount == 0 && !stopping {
                pthread_cond_wait(workAvailable, mutex)
            }
            if workCount == 0 { break }
            let index = Int(work[workHead])
            workHead = (workHead + 1) % capacity
            workCount -= 1
            slots[index].state = .running
            let operation = slots[index].request.operation
            let descriptor = slots[index].descriptor
            unlock()
            let result = Self.execute(operation, on: descriptor)
            lock()
            if completeLocked(index, result: result) {
                unlock()
                var one: UInt64 = 1
                _ = Syscall.write(eventFD, &one, MemoryLayout<UInt64>.size)
                lock()
            }
        }
        unlock()
    }

    /// One system call per operation, results in io_uring's convention.
    static func execute(_ operation: BlockIOOperation, on fd: Int32) -> Int32 {
        let outcome: Result<Int, Errno>
        switch operation {
        case let .read(_, offset, buffer), let .readFixed(_, offset, buffer, _):
            outcome = Syscall.pread(fd, buffer.baseAddress,
                                    buffer.count, Int64(bitPattern: offset))
        case let .write(_, offset, buffer), let .writeFixed(_, offset, buffer, _):
            outcome = Syscall.pwrite(fd, buffer.baseAddress,
                                     buffer.count, Int64(bitPattern: offset))
        case let .readVector(_, offset, vectors):
            outcome = Syscall.preadv(fd, vectors.baseAddress,
                                     Int32(clamping: vectors.count), Int64(bitPattern: offset))
        case let .writeVector(_, offset, vectors):
            outcome = Syscall.pwritev(fd, vectors.baseAddress,
                                      Int32(clamping: vectors.count), Int64(bitPattern: offset))
        case .flush:
            outcome = Syscall.fdatasync(fd).map { Int($0) }
        case let .discard(_, offset, length):
            outcome = Syscall.fallocate(fd, FallocateMode.discard.rawValue, Int64(bitPattern: offset),
                                        Int64(bitPattern: length)).map { Int($0) }
        case let .writeZeroes(_, offset, length):
            outcome = Syscall.fallocate(fd, FallocateMode.writeZeroes.rawValue, Int64(bitPattern: offset),
                                        Int64(bitPattern: length)).map { Int($0) }
        case let .streamRead(_, buffer):
            outcome = buffer.baseAddress.map { Syscall.read(fd, $0, buffer.count) } ?? .success(0)
        case let .streamReadVector(_, vectors):
            outcome = Syscall.readv(fd, vectors.baseAddress, Int32(clamping: vectors.count))
        case let .streamWriteVector(_, vectors):
            outcome = Syscall.writev(fd, vectors.baseAddress, Int32(clamping: vectors.count))
        case .pollReadable, .pollWritable, .cancel:
            // The owner handles these; they never reach a pool thread.
            outcome = .failure(.EINVAL)
        }
        switch outcome {
        case let .success(count): return Int32(clamping: count)
        case let .failure(errno): return -errno.code
        }
    }
}
