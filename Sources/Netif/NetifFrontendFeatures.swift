/// The feature nodes a network frontend publishes, as values; ring references and
/// event channels are per queue and live elsewhere.
public struct NetifFrontendFeatures: Sendable, Hashable {
    /// `request-rx-copy`: the frontend wants grant-copy receive.
    public var requestRxCopy = false
    /// `feature-rx-notify`: the frontend notifies after posting rx requests, so the
    /// backend may queue packets (`io/netif.h`).
    public var rxNotify = false
    /// `feature-sg`: the frontend accepts multi-slot packets.
    public var scatterGather = false
    /// `feature-gso-tcpv4`: the frontend accepts TCPv4 GSO packets.
    public var gsoTCPv4 = false
    /// `feature-gso-tcpv6`: the frontend accepts TCPv6 GSO packets.
    public var gsoTCPv6 = false
    /// `feature-no-csum-offload`: IPv4 checksum offload off (absent: on).
    public var noChecksumOffload = false
    /// `feature-ipv6-csum-offload`: IPv6 checksum offload on (absent: off).
    public var ipv6ChecksumOffload = false
    /// `request-multicast-control`: apply the multicast filter.
    public var requestMulticastControl = false
    /// `multi-queue-num-queues`: queue pairs in use (absent: one, at the top level).
    public var queueCount: UInt32?
    /// `trusted`: "0" asks the frontend to distrust the backend (absent: trusted).
    public var trusted = true

    /// All defaults.
    public init() {}

    /// The node names.
    public enum Key {
        public static let requestRxCopy = "request-rx-copy"
        public static let rxNotify = "feature-rx-notify"
        public static let scatterGather = "feature-sg"
        public static let gsoTCPv4 = "feature-gso-tcpv4"
        public static let gsoTCPv6 = "feature-gso-tcpv6"
        public static let noChecksumOffload = "feature-no-csum-offload"
        public static let ipv6ChecksumOffload = "feature-ipv6-csum-offload"
        public static let requestMulticastControl = "request-multicast-control"
        public static let queueCount = "multi-queue-num-queues"
        public static let trusted = "trusted"
    }

    private static var flags: [(String, WritableKeyPath<NetifFrontendFeatures, Bool>, Bool)] { [
        (Key.requestRxCopy, \.requestRxCopy, false), (Key.rxNotify, \.rxNotify, false),
        (Key.scatterGather, \.scatterGather, false), (Key.gsoTCPv4, \.gsoTCPv4, false),
        (Key.gsoTCPv6, \.gsoTCPv6, false), (Key.noChecksumOffload, \.noChecksumOffload, false),
        (Key.ipv6ChecksumOffload, \.ipv6ChecksumOffload, false),
        (Key.requestMulticastControl, \.requestMulticastControl, false), (Key.trusted, \.trusted, true),
    ] }

    /// The nodes this frontend writes.
    public var xenstoreEntries: [String: String] {
        var out: [String: String] = [:]
        for (key, path, _) in Self.flags { out[key] = self[keyPath: path] ? "1" : "0" }
        if let queueCount { out[Key.queueCount] = String(queueCount) }
        return out
    }

    /// Parses the frontend's nodes (other keys in `entries` are ignored).
    public init(xenstore entries: [String: String]) throws(NetifError) {
        for (key, path, value) in Self.flags {
            self[keyPath: path] = try NetifXenstoreValue.flag(entries, key, default: value)
        }
        // io/netif.h: the number of queues must be greater than zero.
        queueCount = try NetifXenstoreValue.uint32(entries, Key.queueCount, range: 1...UInt64(UInt32.max))
    }
}
