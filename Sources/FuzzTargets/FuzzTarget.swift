/// Every fuzz target, by the name `scripts/fuzz.sh` and `xensplit-fuzz` take.
public enum FuzzTarget: String, CaseIterable, Sendable {
    case ring
    case xenstore
    case blkback
    case netif
    case netifctrl

    /// Runs one input through the target.
    public func run(_ input: UnsafeRawBufferPointer) {
        switch self {
        case .ring: RingFuzz.run(input)
        case .xenstore: XenStoreFuzz.run(input)
        case .blkback: BlkbackFuzz.run(input)
        case .netif: NetifFuzz.run(input)
        case .netifctrl: NetifCtrlFuzz.run(input)
        }
    }
}
