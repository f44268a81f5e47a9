import CSharedMemory

/// The ordering of one atomic access or fence. Every call names one, and says in a
/// comment what it pairs with on the other side (STYLE.md habit 2).
public enum MemoryOrdering: Int32, Sendable {
    case relaxed = 0
    case acquiring = 1
    case releasing = 2
    case acquiringAndReleasing = 3
    case sequentiallyConsistent = 4
}

/// A memory fence with the given ordering.
@inlinable
public func memoryFence(_ ordering: MemoryOrdering) {
    xsm_fence(ordering.rawValue)
}
