import Dispatch
import Foundation
import Synchronization

/// A task executor with a thread of its own (SE-0417), for an in-process peer that must
/// keep answering while `swift test` fills the cooperative pool (one thread per core) with
/// tests that block: a stand-in backend on the pool could wait there longer than the
/// toolstack under test waits for it, and the test would then judge a timeout of its own
/// making. Run the peer with `Task(executorPreference: executor) { ... }`; once
/// ``shutdown()`` is called, jobs go to the global executor, so none is ever stranded.
public final class ThreadExecutor: TaskExecutor, Sendable {
    private struct State {
        var jobs: [UnownedJob] = []
        var running = true
    }

    private let state = Mutex(State())
    private let work = DispatchSemaphore(value: 0)

    /// Starts the thread, named `name` (as `ps -L` shows it).
    public init(name: String) {
        let thread = Thread { [self] in loop() }
        thread.name = name
        thread.stackSize = 1 << 20
        thread.start()
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let queued = state.withLock { s -> Bool in
            guard s.running else { return false }
            s.jobs.append(job)
            return true
        }
        if queued { work.signal() } else { globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
    }

    /// Ends the thread once the jobs queued so far ran; later jobs run on the pool.
    public func shutdown() {
        state.withLock { $0.running = false }
        work.signal()
    }

    private func loop() {
        let executor = asUnownedTaskExecutor()
        while true {
            work.wait()
            let (job, running) = state.withLock { s -> (UnownedJob?, Bool) in
                (s.jobs.isEmpty ? nil : s.jobs.removeFirst(), s.running)
            }
            if let job {
                job.runSynchronously(on: executor)
            } else if !running {
                return
            }
        }
    }
}
