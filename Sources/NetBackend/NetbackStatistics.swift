/// Per-queue counters, both directions as the guest sees them (tx: guest to host), logged
/// when the queue is removed.
public struct NetbackStatistics: Sendable, Equatable, CustomStringConvertible {
    /// Packets the guest sent that were written to the TAP device.
    public var txPackets = 0
    public var txBytes = 0
    /// Packets the guest sent that were not forwarded (an unparsable header, a TAP write
    /// that failed) although their slots were answered OKAY or DROPPED.
    public var txDropped = 0
    /// Chains answered ERROR (refused by the parser, a grant copy that failed).
    public var txErrors = 0
    /// Packets read from the TAP device and put in the guest's buffers.
    public var rxPackets = 0
    public var rxBytes = 0
    /// Packets from the TAP device dropped: too large for the guest's features, or a
    /// guest that posted too few buffers while the backend's buffers were full.
    public var rxDropped = 0
    /// Packets whose copy into the guest's buffers failed (answered with an error status).
    public var rxErrors = 0

    public init() {}

    public var description: String {
        "tx \(txPackets) packets \(txBytes) bytes \(txDropped) dropped \(txErrors) errors, "
            + "rx \(rxPackets) packets \(rxBytes) bytes \(rxDropped) dropped \(rxErrors) errors"
    }
}
