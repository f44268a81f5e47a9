/// The feature nodes a network backend publishes, as values. `io/netif.h` documents
/// the multi-queue, split-event-channel, checksum, GSO, multicast and control-ring keys;
/// `feature-sg`, `feature-rx-copy` and `feature-rx-flip` are the long-standing keys every
/// netback and netfront (Linux, QEMU, Windows PV) use. Absent booleans are off.
public struct NetifBackendFeatures: Sendable, Hashable {
    /// `feature-sg`: packets may span several slots.
    public var scatterGather = false
    /// `feature-gso-tcpv4`: accepts TCPv4 GSO packets.
    public var gsoTCPv4 = false
    /// `feature-gso-tcpv6`: accepts TCPv6 GSO packets.
    public var gsoTCPv6 = false
    /// `feature-ipv6-csum-offload`: handles IPv6 TCP/UDP checksum offload.
    public var ipv6ChecksumOffload = false
    /// `feature-rx-copy`: fills rx pages by grant copy.
    public var rxCopy = false
    /// `feature-rx-flip`: the obsolete page-flipping receive mode.
    public var rxFlip = false
    /// `feature-multicast-control`: filters multicast per the frontend's list.
    public var multicastControl = false
    /// `feature-dynamic-multicast-control`: `request-multicast-control` may change at any time.
    public var dynamicMulticastControl = false
    /// `feature-split-event-channels`: separate tx and rx event channels.
    public var splitEventChannels = false
    /// `feature-ctrl-ring`: serves a control ring.
    public var controlRing = false
    /// `multi-queue-max-queues`: the most queue pairs served (absent: one).
    public var maxQueues: UInt32?

    /// All features off, one queue.
    public init() {}

    /// The node names.
    public enum Key {
        public static let scatterGather = "feature-sg"
        public static let gsoTCPv4 = "feature-gso-tcpv4"
        public static let gsoTCPv6 = "feature-gso-tcpv6"
        public static let ipv6ChecksumOffload = "feature-ipv6-csum-offload"
        public static let rxCopy = "feature-rx-copy"
        public static let rxFlip = "feature-rx-flip"
        public static let multicastControl = "feature-multicast-control"
        public static let dynamicMulticastControl = "feature-dynamic-multicast-control"
        public static let splitEventChannels = "feature-split-event-channels"
        public static let controlRing = "feature-ctrl-ring"
        public static let maxQueues = "multi-queue-max-queues"
    }

    private static var flags: [(String, WritableKeyPath<NetifBackendFeatures, Bool>)] { [
        (Key.scatterGather, \.scatterGather), (Key.gsoTCPv4, \.gsoTCPv4), (Key.gsoTCPv6, \.gsoTCPv6),
        (Key.ipv6ChecksumOffload, \.ipv6ChecksumOffload), (Key.rxCopy, \.rxCopy), (Key.rxFlip, \.rxFlip),
        (Key.multicastControl, \.multicastControl), (Key.dynamicMulticastControl, \.dynamicMulticastControl),
        (Key.splitEventChannels, \.splitEventChannels), (Key.controlRing, \.controlRing),
    ] }

    /// The nodes this backend writes.
    public var xenstoreEntries: [String: String] {
        var out: [String: String] = [:]
        for (key, path) in Self.flags { out[key] = self[keyPath: path] ? "1" : "0" }
        if let maxQueues { out[Key.maxQueues] = String(maxQueues) }
        return out
    }

    /// Parses the backend's nodes (other keys in `entries` are ignored).
    public init(xenstore entries: [String: String]) throws(NetifError) {
        for (key, path) in Self.flags { self[keyPath: path] = try NetifXenstoreValue.flag(entries, key, default: false) }
        maxQueues = try NetifXenstoreValue.uint32(entries, Key.maxQueues, range: 1...UInt64(UInt32.max))
    }
}

extension NetifBackendFeatures {
    /// Throws if the frontend asked for more queues than offered.
    public func validate(_ frontend: NetifFrontendFeatures) throws(NetifError) {
        guard let queues = frontend.queueCount else { return }
        let limit = 1...UInt64(maxQueues ?? 1)
        guard limit.contains(UInt64(queues)) else {
            throw .featureRange(key: NetifFrontendFeatures.Key.queueCount, value: UInt64(queues), limit: limit)
        }
    }
}
