import Synchronization

/// Packet counts of a ``NetFrontend`` over its life (every connection), as `ip -s link`
/// would show them for the guest interface.
public struct NetFrontendCounters: Sendable, Hashable {
    /// Frames put on the tx ring.
    public var txPackets = 0
    /// Bytes of those frames.
    public var txBytes = 0
    /// Frames read from the TAP device and not sent (too short, too long, GSO or checksum
    /// the backend cannot take).
    public var txDropped = 0
    /// Frames the backend answered NETIF_RSP_ERROR or NETIF_RSP_DROPPED.
    public var txErrors = 0
    /// Packets written to the TAP device.
    public var rxPackets = 0
    /// Bytes of those packets' frames (without the virtio-net header).
    public var rxBytes = 0
    /// Packets received and not delivered (no TAP device, the TAP device full, a
    /// checksum that could not be located).
    public var rxDropped = 0
    /// Packets the backend answered with an error status.
    public var rxErrors = 0

    public init() {}
}

/// The counters as atomics, bumped by the I/O thread and read by anyone.
final class NetFrontendStatistics: Sendable {
    let txPackets = Atomic<Int>(0)
    let txBytes = Atomic<Int>(0)
    let txDropped = Atomic<Int>(0)
    let txErrors = Atomic<Int>(0)
    let rxPackets = Atomic<Int>(0)
    let rxBytes = Atomic<Int>(0)
    let rxDropped = Atomic<Int>(0)
    let rxErrors = Atomic<Int>(0)

    var snapshot: NetFrontendCounters {
        var c = NetFrontendCounters()
        c.txPackets = txPackets.load(ordering: .relaxed)
        c.txBytes = txBytes.load(ordering: .relaxed)
        c.txDropped = txDropped.load(ordering: .relaxed)
        c.txErrors = txErrors.load(ordering: .relaxed)
        c.rxPackets = rxPackets.load(ordering: .relaxed)
        c.rxBytes = rxBytes.load(ordering: .relaxed)
        c.rxDropped = rxDropped.load(ordering: .relaxed)
        c.rxErrors = rxErrors.load(ordering: .relaxed)
        return c
    }
}
