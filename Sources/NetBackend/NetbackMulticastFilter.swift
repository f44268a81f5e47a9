import Netif
import Synchronization

/// A vif's multicast filter (io/netif.h, "feature-multicast-control"): the addresses the
/// frontend added with MCAST_ADD extras, at most 64 as Linux keeps; applied to packets
/// towards the guest only while its `request-multicast-control` reads 1. Shared by the
/// vif's queues (on any worker): the lock is taken only for a multicast packet or a filter
/// change, never for a unicast one.
public final class NetbackMulticastFilter: Sendable {
    /// The most addresses kept, as Linux's netback.
    public static let capacity = 64

    let addresses = Mutex<Set<UInt64>>([])
    /// Whether the filter applies (the frontend's request-multicast-control).
    let applied = Atomic<Bool>(false)

    public init() {}

    /// Adds `address`; false when the filter is full (the request is answered ERROR).
    public func add(_ address: NetifMACAddress) -> Bool {
        addresses.withLock { set in
            guard set.count < Self.capacity || set.contains(address.rawValue) else { return false }
            set.insert(address.rawValue)
            return true
        }
    }

    /// Removes `address` (absent: nothing to do).
    public func remove(_ address: NetifMACAddress) {
        _ = addresses.withLock { $0.remove(address.rawValue) }
    }

    /// Applies the filter or not, from the frontend's `request-multicast-control`.
    public func apply(_ on: Bool) {
        // Relaxed: the queues read it per multicast packet; a packet or two on either
        // side of the change is as good as any.
        applied.store(on, ordering: .relaxed)
    }

    public var isApplied: Bool { applied.load(ordering: .relaxed) }

    /// Whether a frame to `destination` (its first six bytes) goes to the guest: unicast
    /// and broadcast always; multicast only if the filter is off or holds the address.
    public func admits(_ destination: UnsafeRawBufferPointer) -> Bool {
        guard destination.count >= 6, destination[0] & 1 == 1, applied.load(ordering: .relaxed) else { return true }
        if (0..<6).allSatisfy({ destination[$0] == 0xFF }) { return true }
        let address = NetifMACAddress(destination[0], destination[1], destination[2], destination[3], destination[4], destination[5])
        return addresses.withLock { $0.contains(address.rawValue) }
    }

    /// The addresses held now.
    public var count: Int { addresses.withLock { $0.count } }
}
