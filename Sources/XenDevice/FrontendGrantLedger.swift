import Synchronization
import XenPlatform

/// The page sets a frontend granted its backend, across connections: counted when
/// granted, given back (access ended) when a connection goes, and those the backend still
/// maps kept and retried until it lets go (by a task of the ledger's own, as Linux retries
/// its deferred grants on a timer: a backend that unmaps after the frontend closed must not
/// leave the pages granted until the frontend's next reconnect); a frontend reports what it
/// could not give back at close.
public final class FrontendGrantLedger: Sendable {
    let grantTable: any GrantTable
    let state = Mutex<(granted: Int, deferred: [SharedPages], retrying: Bool)>((0, [], false))

    public init(grantTable: any GrantTable) {
        self.grantTable = grantTable
    }

    /// Page sets granted and not yet given back.
    public var outstanding: Int { state.withLock { $0.granted } }

    /// Counts `count` more sets granted (a new connection's rings and buffers).
    public func granted(_ count: Int) {
        state.withLock { $0.granted += count }
    }

    /// Ends access to every set of `sets` (a connection that went); the ones the backend
    /// still maps are kept and retried until it lets go.
    public func giveBack(_ sets: [SharedPages]) {
        var busy: [SharedPages] = []
        for pages in sets {
            do { try grantTable.endAccess(pages) } catch { busy.append(pages) }
        }
        state.withLock { s in
            s.granted -= sets.count - busy.count
            s.deferred += busy
        }
        keepRetrying()
    }

    /// Retries ending access to the sets the backend still mapped; returns how many remain.
    @discardableResult
    public func releaseDeferred() -> Int {
        let left = attempt()
        keepRetrying()
        return left
    }

    /// One try at every deferred set; how many remain.
    func attempt() -> Int {
        let pending = state.withLock { s in
            defer { s.deferred = [] }
            return s.deferred
        }
        var still: [SharedPages] = []
        for pages in pending {
            do { try grantTable.endAccess(pages) } catch { still.append(pages) }
        }
        return state.withLock { s in
            s.granted -= pending.count - still.count
            s.deferred += still
            return s.deferred.count
        }
    }

    /// Starts the retrying task when sets wait and none runs: it tries again, backing off
    /// from 10 ms to 1 s, until none remain.
    func keepRetrying() {
        let start = state.withLock { s in
            guard !s.deferred.isEmpty, !s.retrying else { return false }
            s.retrying = true
            return true
        }
        guard start else { return }
        Task.detached { [self] in
            var pause = Duration.milliseconds(10)
            while true {
                try? await Task.sleep(for: pause)
                _ = attempt()
                // Stops only with nothing left; whoever defers more starts it again.
                let done = state.withLock { s in
                    if s.deferred.isEmpty { s.retrying = false }
                    return !s.retrying
                }
                if done { return }
                pause = min(pause * 2, .seconds(1))
            }
        }
    }
}
