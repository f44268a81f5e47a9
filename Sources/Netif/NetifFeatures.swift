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

/// Strict parsing of xenstore values: booleans are "0" or "1", numbers plain decimal.
enum NetifXenstoreValue {
    static func flag(_ entries: [String: String], _ key: String, default value: Bool) throws(NetifError) -> Bool {
        switch entries[key] {
        case nil: return value
        case "0": return false
        case "1": return true
        case let other?: throw .featureValue(key: key, value: other, expected: "0 or 1")
        }
    }

    static func uint32(_ entries: [String: String], _ key: String,
                       range: ClosedRange<UInt64>) throws(NetifError) -> UInt32? {
        guard let text = entries[key] else { return nil }
        guard !text.isEmpty, text.utf8.count <= 20, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
              let value = UInt64(text) else {
            throw .featureValue(key: key, value: text, expected: "a decimal number")
        }
        guard range.contains(value) else { throw .featureRange(key: key, value: value, limit: range) }
        return UInt32(value)
    }
}
