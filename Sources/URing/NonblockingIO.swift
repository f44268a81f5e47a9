import CURing
import Glibc

/// Whether reads of `descriptor` can be tried without blocking (`RWF_NOWAIT`). io_uring
/// tries each transfer inline first and hands it to its worker threads only when that
/// would block; a file without non-blocking I/O (tmpfs, for one) always ends up there, so
/// its transfers are better queued with ``BlockRequest/alwaysAsync`` and skip the try.
public func supportsNonblockingIO(_ descriptor: Int32) -> Bool {
    curing_supports_nowait(descriptor) != 0
}

/// What direct I/O (`O_DIRECT`) on an open file must respect, in bytes: the alignment of
/// memory buffers and of file offsets and lengths (statx `STATX_DIOALIGN`).
public struct DirectIOAlignment: Sendable, Equatable {
    public var memory: UInt32
    public var offset: UInt32

    /// The file's alignment; nil where direct I/O is not done: the file system takes
    /// `O_DIRECT` but stays buffered (tmpfs), or the kernel predates the report (6.1).
    public static func of(_ descriptor: Int32) throws(Errno) -> DirectIOAlignment? {
        var memory: UInt32 = 0
        var offset: UInt32 = 0
        guard curing_dio_alignment(descriptor, &memory, &offset) == 0 else { throw Errno(code: errno) }
        guard memory > 0, offset > 0 else { return nil }
        return DirectIOAlignment(memory: memory, offset: offset)
    }
}
