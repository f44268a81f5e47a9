import Logging
import Synchronization
import URing

/// Spreads queues over a daemon's workers: each new queue goes to the worker with the
/// fewest, and stays there for its life.
public final class BackendPlacement: Sendable {
    public let workers: [BackendWorker]
    let load: Mutex<[Int]>

    public init(workers: [BackendWorker]) {
        self.workers = workers
        self.load = Mutex(Array(repeating: 0, count: workers.count))
    }

    /// Starts `count` workers with engines from `factory`; if one cannot start, those
    /// already started are stopped and the error is thrown.
    public convenience init(starting count: Int, factory: BlockIOEngineFactory,
                            maxQueues: Int = BackendWorker.defaultMaxQueues, threadName: String,
                            logger: Logger) throws(BackendWorkerError) {
        var workers: [BackendWorker] = []
        do {
            for _ in 0..<count {
                workers.append(try BackendWorker(factory: factory, maxQueues: maxQueues, threadName: threadName,
                                                 logger: logger))
            }
        } catch {
            for worker in workers { worker.stop() }
            throw error
        }
        self.init(workers: workers)
    }

    /// Stops every worker (their queues are retired).
    public func stopAll() {
        for worker in workers { worker.stop() }
    }

    /// The least loaded worker, counted as holding one more queue until ``give(_:)``.
    public func take() -> BackendWorker {
        let index = load.withLock { load -> Int in
            let index = load.indices.min { load[$0] < load[$1] } ?? 0
            load[index] += 1
            return index
        }
        return workers[index]
    }

    /// Gives back what ``take()`` counted.
    public func give(_ worker: BackendWorker) {
        guard let index = workers.firstIndex(where: { $0 === worker }) else { return }
        load.withLock { $0[index] -= 1 }
    }

    /// Queues per worker now.
    public var counts: [Int] { load.withLock { $0 } }
}
