import Synchronization

/// A task executor that runs tasks on a frontend's I/O thread (SE-0417): a task that
/// prefers it (`withTaskExecutorPreference(frontend.executor) { ... }`, and its child
/// tasks) is resumed where its request completed and submits its next request there, so
/// a read or write costs no hand-over to a thread of the global pool and back.
///
/// While no I/O thread runs (before the first connection, across a backend restart,
/// after close) its jobs go to the global executor, so nothing waits for a thread that
/// is not there. Code run on it must not block: it would stall every request of the device.
public final class FrontendExecutor: TaskExecutor, Sendable {
    private let jobs = Mutex<[UnownedJob]>([])
    /// `jobs` is not empty (read by the I/O thread without the mutex).
    private let hasJobs = Atomic<Bool>(false)
    /// An I/O thread runs the jobs.
    private let running = Atomic<Bool>(false)
    private let wakeUp: FrontendWakeUp

    init(wakeUp: FrontendWakeUp) {
        self.wakeUp = wakeUp
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        jobs.withLock { list in
            list.append(job)
            hasJobs.store(true, ordering: .sequentiallyConsistent)
        }
        // Sequentially consistent, pairing with the I/O thread's stores: either it runs
        // the job, or it has stopped and the job goes to the global executor, here or
        // in its stop().
        if running.load(ordering: .sequentiallyConsistent) {
            wakeUp.wakeIfSleeping()
        } else {
            forwardAll()
        }
    }

    /// Whether jobs wait (the I/O thread looks before it sleeps).
    var isEmpty: Bool { !hasJobs.load(ordering: .sequentiallyConsistent) }

    /// I/O thread: from now on it runs the jobs.
    func start() {
        running.store(true, ordering: .sequentiallyConsistent)
    }

    /// I/O thread, as it ends: jobs from now on, and any left, go to the global executor.
    func stop() {
        running.store(false, ordering: .sequentiallyConsistent)
        forwardAll()
    }

    /// I/O thread: runs every job queued so far (`spare` lends its storage); true if any ran.
    func runAll(_ spare: inout [UnownedJob]) -> Bool {
        guard hasJobs.load(ordering: .sequentiallyConsistent) else { return false }
        takeAll(into: &spare)
        let executor = asUnownedTaskExecutor()
        for job in spare { job.runSynchronously(on: executor) }
        spare.removeAll(keepingCapacity: true)
        return true
    }

    private func forwardAll() {
        var taken: [UnownedJob] = []
        takeAll(into: &taken)
        for job in taken { globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
    }

    /// Moves every queued job into `taken` (which is empty; the two trade storage).
    private func takeAll(into taken: inout [UnownedJob]) {
        jobs.withLock { list in
            swap(&list, &taken)
            hasJobs.store(false, ordering: .sequentiallyConsistent)
        }
    }
}
