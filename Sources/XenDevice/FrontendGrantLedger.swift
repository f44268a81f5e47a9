import Synchronization
import XenPlatform

/// The page sets a frontend granted its backend, across connections: counted when
/// granted, given back (access ended) when a connection goes, and those the backend still
/// maps kept and retried until it lets go; a frontend reports what it could not give
/// back at close.
public final class FrontendGrantLedger: Sendable {
    let grantTable: any GrantTable
    let state = Mutex<(granted: Int, deferred: [SharedPages])>((0, []))

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
    /// still maps are kept for ``releaseDeferred()``.
    public func giveBack(_ sets: [SharedPages]) {
        var busy: [SharedPages] = []
        for pages in sets {
            do { try grantTable.endAccess(pages) } catch { busy.append(pages) }
        }
        state.withLock { s in
            s.granted -= sets.count - busy.count
            s.deferred += busy
        }
    }

    /// Retries ending access to the sets the backend still mapped; returns how many remain.
    @discardableResult
    public func releaseDeferred() -> Int {
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
}
