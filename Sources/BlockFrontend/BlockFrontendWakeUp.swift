import Glibc
import Synchronization
import XenPlatform

/// How submitters wake the I/O thread: a non-blocking pipe it polls, written only while
/// the thread says it sleeps (a system call per request otherwise, while it is busy
/// anyway). It belongs to the frontend, not to a connection, so a submitter reaches it
/// without a lock; a byte left over from one connection only makes the next thread look
/// at the queue once more.
final class BlockFrontendWakeUp: Sendable {
    let pipe: WakePipe
    /// The end the I/O thread polls.
    var readFD: Int32 { pipe.readFD }
    /// The I/O thread is about to poll or polling.
    let sleeping = Atomic<Bool>(false)

    init() throws(BlockFrontendError) {
        do { pipe = try WakePipe() } catch { throw .platform(error) }
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
    func wake() { pipe.wake() }

    /// I/O thread: empties the pipe after poll found it readable.
    func drain() { pipe.drain() }
}
