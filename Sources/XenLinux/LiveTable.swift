import Synchronization

/// What is live on one libxen handle (mappings, shared pages, copy buffers), by the id we
/// handed out for it. Removing an entry is how exactly one of "explicit unmap" and "region
/// dropped" gets to release it.
final class LiveTable<Value: Sendable>: Sendable {
    private struct State {
        var next: UInt64 = 1
        var entries: [UInt64: Value] = [:]
    }

    private let state = Mutex(State())

    /// Records `value` under a fresh id.
    func insert(_ value: Value) -> UInt64 {
        state.withLock { s in
            let id = s.next
            s.next &+= 1
            s.entries[id] = value
            return id
        }
    }

    /// Puts back an entry whose release failed, so it can be retried.
    func restore(_ id: UInt64, _ value: Value) {
        state.withLock { $0.entries[id] = value }
    }

    /// Takes the entry out, or nil when it was never there or is already gone.
    func remove(_ id: UInt64) -> Value? {
        state.withLock { $0.entries.removeValue(forKey: id) }
    }

    /// Takes the entry out only if `matches` accepts it: an id handed out by another
    /// handle's table must not release this one's entry of the same number.
    func remove(_ id: UInt64, matching matches: (Value) -> Bool) -> Value? {
        state.withLock { s in
            guard let value = s.entries[id], matches(value) else { return nil }
            s.entries[id] = nil
            return value
        }
    }

    /// Every entry, removed.
    func removeAll() -> [UInt64: Value] {
        state.withLock { s in
            defer { s.entries = [:] }
            return s.entries
        }
    }

    var count: Int { state.withLock { $0.entries.count } }
}
