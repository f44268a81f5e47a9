import CURing
import Glibc
import SystemCalls

/// The single call site of every libc function URing uses. Each retries EINTR and turns
/// a failure into its errno (``SystemCall/retrying(_:)``), so the rest of the module never
/// reads `errno` itself.
enum Syscall {
    @inline(__always)
    private static func retrying<T: FixedWidthInteger & SignedInteger>(_ body: () -> T) -> Result<T, Errno> {
        SystemCall.retrying(body)
    }

    /// A non-blocking, close-on-exec eventfd.
    static func eventfd(initialValue: UInt32) -> Result<Int32, Errno> {
        retrying { curing_eventfd(initialValue) }
    }

    /// close(2) is not retried: on Linux the descriptor is gone even when it reports EINTR.
    static func close(_ fd: Int32) {
        _ = Glibc.close(fd)
    }

    static func read(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Result<Int, Errno> {
        retrying { Glibc.read(fd, buffer, count) }
    }

    static func write(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Result<Int, Errno> {
        retrying { Glibc.write(fd, buffer, count) }
    }

    static func readv(_ fd: Int32, _ iov: UnsafePointer<iovec>?, _ count: Int32) -> Result<Int, Errno> {
        retrying { Glibc.readv(fd, iov, count) }
    }

    static func writev(_ fd: Int32, _ iov: UnsafePointer<iovec>?, _ count: Int32) -> Result<Int, Errno> {
        retrying { Glibc.writev(fd, iov, count) }
    }

    static func pread(_ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: Int, _ offset: Int64)
        -> Result<Int, Errno>
    {
        retrying { Glibc.pread(fd, buffer, count, Int(offset)) }
    }

    static func pwrite(_ fd: Int32, _ buffer: UnsafeRawPointer?, _ count: Int, _ offset: Int64)
        -> Result<Int, Errno>
    {
        retrying { Glibc.pwrite(fd, buffer, count, Int(offset)) }
    }

    static func preadv(_ fd: Int32, _ iov: UnsafePointer<iovec>?, _ count: Int32, _ offset: Int64)
        -> Result<Int, Errno>
    {
        retrying { Glibc.preadv(fd, iov, count, Int(offset)) }
    }

    static func pwritev(_ fd: Int32, _ iov: UnsafePointer<iovec>?, _ count: Int32, _ offset: Int64)
        -> Result<Int, Errno>
    {
        retrying { Glibc.pwritev(fd, iov, count, Int(offset)) }
    }

    static func fsync(_ fd: Int32) -> Result<Int32, Errno> {
        retrying { Glibc.fsync(fd) }
    }

    static func fdatasync(_ fd: Int32) -> Result<Int32, Errno> {
        retrying { Glibc.fdatasync(fd) }
    }

    static func fallocate(_ fd: Int32, _ mode: Int32, _ offset: Int64, _ length: Int64) -> Result<Int32, Errno> {
        retrying { curing_fallocate(fd, mode, offset, length) }
    }

    /// poll(2). EINTR is reported as zero ready descriptors rather than retried, so the
    /// caller recomputes its remaining timeout.
    static func poll(_ fds: UnsafeMutablePointer<pollfd>, _ count: Int, _ timeoutMilliseconds: Int32)
        -> Result<Int32, Errno>
    {
        let ready = Glibc.poll(fds, nfds_t(count), timeoutMilliseconds)
        if ready >= 0 { return .success(ready) }
        let error = Errno.current
        return error == .EINTR ? .success(0) : .failure(error)
    }
}
