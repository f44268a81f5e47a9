import Synchronization

/// A bounded wait ran out: what was waited for, and for how long.
public struct WaitExceeded: Error, CustomStringConvertible {
    public let description: String
    public init(description: String) { self.description = description }
}

/// A test's own clock for bounds: it advances only while the test's task gets to run.
///
/// The bounds turn a hang into a clear failure; they are not timing assertions. On a
/// loaded machine a whole `swift test` run can keep the cooperative pool (one thread per
/// core) busy for many seconds, and a wall-clock deadline would then fail a test whose
/// condition came true meanwhile. So time is counted in short sleeps, each counted as at
/// most twice what it asked for: the time a task waited for a thread is not counted.
public struct TestBound: Sendable {
    let limit: Duration
    var counted: Duration = .zero
    static let slice: Duration = .milliseconds(50)

    public init(seconds: Int) { limit = .seconds(seconds) }

    /// Whether the bound is used up.
    public var isExceeded: Bool { counted >= limit }

    /// Sleeps for `interval` (at most a slice) and counts it.
    public mutating func sleep(_ interval: Duration) async throws {
        let asked = min(interval, Self.slice)
        let start = ContinuousClock.now
        try await Task.sleep(for: asked)
        counted += min(ContinuousClock.now - start, asked * 2)
    }
}

/// Polls `condition` every `interval` until it holds; past `seconds` of the test's own
/// time (``TestBound``) throws ``WaitExceeded`` naming `what`. The condition is looked at
/// once more when the bound runs out.
public func eventually(_ what: String, seconds: Int = 20, every interval: Duration = .milliseconds(2),
                       _ condition: () async throws -> Bool) async throws {
    var bound = TestBound(seconds: seconds)
    while true {
        if try await condition() { return }
        guard !bound.isExceeded else { break }
        try await bound.sleep(interval)
    }
    if try await condition() { return }
    throw WaitExceeded(description: "\(what): not done after \(seconds) s")
}

/// Runs `body` with an upper bound of `seconds` of the test's own time (``TestBound``);
/// past it, throws ``WaitExceeded`` naming `what`. The body is then cancelled but not
/// waited for: a request stuck in a device under test may not end on cancellation, and
/// the test must fail rather than hang.
public func bounded<T: Sendable>(_ what: String, seconds: Int = 20,
                                 _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    let gate = FirstResult<T>()
    return try await withCheckedThrowingContinuation { continuation in
        gate.arm(continuation)
        let work = Task {
            do { gate.resume(.success(try await body())) } catch { gate.resume(.failure(error)) }
        }
        Task {
            var bound = TestBound(seconds: seconds)
            while !bound.isExceeded, !gate.isResumed { try? await bound.sleep(TestBound.slice) }
            if gate.resume(.failure(WaitExceeded(description: "\(what): not done after \(seconds) s"))) { work.cancel() }
        }
    }
}

/// Resumes a continuation once, with whichever result comes first.
final class FirstResult<T: Sendable>: Sendable {
    let continuation = Mutex<CheckedContinuation<T, any Error>?>(nil)
    let resumed = Atomic<Bool>(false)

    func arm(_ c: CheckedContinuation<T, any Error>) { continuation.withLock { $0 = c } }

    var isResumed: Bool { resumed.load(ordering: .acquiring) }

    /// Resumes with `result` unless resumed already; whether this call did.
    @discardableResult
    func resume(_ result: Result<T, any Error>) -> Bool {
        continuation.withLock { c in
            guard let waiting = c else { return false }
            waiting.resume(with: result)
            c = nil
            resumed.store(true, ordering: .releasing)
            return true
        }
    }
}
