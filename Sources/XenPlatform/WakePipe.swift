import Glibc

/// A non-blocking, close-on-exec pipe that wakes a thread sleeping in poll(2) or in an
/// io_uring poll on ``readFD``: any thread calls ``wake()``, the sleeper ``drain()``s it
/// once awake. How control threads reach a block backend worker and submitters reach a
/// frontend's I/O thread. Owns both ends.
public final class WakePipe: Sendable {
    /// The end the sleeper watches.
    public let readFD: Int32
    /// The end ``wake()`` writes.
    public let writeFD: Int32

    public init() throws(PlatformError) {
        var ends: (Int32, Int32) = (-1, -1)
        guard withUnsafeMutableBytes(of: &ends, { pipe($0.baseAddress!.assumingMemoryBound(to: Int32.self)) }) == 0 else {
            throw .system("pipe", errno: errno)
        }
        for end in [ends.0, ends.1] {
            _ = fcntl(end, F_SETFD, FD_CLOEXEC)
            _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK)
        }
        readFD = ends.0
        writeFD = ends.1
    }

    deinit {
        Glibc.close(readFD)
        Glibc.close(writeFD)
    }

    /// Makes ``readFD`` readable. A full pipe already holds a wake-up, so EAGAIN loses nothing.
    public func wake() {
        var one: UInt8 = 1
        _ = Glibc.write(writeFD, &one, 1)
    }

    /// Empties the pipe, after the sleeper found it readable.
    public func drain() {
        withUnsafeTemporaryAllocation(byteCount: 64, alignment: 8) { buffer in
            while Glibc.read(readFD, buffer.baseAddress, buffer.count) == buffer.count {}
        }
    }
}
