import Glibc
import Synchronization
import XenPlatform

/// What every I/O thread of one frontend shares, across its connections (a backend
/// restart brings a new connection and a new ``FrontendIOThread``): the wake-up its
/// submitters write, the executor tasks run on, the attached loop sources and which
/// thread runs now. A device makes one per frontend and closes it with the frontend.
public final class FrontendIOContext: Sendable {
    /// How submitters wake the running thread.
    public let wakeUp: FrontendWakeUp
    /// Runs tasks that prefer it on the running I/O thread (on the global executor while
    /// none runs).
    public let executor: FrontendExecutor
    let loopSources = FrontendLoopSources()
    /// The running I/O thread (its pthread_t), 0 while none runs.
    let ioThread = Atomic<UInt>(0)
    /// Set once by ``close()``.
    private let closed = Atomic<Bool>(false)

    /// Makes the wake-up pipe; fails only if the pipe cannot be made.
    public init() throws(PlatformError) {
        wakeUp = try FrontendWakeUp()
        executor = FrontendExecutor(wakeUp: wakeUp)
    }

    /// Whether the caller runs on the I/O thread (a task on ``executor``, a completion).
    public var onIOThread: Bool { ioThread.load(ordering: .acquiring) == UInt(pthread_self()) }

    /// Serves `source` on the I/O thread from its next pass on, across connections (while
    /// none is up, nothing serves it), until it reports ``FrontendLoopProgress/done``,
    /// ``detach(_:)`` takes it away or the context closes
    /// (``FrontendLoopSource/frontendClosed()``). False, and nothing attached, when the
    /// context is closed already.
    public func attach(_ source: any FrontendLoopSource) -> Bool {
        loopSources.add(source)
        // After the add: close() either sees the source or is seen here.
        if closed.load(ordering: .sequentiallyConsistent) {
            loopSources.remove(source)
            return false
        }
        wakeUp.wake()
        return true
    }

    /// Takes `source` off the I/O thread; returns once the thread no longer calls it (at
    /// once when none runs, or when called on the I/O thread itself: a task on
    /// ``executor``, which runs before the thread next serves its sources).
    public func detach(_ source: any FrontendLoopSource) {
        let version = loopSources.remove(source)
        guard !onIOThread else { return }
        wakeUp.wake()
        loopSources.waitUntilServed(version)
    }

    /// The frontend closed: refuses new sources and tells each attached one
    /// (``FrontendLoopSource/frontendClosed()``), on the calling thread.
    public func close() {
        closed.store(true, ordering: .sequentiallyConsistent)
        for source in loopSources.removeAll() { source.frontendClosed() }
    }
}
