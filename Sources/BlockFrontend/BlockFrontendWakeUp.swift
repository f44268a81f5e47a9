import Glibc
import Synchronization
import XenPlatform

/// How submitters wake the I/O thread: a non-blocking pipe it polls, written only while
/// the thread says it sleeps (a system call per request otherwise, while it is busy
/// anyway). It belongs to the frontend, not to a connection, so a submitter reaches it
/// without a lock; a byte left over from one connection only makes the next thread look
/// at the queue once more.
final class BlockFrontendWakeUp: Sendable {
    /// The end the I/O thread polls.
    let readFD: Int32
    let writeFD: Int32
    /// The I/O thread is about to poll or polling.
    let sleeping = Atomic<Bool>(false)

    init() throws(BlockFrontendError) {
        var ends: (Int32, Int32) = (-1, -1)
        guard withUnsafeMutableBytes(of: &ends, { pipe($0.baseAddress!.assumingMemoryBound(to: Int32.self)) }) == 0 else {
            throw .platform(.system("pipe", errno: errno))
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

    /// Submitter, after publishing work: wakes the thread if it sleeps or is about to.
    func wakeIfSleeping() {
        // Sequentially consistent, pairing with the thread's store before its last look
        // at the queue: either it sees the new work, or this sees it sleeping. A load
        // first, so a busy thread costs its submitters no read-modify-write per request.
        guard sleeping.load(ordering: .sequentiallyConsistent) else { return }
        if sleeping.exchange(false, ordering: .sequentiallyConsistent) { wake() }
    }

    /// Wakes the thread (new work, or stop).
    func wake() {
        // A full pipe already holds a wake-up, so EAGAIN loses nothing.
        var one: UInt8 = 1
        _ = Glibc.write(writeFD, &one, 1)
    }

    /// I/O thread: empties the pipe after poll found it readable.
    func drain() {
        withUnsafeTemporaryAllocation(byteCount: 64, alignment: 8) { buffer in
            while Glibc.read(readFD, buffer.baseAddress, buffer.count) == buffer.count {}
        }
    }
}
