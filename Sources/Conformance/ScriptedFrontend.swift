import SharedMemory
import XenBus
import XenPlatform
import XenStore

/// A scripted frontend (of any device type): what its checks read of the backend, through
/// one ``XenbusOtherEnd``.
protocol ScriptedFrontend: AnyObject {
    /// The device's rings, port and grants while connected.
    associatedtype Connection
    /// The current connection, nil between handshakes.
    var connection: Connection? { get }
    /// The pages the peer grants for data, one page each.
    var data: SharedPages { get }
    /// The backend's directory as the peer reads it.
    var backend: XenbusOtherEnd { get }
    var platform: any Platform { get }
    var store: XenStoreClient { get }
    /// dom0's xenstore, if the run has it; closed with the peer.
    var observer: XenStoreClient? { get }
    /// Writes the frontend's state node.
    func writeState(_ state: XenbusState) async throws
    /// Lets go of the current connection's rings and port.
    func release()
    /// How long a state change may take before the peer gives up (a safety net).
    static var patience: Duration { get }
    /// How long the peer watches a backend after a lie for it to refuse.
    static var refusalWindow: Duration { get }
}

extension ScriptedFrontend {
    /// The current connection, or why there is none.
    func rings() throws -> Connection {
        guard let connection else { throw PeerError.unusable("no rings published") }
        return connection
    }

    /// Page `index` of the data pages (callers index within them).
    func dataPage(_ index: Int) -> SharedView {
        try! data.view.slice(offset: index * pageSize, length: pageSize)
    }

    /// Every node directly under the backend's directory.
    func backendNodes() async throws -> [String: String] { try await backend.nodes() }

    /// Every value the backend's state node read, for XENBUS-001.
    var stateValuesSeen: Set<String> { backend.stateValuesSeen }

    /// The backend's state, nil when absent or not a state number.
    func backendState() async -> XenbusState? { await backend.state() }

    func describeBackendState() async -> String { await backend.describeState() }

    /// Waits until the backend's state is one of `wanted`; returns it.
    @discardableResult
    func waitForBackend(_ wanted: Set<XenbusState>, within: Duration = Self.patience) async throws -> XenbusState {
        try await backend.wait(for: wanted, within: within)
    }

    /// Watches the backend for `window` after a lie; the states it read, in order,
    /// stopping at Closing or Closed if `stopOnRefusal`.
    func watchBackend(for window: Duration = Self.refusalWindow, stopOnRefusal: Bool = true) async throws -> [String] {
        try await backend.watch(for: window, stopOnRefusal: stopOnRefusal)
    }

    /// Walks the frontend to Closed, lets go of its rings, ends access to `pages`
    /// (retrying for a while those the backend still maps) and closes the xenstore
    /// connections. Returns how many page sets stay granted.
    func closeDown(releasing pages: [SharedPages]) async -> Int {
        try? await writeState(.closing)
        _ = try? await waitForBackend([.closing, .closed], within: .seconds(5))
        try? await writeState(.closed)
        _ = try? await waitForBackend([.closed], within: .seconds(5))
        release()
        var pending = pages
        for _ in 0 ..< 200 where !pending.isEmpty {
            pending = pending.filter { (try? platform.grantTable.endAccess($0)) == nil }
            if !pending.isEmpty { try? await Task.sleep(for: .milliseconds(10)) }
        }
        store.close()
        observer?.close()
        return pending.count
    }
}
