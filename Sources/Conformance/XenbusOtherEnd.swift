import XenBus
import XenStore

/// The other end of a device as a scripted peer reads it from xenstore: its directory, its
/// state node, and time-boxed waits on that state. Every value the state node held is
/// remembered, for the clauses about state values (XENBUS-001, XENBUS-017); each state read
/// is also shown to ``observe``, for a peer that judges when a state came.
final class XenbusOtherEnd: @unchecked Sendable {
    // SAFETY (@unchecked): used by the one check its peer runs at a time.
    let store: XenStoreClient
    /// The other end's directory (a backend's or a frontend's).
    let path: String
    /// Every value the state node was read with.
    private(set) var stateValuesSeen: Set<String> = []
    /// Called with each state read.
    var observe: ((XenbusState) -> Void)?
    /// Called at each poll of a wait or watch: a peer that serves its rings meanwhile.
    var whileWaiting: (() -> Void)?

    init(store: XenStoreClient, path: String) {
        self.store = store
        self.path = path
    }

    /// Every node directly under the directory.
    func nodes() async throws -> [String: String] { try await store.nodes(under: path) }

    /// The state node read once: the state (nil when absent or not a state number) and
    /// its description for evidence (its name, `absent`, or the odd value quoted).
    func read() async -> (state: XenbusState?, description: String) {
        guard let value = try? await store.readString(path + "/state") else { return (nil, "absent") }
        stateValuesSeen.insert(value)
        guard let state = UInt8(value).flatMap(XenbusState.init(rawValue:)) else { return (nil, "'\(value)'") }
        observe?(state)
        return (state, "\(state)")
    }

    /// The state; nil when absent or not a state number.
    func state() async -> XenbusState? { await read().state }

    /// The state for evidence.
    func describeState() async -> String { await read().description }

    /// Waits until the state is one of `wanted`; returns it.
    @discardableResult
    func wait(for wanted: Set<XenbusState>, within: Duration) async throws -> XenbusState {
        let deadline = ContinuousClock.now + within
        while true {
            if let state = await state(), wanted.contains(state) { return state }
            guard ContinuousClock.now < deadline else {
                throw PeerError.stateNotReached(path: path + "/state", wanted: wanted.map(\.description).sorted().joined(separator: "|"),
                                                last: await describeState(), seconds: Int(within.components.seconds))
            }
            whileWaiting?()
            try await Task.sleep(for: .milliseconds(2))
        }
    }

    /// The states read over `window`, in order of change: a time box for clauses where the
    /// other end must not do something, or must refuse a lie (then it stops at Closing or
    /// Closed if `stopOnRefusal`).
    func watch(for window: Duration, stopOnRefusal: Bool) async throws -> [String] {
        var seen: [String] = []
        let deadline = ContinuousClock.now + window
        while ContinuousClock.now < deadline {
            let state = await read().description
            if seen.last != state { seen.append(state) }
            if stopOnRefusal, state == "Closing" || state == "Closed" { break }
            whileWaiting?()
            try await Task.sleep(for: .milliseconds(2))
        }
        return seen
    }
}

extension XenStoreClient {
    /// Every node directly under `path` with its value (a node removed meanwhile left out).
    func nodes(under path: String) async throws -> [String: String] {
        var nodes: [String: String] = [:]
        for key in try await directory(path) {
            if let value = try? await readString(path + "/" + key) { nodes[key] = value }
        }
        return nodes
    }
}
