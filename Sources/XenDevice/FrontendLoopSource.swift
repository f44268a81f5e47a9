import Glibc
import Synchronization

/// What a ``FrontendLoopSource`` asks of the I/O thread after a call.
public enum FrontendLoopProgress: Sendable {
    /// Nothing to do until poll reports its descriptor ready.
    case idle
    /// Call again before sleeping (input is left that it stopped short of).
    case busy
    /// Finished: the thread drops it.
    case done
}

/// Work that shares a frontend's I/O thread (``FrontendIOContext/attach(_:)``): a
/// descriptor polled along with the rings' event channel, and served between the
/// thread's passes over the rings. An NBD client served so reads a request, puts it on a
/// ring and sends the reply from this one thread, where a thread of its own hands each
/// request to the I/O thread and each reply back, a wake-up each way.
///
/// Its methods are called on the I/O thread only, one at a time, and must never block.
/// A request it submits from ``serve(revents:)`` goes out in the same pass; completions
/// run on the I/O thread (or at once, on the submitting thread, for a refused request),
/// and the next ``serve(revents:)``, with `revents` 0, follows them in the same pass.
public protocol FrontendLoopSource: AnyObject, Sendable {
    /// The descriptor to poll.
    var loopDescriptor: Int32 { get }
    /// What to poll it for now: POLLIN, POLLOUT, both, or 0.
    func loopEvents() -> Int16
    /// Serves what poll found (`revents`), or, with 0, whatever completions queued.
    func serve(revents: Int16) -> FrontendLoopProgress
    /// The frontend closed: nothing serves the source any more. Called once, on the
    /// closing thread (so perhaps while the I/O thread is still in ``serve(revents:)``).
    func frontendClosed()
}

/// The sources attached to a frontend, which each of its I/O threads serves in turn.
final class FrontendLoopSources: Sendable {
    private let sources = Mutex<[any FrontendLoopSource]>([])
    /// Bumped by every change, so the thread takes a new list only then.
    let version = Atomic<Int>(0)
    /// The version the running I/O thread serves; `Int.max` while none runs.
    let served = Atomic<Int>(Int.max)

    func add(_ source: any FrontendLoopSource) {
        sources.withLock { $0.append(source) }
        version.add(1, ordering: .sequentiallyConsistent)
    }

    /// Removes `source`; returns the version without it.
    @discardableResult
    func remove(_ source: any FrontendLoopSource) -> Int {
        sources.withLock { list in list.removeAll { $0 === source } }
        return version.add(1, ordering: .sequentiallyConsistent).newValue
    }

    /// Takes every source off (the frontend closed); returns them.
    func removeAll() -> [any FrontendLoopSource] {
        let all = sources.withLock { list in
            defer { list = [] }
            return list
        }
        version.add(1, ordering: .sequentiallyConsistent)
        return all
    }

    /// The list and its version, for a thread that starts serving or saw a change.
    func snapshot() -> (version: Int, sources: [any FrontendLoopSource]) {
        sources.withLock { list in (version.load(ordering: .sequentiallyConsistent), list) }
    }

    /// Waits until no I/O thread serves a list older than `version`.
    func waitUntilServed(_ version: Int) {
        while served.load(ordering: .sequentiallyConsistent) < version { usleep(200) }
    }
}
