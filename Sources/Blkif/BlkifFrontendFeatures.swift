/// The feature and transport nodes a block frontend publishes (`io/blkif.h`, "Frontend
/// XenBus Nodes"); ring references and event channels are per queue and live elsewhere.
public struct BlkifFrontendFeatures: Sendable, Hashable {
    /// `protocol`: the ABI of the ring structs (absent: native).
    public var abi: BlkifABI = .native
    /// `feature-persistent`: the frontend reuses the same grants.
    public var persistent = false
    /// `feature-large-sector-size`: sector quantities are in units of `sector-size`.
    public var largeSectorSize = false
    /// `multi-queue-num-queues`: rings in use (absent: one, at the top level).
    public var queueCount: UInt32?
    /// `ring-page-order`: log2 of the pages per ring.
    public var ringPageOrder: UInt32 = 0
    /// `trusted`: "0" asks the frontend to distrust the backend (absent: trusted).
    public var trusted = true

    /// All defaults.
    public init() {}

    /// The nodes this frontend writes; `protocol` always names the concrete ABI, since
    /// "native" means different layouts to differently built backends.
    public var xenstoreEntries: [String: String] {
        var out: [String: String] = [
            Key.protocolName: abi.protocolName,
            Key.persistent: BlkifXenstoreValue.text(persistent),
            Key.largeSectorSize: BlkifXenstoreValue.text(largeSectorSize),
            Key.ringPageOrder: String(ringPageOrder),
            Key.trusted: BlkifXenstoreValue.text(trusted),
        ]
        if let queueCount { out[Key.queueCount] = String(queueCount) }
        return out
    }

    /// Parses the frontend's nodes (other keys in `entries` are ignored).
    public init(xenstore entries: [String: String]) throws(BlkifError) {
        abi = try BlkifABI(protocol: entries[Key.protocolName])
        persistent = try BlkifXenstoreValue.flag(entries, Key.persistent, default: false)
        largeSectorSize = try BlkifXenstoreValue.flag(entries, Key.largeSectorSize, default: false)
        // io/blkif.h: the number of queues must be greater than zero.
        queueCount = try BlkifXenstoreValue.uint32(entries, Key.queueCount, range: 1...UInt64(UInt32.max))
        ringPageOrder = try BlkifXenstoreValue.uint32(entries, Key.ringPageOrder) ?? 0
        trusted = try BlkifXenstoreValue.flag(entries, Key.trusted, default: true)
    }

    /// The node names.
    public enum Key {
        public static let protocolName = "protocol"
        public static let persistent = "feature-persistent"
        public static let largeSectorSize = "feature-large-sector-size"
        public static let queueCount = "multi-queue-num-queues"
        public static let ringPageOrder = "ring-page-order"
        public static let trusted = "trusted"
    }
}
