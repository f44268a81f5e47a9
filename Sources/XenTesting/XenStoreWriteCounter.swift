import Synchronization
import XenStore

/// Every write to one xenstore node, seen through a watch: xenstored fires one event per
/// write, so tests can count a driver's state writes (the watch's own first event is not
/// counted). Keeps the value read just after each event.
public final class XenStoreWriteCounter: Sendable {
    final class Values: Sendable {
        let list = Mutex<[String?]>([])
    }

    /// The node watched.
    public let path: String
    let seen = Values()
    let task: Task<Void, Never>

    /// Watches `path` over `store`; returns once the watch's first event came, so every
    /// later write is counted.
    public init(_ store: XenStoreClient, _ path: String) async throws(XenStoreError) {
        self.path = path
        let watch = try await store.watch(path)
        let seen = self.seen
        let (started, signal) = AsyncStream<Void>.makeStream()
        task = Task {
            var first = true
            for await _ in watch {
                if first {
                    first = false
                    signal.finish()
                    continue
                }
                let value = try? await store.readString(path)
                seen.list.withLock { $0.append(value) }
            }
            signal.finish()
        }
        for await _ in started {}
    }

    /// The value read after each write so far (nil: the node was gone).
    public var values: [String?] { seen.list.withLock { $0 } }

    /// Writes so far.
    public var count: Int { seen.list.withLock { $0.count } }

    /// Forgets the writes seen so far.
    public func forget() { seen.list.withLock { $0 = [] } }

    /// Stops watching.
    public func cancel() { task.cancel() }
}
