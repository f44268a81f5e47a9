import CTap
import Glibc
import SystemCalls

/// A named network namespace, as `ip netns add NAME` makes one: a file under
/// /var/run/netns that keeps the namespace alive.
///
/// setns(CLONE_NEWNET) moves only the calling thread, so ``run(_:)`` enters the namespace
/// on a thread of its own that ends with the body; no thread of the caller's ever changes
/// namespace. Sockets and TAP devices created by the body stay in the namespace after it
/// returns (a TAP fd stays bound to its device there).
public struct NetworkNamespace: Sendable, Hashable {
    /// The directory `ip netns` keeps its namespaces in.
    public static let directory = "/var/run/netns"

    /// The namespace's name.
    public let name: String

    /// The namespace called `name`; its name must be one file name (no '/', not "." or
    /// ".."). Whether it exists is checked when it is entered.
    public init(_ name: String) throws(TapError) {
        guard !name.isEmpty, name != ".", name != "..", !name.contains("/"), !name.utf8.contains(0) else {
            throw .invalidNamespaceName(name)
        }
        self.name = name
    }

    /// The namespace's file.
    public var path: String { "\(Self.directory)/\(name)" }

    /// Runs `body` on a new thread inside this namespace and returns what it returned or
    /// threw; throws only if the namespace cannot be entered. The calling thread blocks
    /// until `body` is done, so `body` needs no synchronisation with it.
    public func run<T, E: Error>(_ body: () throws(E) -> T) throws(TapError) -> Result<T, E> {
        let namespace: Int32
        switch SystemCall.retrying({ open(path, O_RDONLY | O_CLOEXEC) }) {
        case let .success(fd): namespace = fd
        case let .failure(errno): throw .namespaceOpen(path: path, errno)
        }
        defer { Glibc.close(namespace) }

        return try withoutActuallyEscaping(body) { (escapable) throws(TapError) -> Result<T, E> in
            let job = NamespaceJob<T, E>(namespace: namespace, body: escapable)
            try job.runOnNewThread()
            switch job.outcome {
            case let .entered(result): return result
            case let .refused(errno): throw .namespaceEnter(path: path, errno)
            case nil: preconditionFailure("the namespace thread ended without an outcome")
            }
        }
    }
}

/// What the namespace thread does and leaves behind. The caller reads `outcome` only
/// after pthread_join, which orders it after the thread's write.
private final class NamespaceJob<T, E: Error>: @unchecked Sendable {
    enum Outcome {
        case entered(Result<T, E>)
        case refused(Errno)
    }

    let namespace: Int32
    let body: () throws(E) -> T
    var outcome: Outcome?

    init(namespace: Int32, body: @escaping () throws(E) -> T) {
        self.namespace = namespace
        self.body = body
    }

    func work() {
        switch SystemCall.retryingNegated({ ctap_setns_net(namespace) }) {
        case let .failure(errno): outcome = .refused(errno)
        case .success:
            do throws(E) { outcome = .entered(.success(try body())) } catch { outcome = .entered(.failure(error)) }
        }
    }

    /// Runs ``work()`` on a new thread and waits for it to end.
    func runOnNewThread() throws(TapError) {
        try JoinedThread.run { self.work() }
    }
}

/// A thread started and joined at once. Not generic: a C entry point cannot capture
/// generic parameters.
private final class JoinedThread: @unchecked Sendable {
    let work: () -> Void

    private init(_ work: @escaping () -> Void) { self.work = work }

    static func run(_ work: @escaping () -> Void) throws(TapError) {
        let context = Unmanaged.passRetained(JoinedThread(work)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { context in
            Unmanaged<JoinedThread>.fromOpaque(context!).takeRetainedValue().work()
            return nil
        }, context)
        guard rc == 0 else {
            Unmanaged<JoinedThread>.fromOpaque(context).release()
            throw .threadStart(Errno(code: rc))
        }
        pthread_join(thread, nil)
    }
}
