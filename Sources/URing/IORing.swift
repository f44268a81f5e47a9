import CURing
import Glibc
import SystemCalls

/// An io_uring instance (through liburing). One owner, one thread: create it on the thread
/// that will submit and reap (with `singleIssuer` the kernel refuses any other thread with
/// EEXIST), and call `close()` when done (`deinit` closes too).
///
/// Usage: `prepare` operations (each tagged with a `UInt64` user data), `submit` them in one
/// batch (or `submitAndWait`), then `reap` completions as values.
public final class IORing {
    /// Ring setup flags (`IORING_SETUP_*`).
    public struct SetupFlags: OptionSet, Sendable, CustomStringConvertible {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }

        /// IORING_SETUP_SQPOLL: a kernel thread polls the submission queue.
        public static let submissionQueuePolling = SetupFlags(rawValue: UInt32(IORING_SETUP_SQPOLL))
        /// IORING_SETUP_CLAMP: clamp oversized entry counts instead of failing.
        public static let clamp = SetupFlags(rawValue: UInt32(IORING_SETUP_CLAMP))
        /// IORING_SETUP_SUBMIT_ALL: keep submitting a batch past a failed entry.
        public static let submitAll = SetupFlags(rawValue: UInt32(IORING_SETUP_SUBMIT_ALL))
        /// IORING_SETUP_COOP_TASKRUN: no interrupting IPIs for completion work (5.19).
        public static let coopTaskrun = SetupFlags(rawValue: UInt32(IORING_SETUP_COOP_TASKRUN))
        /// IORING_SETUP_SINGLE_ISSUER: only the creating thread submits (6.0).
        public static let singleIssuer = SetupFlags(rawValue: UInt32(IORING_SETUP_SINGLE_ISSUER))
        /// IORING_SETUP_DEFER_TASKRUN: completion work runs only when the owner waits (6.1);
        /// requires `singleIssuer`.
        public static let deferTaskrun = SetupFlags(rawValue: UInt32(IORING_SETUP_DEFER_TASKRUN))

        /// What a worker thread that owns its ring wants.
        public static let worker: SetupFlags = [.clamp, .submitAll, .coopTaskrun, .singleIssuer, .deferTaskrun]

        /// Flags dropped, in this order, when the kernel rejects a set with EINVAL (or EPERM
        /// for SQPOLL on old kernels): newest first.
        static let fallbackOrder: [SetupFlags] = [
            .deferTaskrun, .singleIssuer, .coopTaskrun, .submitAll, .submissionQueuePolling,
        ]

        public var description: String {
            let names: [(SetupFlags, String)] = [
                (.submissionQueuePolling, "SQPOLL"), (.clamp, "CLAMP"), (.submitAll, "SUBMIT_ALL"),
                (.coopTaskrun, "COOP_TASKRUN"), (.singleIssuer, "SINGLE_ISSUER"),
                (.deferTaskrun, "DEFER_TASKRUN"),
            ]
            let present = names.filter { contains($0.0) }.map(\.1)
            return present.isEmpty ? "[]" : "[" + present.joined(separator: ",") + "]"
        }
    }

    @usableFromInline let ring: UnsafeMutablePointer<io_uring>
    @usableFromInline var isOpen = true
    /// Per-submission-entry storage for timeouts, which the kernel reads at submit time.
    @usableFromInline let timeouts: UnsafeMutablePointer<__kernel_timespec>
    /// Where `reap` lands completions before converting them to values.
    @usableFromInline let scratch: UnsafeMutablePointer<curing_completion>
    @usableFromInline let scratchCount: Int

    /// The flags the kernel accepted (the requested set minus any it rejected).
    public let flags: SetupFlags
    /// The flags requested but dropped because this kernel rejected them.
    public let rejectedFlags: SetupFlags
    /// Submission queue entries.
    public let submissionEntries: Int
    /// Completion queue entries (twice the submission entries unless asked otherwise).
    public let completionEntries: Int

    /// Sets up a ring with `entries` submission entries (rounded up to a power of two) and,
    /// when given, `completionEntries` completion entries. Flags the kernel rejects are
    /// dropped one at a time (see `rejectedFlags`).
    public init(
        entries: Int, completionEntries: Int? = nil, flags requested: SetupFlags = .worker,
        sqPollIdle: Duration = .milliseconds(50)
    ) throws(URingError) {
        guard entries >= 1, entries <= 32768 else {
            throw .invalidArgument(name: "entries", value: entries, limit: 32768)
        }
        if let completionEntries, completionEntries < entries || completionEntries > 65536 {
            throw .invalidArgument(name: "completionEntries", value: completionEntries, limit: 65536)
        }
        let ring = UnsafeMutablePointer<io_uring>.allocate(capacity: 1)
        var attempt = requested
        var rejected: SetupFlags = []
        var result: Int32 = 0
        while true {
            var params = io_uring_params()
            params.flags = attempt.rawValue
            if let completionEntries {
                params.flags |= UInt32(IORING_SETUP_CQSIZE)
                params.cq_entries = UInt32(completionEntries)
            }
            if attempt.contains(.submissionQueuePolling) {
                let (seconds, attoseconds) = sqPollIdle.components
                params.sq_thread_idle = UInt32(clamping: seconds * 1000 + attoseconds / 1_000_000_000_000_000)
            }
            result = io_uring_queue_init_params(UInt32(entries), ring, &params)
            if result == -Glibc.EINTR { continue }
            let retryable = result == -Glibc.EINVAL
                || (result == -Glibc.EPERM && attempt.contains(.submissionQueuePolling))
            guard retryable, let drop = SetupFlags.fallbackOrder.first(where: {
                attempt.contains($0) && (result == -Glibc.EINVAL || $0 == .submissionQueuePolling)
            }) else { break }
            attempt.remove(drop)
            rejected.insert(drop)
        }
        guard result == 0 else {
            ring.deallocate()
            throw .system(call: "io_uring_queue_init_params", Errno(code: -result))
        }
        self.ring = ring
        self.flags = attempt
        self.rejectedFlags = rejected
        self.submissionEntries = Int(curing_sq_entries(ring))
        self.completionEntries = Int(curing_cq_entries(ring))
        self.timeouts = .allocate(capacity: submissionEntries)
        self.timeouts.initialize(repeating: __kernel_timespec(), count: submissionEntries)
        self.scratchCount = self.completionEntries
        self.scratch = .allocate(capacity: self.completionEntries)
    }

    deinit { close() }

    /// Tears the ring down; in-flight operations are cancelled by the kernel. Idempotent.
    public func close() {
        guard isOpen else { return }
        isOpen = false
        io_uring_queue_exit(ring)
        ring.deallocate()
        timeouts.deallocate()
        scratch.deallocate()
    }

    /// Registers the ring's own descriptor with the calling thread (io_uring_register_ring_fd),
    /// so each io_uring_enter skips looking the file up. The registration belongs to that
    /// thread: call this only on the thread that submits, waits and later calls `close()`
    /// (which drops it), or the thread keeps the ring's file alive until it exits. Returns
    /// false when the kernel refuses (before 5.18, or the thread's 16 slots are taken);
    /// the ring then works as before.
    public func registerRingDescriptor() -> Bool {
        guard isOpen else { return false }
        return io_uring_register_ring_fd(ring) == 1
    }

    /// Caps the kernel worker threads (io-wq) of the calling thread's rings
    /// (io_uring_register_iowq_max_workers): `bounded` for regular files and block
    /// devices, `unbounded` for the rest; 0 keeps a limit. Call it on the thread that
    /// submits. Returns the previous limits, or nil when the kernel refuses (before 5.15).
    public func limitWorkers(bounded: UInt32, unbounded: UInt32) -> (bounded: UInt32, unbounded: UInt32)? {
        guard isOpen else { return nil }
        var values: [UInt32] = [bounded, unbounded]
        guard io_uring_register_iowq_max_workers(ring, &values) == 0 else { return nil }
        return (values[0], values[1])
    }

    /// The ring's file descriptor (for diagnostics; the ring owns it).
    public var fileDescriptor: Int32 { isOpen ? ring.pointee.ring_fd : -1 }

    /// Free submission entries.
    @inlinable public var submissionSpace: Int { isOpen ? Int(curing_sq_space_left(ring)) : 0 }
    /// Prepared entries not yet handed to the kernel.
    @inlinable public var unsubmitted: Int { isOpen ? Int(curing_sq_ready(ring)) : 0 }
    /// Completions ready to `reap` without entering the kernel.
    @inlinable public var completionsReady: Int { isOpen ? Int(curing_cq_ready(ring)) : 0 }

    /// Whether the kernel implements every opcode in `opcodes` (`IORING_OP_*`).
    public func supports(_ opcodes: [Int32]) -> Bool {
        guard isOpen, let probe = io_uring_get_probe_ring(ring) else { return false }
        defer { io_uring_free_probe(probe) }
        return opcodes.allSatisfy { curing_probe_supports(probe, $0) != 0 }
    }

    /// Registers `descriptors` so operations can name them as `.registered(index)`; -1 leaves
    /// a slot empty, to be filled later by `updateRegisteredFiles`.
    public func registerFiles(_ descriptors: [Int32]) throws(URingError) {
        guard isOpen else { throw .closed }
        let result = SystemCall.retryingNegated {
            descriptors.withUnsafeBufferPointer { io_uring_register_files(ring, $0.baseAddress, UInt32($0.count)) }
        }
        if case let .failure(errno) = result { throw .system(call: "io_uring_register_files", errno) }
    }

    /// Replaces registered files `offset..<offset+descriptors.count` (-1 empties a slot).
    /// Operations already in flight keep the file they started with.
    public func updateRegisteredFiles(_ descriptors: [Int32], at offset: Int) throws(URingError) {
        guard isOpen else { throw .closed }
        let result = SystemCall.retryingNegated {
            descriptors.withUnsafeBufferPointer {
                io_uring_register_files_update(ring, UInt32(clamping: offset), $0.baseAddress, UInt32($0.count))
            }
        }
        if case let .failure(errno) = result { throw .system(call: "io_uring_register_files_update", errno) }
    }

    /// Registers `buffers` for the fixed-buffer operations; `bufferIndex` is the position here.
    /// The memory must stay valid until the ring is closed.
    public func registerBuffers(_ buffers: [UnsafeMutableRawBufferPointer]) throws(URingError) {
        guard isOpen else { throw .closed }
        let vectors = buffers.map { iovec(iov_base: $0.baseAddress, iov_len: $0.count) }
        let result = SystemCall.retryingNegated {
            vectors.withUnsafeBufferPointer { io_uring_register_buffers(ring, $0.baseAddress, UInt32($0.count)) }
        }
        if case let .failure(errno) = result { throw .system(call: "io_uring_register_buffers", errno) }
    }

    /// Hands every prepared entry to the kernel. Returns how many it took.
    @discardableResult
    public func submit() throws(URingError) -> Int {
        guard isOpen else { throw .closed }
        switch SystemCall.retryingNegated({ io_uring_submit(ring) }) {
        case let .success(taken): return Int(taken)
        case let .failure(errno): throw .system(call: "io_uring_submit", errno)
        }
    }

    /// Submits, then waits until at least `minimum` completions are ready or `timeout`
    /// passes (an expired timeout is not an error: check `completionsReady`). With a minimum
    /// of 0 it only runs pending completion work (needed under `deferTaskrun`) and returns.
    /// A signal restarts the wait with the full timeout.
    public func submitAndWait(minimum: Int, timeout: Duration? = nil) throws(URingError) {
        guard isOpen else { throw .closed }
        let result = SystemCall.retryingNegated { () -> Int32 in
            if minimum <= 0 { return io_uring_submit_and_get_events(ring) }
            guard let timeout else { return io_uring_submit_and_wait(ring, UInt32(clamping: minimum)) }
            var ts = __kernel_timespec(
                tv_sec: timeout.components.seconds,
                tv_nsec: timeout.components.attoseconds / 1_000_000_000)
            var cqe: UnsafeMutablePointer<io_uring_cqe>? = nil
            return io_uring_submit_and_wait_timeout(ring, &cqe, UInt32(clamping: minimum), &ts, nil)
        }
        if case let .failure(errno) = result, errno != .ETIME { throw .system(call: "io_uring_enter", errno) }
    }

    /// Copies up to `buffer.count` ready completions into `buffer`; never blocks or enters
    /// the kernel. Returns how many it wrote.
    @inlinable
    public func reap(into buffer: UnsafeMutableBufferPointer<Completion>) -> Int {
        guard isOpen, let base = buffer.baseAddress else { return 0 }
        let count = Int(curing_reap(ring, scratch, UInt32(min(buffer.count, scratchCount))))
        for i in 0..<count {
            let c = scratch[i]
            (base + i).initialize(to: Completion(userData: c.user_data, result: c.result, flags: c.flags))
        }
        return count
    }
}
