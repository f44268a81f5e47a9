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
    /// `multi-queue-max-queues`: the most rings the backend serves (absent: one). A 0
    /// offers no multi-queue: no queue count can be asked for under it, so the frontend
    /// uses one ring with the top-level keys, as with the node absent; it parses as nil.
    public var maxQueues: UInt32?
    /// `max-ring-page-order`: log2 of the largest ring the backend maps.
    public var maxRingPageOrder: UInt32 = 0

    /// All defaults: no optional features, one single-page ring.
    public init() {}

    /// The nodes this backend writes, keyed by node name.
    public var xenstoreEntries: [String: String] {
        var out: [String: String] = [
            Key.flushCache: BlkifXenstoreValue.text(flushCache),
            Key.barrier: BlkifXenstoreValue.text(barrier),
            Key.discard: BlkifXenstoreValue.text(discard),
            Key.discardSecure: BlkifXenstoreValue.text(discardSecure),
            Key.persistent: BlkifXenstoreValue.text(persistent),
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
        flushCache = try BlkifXenstoreValue.flag(entries, Key.flushCache, default: false)
        barrier = try BlkifXenstoreValue.flag(entries, Key.barrier, default: false)
        discard = try BlkifXenstoreValue.flag(entries, Key.discard, default: false)
        discardGranularity = try BlkifXenstoreValue.uint32(entries, Key.discardGranularity)
        discardAlignment = try BlkifXenstoreValue.uint32(entries, Key.discardAlignment)
        discardSecure = try BlkifXenstoreValue.flag(entries, Key.discardSecure, default: false)
        persistent = try BlkifXenstoreValue.flag(entries, Key.persistent, default: false)
        maxIndirectSegments = try BlkifXenstoreValue.uint32(entries, Key.maxIndirectSegments)
        maxQueues = try BlkifXenstoreValue.uint32(entries, Key.maxQueues).flatMap { $0 == 0 ? nil : $0 }
        maxRingPageOrder = try BlkifXenstoreValue.uint32(entries, Key.maxRingPageOrder) ?? 0
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
