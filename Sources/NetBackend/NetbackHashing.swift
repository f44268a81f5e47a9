import Netif
import Synchronization

/// A vif's receive-side hashing (io/netif.h, "Control ring" and "Hash types"): what the
/// frontend set over its control ring, shared by the vif's queues (on any worker). The
/// control queue changes it rarely; each rx queue keeps a ``Snapshot`` and copies a new
/// one only when ``generation`` moved, so a packet costs one atomic load, no lock.
public final class NetbackHashing: Sendable {
    let configuration: Mutex<NetifHashConfiguration>
    /// Bumped after each change the control queue makes.
    let generation = Atomic<UInt32>(0)

    /// No hashing yet, for a vif of `queueCount` queue pairs.
    public init(queueCount: Int) {
        configuration = Mutex(NetifHashConfiguration(queueCount: queueCount))
    }

    /// Answers one control request (on the control queue's worker). The granted pages
    /// are read by `read` outside the lock; only the control queue changes the state, so
    /// nothing is lost between the copy out and the store back.
    public func answer(_ request: NetifCtrlRequest, read: (UInt32, Int) -> [UInt8]?) -> NetifCtrlResponse {
        var working = configuration.withLock { $0 }
        let response = working.answer(request, read: read)
        let changed = configuration.withLock { current -> Bool in
            defer { current = working }
            return current != working
        }
        // Releasing: a queue that sees the new generation (acquiring) reads the new state.
        if changed { generation.add(1, ordering: .releasing) }
        return response
    }

    /// The state now.
    public var current: NetifHashConfiguration { configuration.withLock { $0 } }

    /// What an rx queue needs per packet, unpacked once per change.
    struct Snapshot {
        var generation: UInt32 = 0
        var hashing = false
        var types: NetifHashTypes = []
        /// The key unpacked for a lookup per input byte (36 KiB, built per change).
        var toeplitz = NetifToeplitzTable(key: [])
        var configuration = NetifHashConfiguration(queueCount: 1)

        /// The packet's hash and type, if hashing is on and the frame has a hash input.
        func hash(_ frame: UnsafeRawBufferPointer) -> (type: NetifHashType, value: UInt32)? {
            guard hashing, let input = NetifHashInput.find(in: frame, types: types) else { return nil }
            return (input.type, input.toeplitz(of: frame, with: toeplitz))
        }
    }

    /// `snapshot`, refreshed if the state changed since it was taken.
    func refresh(_ snapshot: inout Snapshot) {
        let now = generation.load(ordering: .acquiring)
        guard now != snapshot.generation else { return }
        let state = current
        // The table is rebuilt only for a new key, not for new flags or a new mapping.
        let table = snapshot.generation != 0 && state.key == snapshot.configuration.key
            ? snapshot.toeplitz : NetifToeplitzTable(key: state.key)
        snapshot = Snapshot(generation: now, hashing: state.isHashing, types: state.types, toeplitz: table,
                            configuration: state)
    }
}
