import CURing
import Glibc

/// The io_uring `BlockIOEngine`: each request becomes one submission entry.
public final class URingEngine: BlockIOEngine {
    /// The ring (exposed for diagnostics such as `flags`).
    public let ring: IORing
    public let capacity: Int
    public private(set) var inFlight = 0
    /// The size of the registered file table.
    var registeredFiles = 0

    /// Opcodes the engine issues; a kernel lacking any of them counts as no io_uring.
    static let requiredOpcodes: [Int32] = [
        IORING_OP_READ, IORING_OP_WRITE, IORING_OP_READV, IORING_OP_WRITEV,
        IORING_OP_READ_FIXED, IORING_OP_WRITE_FIXED, IORING_OP_FSYNC, IORING_OP_FALLOCATE,
        IORING_OP_POLL_ADD, IORING_OP_ASYNC_CANCEL,
    ].map { Int32($0.rawValue) }

    /// Sets up a ring for `configuration`. Throws `.unavailable` when this kernel or
    /// sandbox does not allow io_uring (ENOSYS, EPERM, EACCES, ENOMEM, missing opcodes).
    public init(configuration: BlockIOEngineConfiguration = .init()) throws(URingError) {
        guard configuration.queueDepth >= 1, configuration.capacity >= configuration.queueDepth else {
            throw .invalidArgument(name: "capacity", value: configuration.capacity, limit: configuration.queueDepth)
        }
        let ring: IORing
        do {
            ring = try IORing(entries: configuration.queueDepth, completionEntries: configuration.capacity,
                              flags: configuration.ringFlags)
        } catch let .system(_, errno) where [.ENOSYS, .EPERM, .EACCES, .ENOMEM].contains(errno) {
            // ENOMEM: kernels before 5.12 charge rings to RLIMIT_MEMLOCK.
            throw .unavailable(reason: "io_uring_setup: \(errno)")
        }
        guard ring.supports(Self.requiredOpcodes) else {
            ring.close()
            throw .unavailable(reason: "the kernel lacks opcodes the engine needs (read, fallocate, poll, cancel)")
        }
        self.ring = ring
        self.capacity = ring.completionEntries
        if let workers = configuration.kernelWorkers {
            // Older kernels refuse; they keep their defaults, which only costs speed. Both
            // pools: on 6.18 reads of a registered tmpfs file ran as unbounded work (a cap
            // on the bounded pool alone changed nothing).
            let limit = UInt32(clamping: max(workers, 1))
            _ = ring.limitWorkers(bounded: limit, unbounded: limit)
        }
    }

    deinit { ring.close() }

    public var kind: BlockIOEngineKind { .uring }

    public func registerFiles(_ descriptors: [Int32]) throws(URingError) {
        try ring.registerFiles(descriptors)
        registeredFiles = descriptors.count
    }

    public func updateRegisteredFiles(_ descriptors: [Int32], at offset: Int) throws(URingError) {
        guard offset >= 0, offset <= registeredFiles, descriptors.count <= registeredFiles - offset else {
            throw .invalidArgument(name: "offset", value: offset, limit: registeredFiles - descriptors.count)
        }
        try ring.updateRegisteredFiles(descriptors, at: offset)
    }

    public func registerBuffers(_ buffers: [UnsafeMutableRawBufferPointer]) throws(URingError) {
        try ring.registerBuffers(buffers)
    }

    public func enqueue(_ request: BlockRequest) -> EnqueueOutcome {
        guard inFlight < capacity else { return .queueFull(request) }
        let operation = Self.ringOperation(request.operation)
        let async = request.alwaysAsync
        if !ring.prepare(operation, userData: request.userData, async: async) {
            // The submission queue is full: start that batch and take a fresh entry.
            guard (try? ring.submit()) != nil, ring.prepare(operation, userData: request.userData, async: async) else {
                return .queueFull(request)
            }
        }
        inFlight += 1
        return .accepted
    }

    static func ringOperation(_ operation: BlockIOOperation) -> IOOperation {
        switch operation {
        case let .read(file, offset, buffer): return .read(file, into: buffer, offset: offset)
        case let .write(file, offset, buffer): return .write(file, from: buffer, offset: offset)
        case let .readVector(file, offset, vectors): return .readv(file, vectors: vectors, offset: offset)
        case let .writeVector(file, offset, vectors): return .writev(file, vectors: vectors, offset: offset)
        case let .readFixed(file, offset, buffer, index):
            return .readFixed(file, into: buffer, bufferIndex: index, offset: offset)
        case let .writeFixed(file, offset, buffer, index):
            return .writeFixed(file, from: buffer, bufferIndex: index, offset: offset)
        case let .flush(file): return .fdatasync(file)
        case let .discard(file, offset, length):
            return .fallocate(file, mode: .discard, offset: offset, length: length)
        case let .writeZeroes(file, offset, length):
            return .fallocate(file, mode: .writeZeroes, offset: offset, length: length)
        // io_uring: offset -1 means "the file position", which a stream ignores.
        case let .streamRead(file, buffer): return .read(file, into: buffer, offset: UInt64.max)
        case let .streamReadVector(file, vectors): return .readv(file, vectors: vectors, offset: UInt64.max)
        case let .streamWriteVector(file, vectors): return .writev(file, vectors: vectors, offset: UInt64.max)
        case let .pollReadable(fd): return .poll(.descriptor(fd), events: Int16(POLLIN))
        case let .pollWritable(fd): return .poll(.descriptor(fd), events: Int16(POLLOUT))
        case let .cancel(target): return .cancel(target: target)
        }
    }

    public func submit() throws(URingError) {
        try ring.submit()
    }

    public func wait(minimum: Int, timeout: Duration?) throws(URingError) {
        let needed = min(minimum, inFlight)
        let ready = ring.completionsReady
        // Enough is already posted and nothing waits to be submitted: skip the system call.
        if needed > 0, ready >= needed, ring.unsubmitted == 0 { return }
        try ring.submitAndWait(minimum: max(0, needed - ready), timeout: timeout)
    }

    public func reap(into buffer: UnsafeMutableBufferPointer<Completion>) -> Int {
        let count = ring.reap(into: buffer)
        inFlight -= count
        return count
    }

    public func close() {
        ring.close()
    }
}
