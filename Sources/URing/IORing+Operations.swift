import CURing
import Glibc

/// One io_uring operation. Buffers and iovec arrays are the caller's: they must stay valid
/// until the operation's completion is reaped. Lengths above `UInt32.max` are clamped
/// (the completion then reports a short transfer).
public enum IOOperation {
    /// IORING_OP_NOP.
    case nop
    /// IORING_OP_READ at a file offset.
    case read(FileReference, into: UnsafeMutableRawBufferPointer, offset: UInt64)
    /// IORING_OP_WRITE at a file offset.
    case write(FileReference, from: UnsafeRawBufferPointer, offset: UInt64)
    /// IORING_OP_READV: scatter into `vectors`.
    case readv(FileReference, vectors: UnsafeBufferPointer<iovec>, offset: UInt64)
    /// IORING_OP_WRITEV: gather from `vectors`.
    case writev(FileReference, vectors: UnsafeBufferPointer<iovec>, offset: UInt64)
    /// IORING_OP_READ_FIXED into (part of) registered buffer `bufferIndex`.
    case readFixed(FileReference, into: UnsafeMutableRawBufferPointer, bufferIndex: UInt16, offset: UInt64)
    /// IORING_OP_WRITE_FIXED from (part of) registered buffer `bufferIndex`.
    case writeFixed(FileReference, from: UnsafeRawBufferPointer, bufferIndex: UInt16, offset: UInt64)
    /// IORING_OP_FSYNC.
    case fsync(FileReference)
    /// IORING_OP_FSYNC with IORING_FSYNC_DATASYNC.
    case fdatasync(FileReference)
    /// IORING_OP_FALLOCATE.
    case fallocate(FileReference, mode: FallocateMode, offset: UInt64, length: UInt64)
    /// IORING_OP_POLL_ADD, one-shot: completes with the ready mask once `events` hold.
    case poll(FileReference, events: Int16)
    /// IORING_OP_POLL_REMOVE of the poll tagged `target`.
    case pollRemove(target: UInt64)
    /// IORING_OP_TIMEOUT: completes with -ETIME after `duration`, or with 0 once `count`
    /// other completions arrived (0: time only).
    case timeout(Duration, count: UInt32)
    /// IORING_OP_ASYNC_CANCEL of the operation tagged `target`: it completes with
    /// -ECANCELED, and this with 0 (or -ENOENT / -EALREADY).
    case cancel(target: UInt64)
}

extension FileReference {
    @inlinable
    var descriptorAndFlags: (Int32, UInt8) {
        switch self {
        case let .descriptor(fd): return (fd, 0)
        case let .registered(index): return (Int32(bitPattern: index), CURING_IOSQE_FIXED_FILE)
        }
    }
}

extension IORing {
    /// Puts `operation`, tagged `userData`, into the submission queue. Returns false, and
    /// leaves the queue unchanged, when it is full: `submit()` and try again.
    ///
    /// `async` (reads and writes only) sets IOSQE_ASYNC: the kernel hands the transfer to
    /// its worker threads at once. Worth it for files that cannot do non-blocking I/O
    /// (tmpfs, for one), whose transfers end up there anyway after a failed inline try.
    @inlinable
    public func prepare(_ operation: IOOperation, userData: UInt64, async: Bool = false) -> Bool {
        guard isOpen else { return false }
        let extra = async ? CURING_IOSQE_ASYNC : 0
        let result: Int32
        switch operation {
        case .nop:
            result = curing_prep_nop(ring, userData)
        case let .read(file, buffer, offset):
            result = prepareTransfer(IORING_OP_READ, file, UnsafeRawPointer(buffer.baseAddress),
                                     buffer.count, offset, 0, userData, extra)
        case let .write(file, buffer, offset):
            result = prepareTransfer(IORING_OP_WRITE, file, buffer.baseAddress, buffer.count, offset, 0, userData, extra)
        case let .readv(file, vectors, offset):
            result = prepareTransfer(IORING_OP_READV, file, UnsafeRawPointer(vectors.baseAddress),
                                     vectors.count, offset, 0, userData, extra)
        case let .writev(file, vectors, offset):
            result = prepareTransfer(IORING_OP_WRITEV, file, UnsafeRawPointer(vectors.baseAddress),
                                     vectors.count, offset, 0, userData, extra)
        case let .readFixed(file, buffer, index, offset):
            result = prepareTransfer(IORING_OP_READ_FIXED, file, UnsafeRawPointer(buffer.baseAddress),
                                     buffer.count, offset, index, userData, extra)
        case let .writeFixed(file, buffer, index, offset):
            result = prepareTransfer(IORING_OP_WRITE_FIXED, file, buffer.baseAddress, buffer.count,
                                     offset, index, userData, extra)
        case let .fsync(file):
            let (fd, flags) = file.descriptorAndFlags
            result = curing_prep_fsync(ring, fd, flags, 0, userData)
        case let .fdatasync(file):
            let (fd, flags) = file.descriptorAndFlags
            result = curing_prep_fsync(ring, fd, flags, 1, userData)
        case let .fallocate(file, mode, offset, length):
            let (fd, flags) = file.descriptorAndFlags
            result = curing_prep_fallocate(ring, fd, flags, mode.rawValue, offset, length, userData)
        case let .poll(file, events):
            let (fd, flags) = file.descriptorAndFlags
            result = curing_prep_poll_add(ring, fd, flags, UInt32(UInt16(bitPattern: events)), userData)
        case let .pollRemove(target):
            result = curing_prep_poll_remove(ring, target, userData)
        case let .timeout(duration, count):
            guard submissionSpace > 0 else { return false }
            // The entry about to be taken is the one after the last; its slot holds the time.
            let slot = Int((curing_last_sqe_index(ring) &+ 1) & UInt32(submissionEntries - 1))
            let (seconds, attoseconds) = duration.components
            timeouts[slot] = __kernel_timespec(tv_sec: max(seconds, 0),
                                               tv_nsec: max(attoseconds / 1_000_000_000, 0))
            result = curing_prep_timeout(ring, timeouts + slot, count, userData)
        case let .cancel(target):
            result = curing_prep_cancel(ring, target, userData)
        }
        return result == 0
    }

    @inlinable
    func prepareTransfer(
        _ opcode: io_uring_op, _ file: FileReference, _ address: UnsafeRawPointer?, _ length: Int,
        _ offset: UInt64, _ bufferIndex: UInt16, _ userData: UInt64, _ extraFlags: UInt8
    ) -> Int32 {
        let (fd, flags) = file.descriptorAndFlags
        return curing_prep_rw(ring, UInt8(opcode.rawValue), fd, flags | extraFlags, address,
                              UInt32(clamping: length), offset, bufferIndex, userData)
    }
}
