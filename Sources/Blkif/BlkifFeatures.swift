/// The feature and transport nodes a block backend publishes (`io/blkif.h`, "Backend
/// XenBus Nodes"), as values. Absent nodes take the header's defaults.
public struct BlkifBackendFeatures: Sendable, Hashable {
    /// `feature-flush-cache`: BLKIF_OP_FLUSH_DISKCACHE is accepted.
    public var flushCache = false
    /// `feature-barrier`: BLKIF_OP_WRITE_BARRIER is accepted.
    public var barrier = false
    /// `feature-discard`: BLKIF_OP_DISCARD is accepted.
    public var discard = false
    /// `discard-granularity`: bytes per discardable extent (absent: the sector size).
    public var discardGranularity: UInt32?
    /// `discard-alignment`: byte offset of the first discardable extent (absent: 0).
    public var discardAlignment: UInt32?
    /// `discard-secure`: BLKIF_DISCARD_SECURE is honoured.
    public var discardSecure = false
    /// `feature-persistent`: the backend keeps grants mapped across requests.
    public var persistent = false
    /// `feature-max-indirect-segments`: BLKIF_OP_INDIRECT is accepted with up to this
    /// many segments (absent: no indirect requests).
    public var maxIndirectSegments: UInt32?
    /// `multi-queue-max-queues`: the most rings the backend serves (absent: one).
    public var maxQueues: UInt32?
    /// `max-ring-page-order`: log2 of the largest ring the backend maps.
    public var maxRingPageOrder: UInt32 = 0

    /// All defaults: no optional features, one single-page ring.
    public init() {}

    /// The nodes this backend writes, keyed by node name.
    public var xenstoreEntries: [String: String] {
        var out: [String: String] = [
            Key.flushCache: flag(flushCache),
            Key.barrier: flag(barrier),
            Key.discard: flag(discard),
            Key.discardSecure: flag(discardSecure),
            Key.persistent: flag(persistent),
            Key.maxRingPageOrder: String(maxRingPageOrder),
        ]
        if let discardGranularity { out[Key.discardGranularity] = String(discardGranularity) }
        if let discardAlignment { out[Key.discardAlignment] = String(discardAlignment) }
        if let maxIndirectSegments { out[Key.maxIndirectSegments] = String(maxIndirectSegments) }
        if let maxQueues { out[Key.maxQueues] = String(maxQueues) }
        return out
    }

    /// Parses the backend's nodes (other keys in `entries` are ignored).
    public init(xenstore entries: [String: String]) throws(BlkifError) {
        flushCache = try XenstoreValue.flag(entries, Key.flushCache, default: false)
        barrier = try XenstoreValue.flag(entries, Key.barrier, default: false)
        discard = try XenstoreValue.flag(entries, Key.discard, default: false)
        discardGranularity = try XenstoreValue.uint32(entries, Key.discardGranularity)
        discardAlignment = try XenstoreValue.uint32(entries, Key.discardAlignment)
        discardSecure = try XenstoreValue.flag(entries, Key.discardSecure, default: false)
        persistent = try XenstoreValue.flag(entries, Key.persistent, default: false)
        maxIndirectSegments = try XenstoreValue.uint32(entries, Key.maxIndirectSegments)
        maxQueues = try XenstoreValue.uint32(entries, Key.maxQueues, range: 1...UInt64(UInt32.max))
        maxRingPageOrder = try XenstoreValue.uint32(entries, Key.maxRingPageOrder) ?? 0
    }

    /// The node names.
    public enum Key {
        public static let flushCache = "feature-flush-cache"
        public static let barrier = "feature-barrier"
        public static let discard = "feature-discard"
        public static let discardGranularity = "discard-granularity"
        public static let discardAlignment = "discard-alignment"
        public static let discardSecure = "discard-secure"
        public static let persistent = "feature-persistent"
        public static let maxIndirectSegments = "feature-max-indirect-segments"
        public static let maxQueues = "multi-queue-max-queues"
        public static let maxRingPageOrder = "max-ring-page-order"
    }
}

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
            Key.persistent: flag(persistent),
            Key.largeSectorSize: flag(largeSectorSize),
            Key.ringPageOrder: String(ringPageOrder),
            Key.trusted: flag(trusted),
        ]
        if let queueCount { out[Key.queueCount] = String(queueCount) }
        return out
    }

    /// Parses the frontend's nodes (other keys in `entries` are ignored).
    public init(xenstore entries: [String: String]) throws(BlkifError) {
        abi = try BlkifABI(protocol: entries[Key.protocolName])
        persistent = try XenstoreValue.flag(entries, Key.persistent, default: false)
        largeSectorSize = try XenstoreValue.flag(entries, Key.largeSectorSize, default: false)
        // io/blkif.h: the number of queues must be greater than zero.
        queueCount = try XenstoreValue.uint32(entries, Key.queueCount, range: 1...UInt64(UInt32.max))
        ringPageOrder = try XenstoreValue.uint32(entries, Key.ringPageOrder) ?? 0
        trusted = try XenstoreValue.flag(entries, Key.trusted, default: true)
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

/// Checks the frontend's choices against what the backend offered.
extension BlkifBackendFeatures {
    /// Throws if the frontend asked for more queues or a larger ring than offered.
    public func validate(_ frontend: BlkifFrontendFeatures) throws(BlkifError) {
        if let queues = frontend.queueCount {
            let limit = 1...UInt64(maxQueues ?? 1)
            guard limit.contains(UInt64(queues)) else {
                throw .featureRange(key: BlkifFrontendFeatures.Key.queueCount, value: UInt64(queues), limit: limit)
            }
        }
        guard frontend.ringPageOrder <= maxRingPageOrder else {
            throw .featureRange(key: BlkifFrontendFeatures.Key.ringPageOrder, value: UInt64(frontend.ringPageOrder),
                                limit: 0...UInt64(maxRingPageOrder))
        }
    }
}

private func flag(_ value: Bool) -> String { value ? "1" : "0" }

/// Strict parsing of xenstore values: booleans are "0" or "1", numbers plain decimal.
enum XenstoreValue {
    static func flag(_ entries: [String: String], _ key: String, default value: Bool) throws(BlkifError) -> Bool {
        switch entries[key] {
        case nil: return value
        case "0": return false
        case "1": return true
        case let other?: throw .featureValue(key: key, value: other, expected: "0 or 1")
        }
    }

    static func uint32(_ entries: [String: String], _ key: String,
                       range: ClosedRange<UInt64> = 0...UInt64(UInt32.max)) throws(BlkifError) -> UInt32? {
        guard let text = entries[key] else { return nil }
        let value = try uint64(key, text)
        guard range.contains(value) else { throw .featureRange(key: key, value: value, limit: range) }
        return UInt32(value)
    }

    /// Plain decimal digits only: no sign, space, or radix prefix.
    static func uint64(_ key: String, _ text: String) throws(BlkifError) -> UInt64 {
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let value = UInt64(text) else {
            throw .featureValue(key: key, value: text, expected: "a decimal number")
        }
        return value
    }
}
