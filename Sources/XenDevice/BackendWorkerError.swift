import URing
import XenPlatform

/// Errors of a ``BackendWorker``: why it could not start, or could not take or give back a
/// queue.
public enum BackendWorkerError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The worker's I/O engine could not be made.
    case engine(URingError)
    /// The worker's thread or doorbell could not be made.
    case platform(PlatformError)
    /// Adding the queue would need more of `resource` than the worker has left.
    case capacity(resource: String, needed: Int, available: Int)
    /// The queue named is not on this worker.
    case notOnThisWorker(queue: String)
    /// The worker was asked to do something after it stopped.
    case workerStopped
    /// A blocking control call was made on the worker's own thread (from a callback), where
    /// it would wait for itself.
    case calledFromWorker

    public var description: String {
        switch self {
        case let .engine(error):
            return "I/O engine: \(error)"
        case let .platform(error):
            return "platform: \(error)"
        case let .capacity(resource, needed, available):
            return "\(resource): the queue needs \(needed), the worker has \(available) left"
        case let .notOnThisWorker(queue):
            return "queue \(queue) is not on this worker"
        case .workerStopped:
            return "the worker has stopped"
        case .calledFromWorker:
            return "a blocking worker call was made from the worker's own thread"
        }
    }
}
