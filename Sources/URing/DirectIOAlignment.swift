import CURing
import Glibc
import SystemCalls

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
