/// Packet counts of one vif end, both directions named as the guest sees them (tx: the
/// guest sends, rx: it receives), as `ip -s link` shows them for an interface. A backend
/// and a frontend keep one each; what each counts as a drop or an error is said where it
/// counts it.
public struct NetifCounters: Sendable, Hashable, CustomStringConvertible {
    /// Packets the guest sent that went through (to the TAP device, or onto the tx ring).
    public var txPackets = 0
    /// Their bytes (frames, without any virtio-net header).
    public var txBytes = 0
    /// Packets the guest sent that went no further, by this end's choice.
    public var txDropped = 0
    /// Packets the guest sent that failed (answered ERROR, a copy that failed).
    public var txErrors = 0
    /// Packets delivered to the guest.
    public var rxPackets = 0
    /// Their bytes (frames, without any virtio-net header).
    public var rxBytes = 0
    /// Packets for the guest that went no further (it could not take them, or had no buffer).
    public var rxDropped = 0
    /// Packets for the guest that failed (an error status, a copy that failed).
    public var rxErrors = 0

    public init() {}

    public var description: String {
        "tx \(txPackets) packets \(txBytes) bytes \(txDropped) dropped \(txErrors) errors, "
            + "rx \(rxPackets) packets \(rxBytes) bytes \(rxDropped) dropped \(rxErrors) errors"
    }
}
