import Foundation

/// Runs two closures on two new threads at once and returns both results, for peers that
/// must run concurrently (a frontend and a backend over one ring).
public func runConcurrently<A: Sendable, B: Sendable>(
    _ first: @escaping @Sendable () -> A,
    _ second: @escaping @Sendable () -> B
) -> (A, B) {
    let done = DispatchSemaphore(value: 0)
    let results = Results<A, B>()
    let t1 = Thread { results.first = first(); done.signal() }
    let t2 = Thread { results.second = second(); done.signal() }
    t1.stackSize = 1 << 20
    t2.stackSize = 1 << 20
    t1.start()
    t2.start()
    done.wait()
    done.wait()
    return (results.first!, results.second!)
}

// Written by one thread each, read after both semaphores: the semaphore orders the accesses.
private final class Results<A, B>: @unchecked Sendable {
    var first: A?
    var second: B?
}

/// Runs a blocking `body` (a wait on an event channel, a peer process) on a thread of its
/// own, so a test task does not hold a thread of the cooperative pool that the code under
/// test needs.
public func offThePool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Foundation.Thread { continuation.resume(with: Result { try body() }) }
        thread.stackSize = 1 << 20
        thread.start()
    }
}
