import Synchronization
import XenPlatform

/// How submitters wake a frontend's I/O thread: a non-blocking pipe it polls, written only
/// while the thread says it sleeps (a system call per request otherwise, while it is busy
/// anyway). It belongs to the frontend, not to a connection, so a submitter reaches it
/// without a lock; a byte left over from one connection only makes the next thread look
/// at its work once more.
public final class FrontendWakeUp: Sendable {
    let pipe: WakePipe
    /// The end the I/O thread polls.
    var readFD: Int32 { pipe.readFD }
    /// The I/O thread is about to poll or polling.
    @usableFromInline let sleeping = Atomic<Bool>(false)

    init() throws(PlatformError) {
        pipe = try WakePipe()
    }

    /// Submitter, after publishing work: wakes the thread if it sleeps or is about to.
    /// Inlinable: submitters in a device module call it once per request.
    @inlinable
    public func wakeIfSleeping() {
        // Sequentially consistent, pairing with the thread's store before its last look
        // at its work: either it sees the new work, or this sees it sleeping. A load
        // first, so a busy thread costs its submitters no read-modify-write per request.
        guard sleeping.load(ordering: .sequentiallyConsistent) else { return }
        if sleeping.exchange(false, ordering: .sequentiallyConsistent) { wake() }
    }

    /// Wakes the thread (new work, a new connection, or stop).
    public func wake() { pipe.wake() }

    /// I/O thread: empties the pipe after poll found it readable.
    func drain() { pipe.drain() }
}
