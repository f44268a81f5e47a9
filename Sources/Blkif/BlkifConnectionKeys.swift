/// The rings a blkif frontend publishes for the backend to connect to (io/blkif.h,
/// "Frontend XenBus Nodes"): per queue, its ring's grant references and its event
/// channel. One queue keeps them at the top level (as Linux's blkfront and blkback do even
/// when `multi-queue-num-queues` is written); several keep each under `queue-N/`. A
/// one-page ring is `ring-ref` (`ring-ref0` is accepted too, as Linux does); a larger one
/// is `ring-ref0` .. `ring-ref<pages-1>`. The one place these names are read and written.
public struct BlkifConnectionKeys: Sendable, Hashable {
    /// One ring.
    public struct Queue: Sendable, Hashable {
        /// The ring's grant references, in page order.
        public var ringRefs: [UInt32]
        /// The frontend's port, for the backend to bind.
        public var eventChannel: UInt32

        public init(ringRefs: [UInt32], eventChannel: UInt32) {
            self.ringRefs = ringRefs
            self.eventChannel = eventChannel
        }
    }

    /// log2 of the pages per ring (`ring-page-order`, a frontend feature).
    public var ringPageOrder: UInt32
    /// The rings, queue 0 first.
    public var queues: [Queue]

    public init(ringPageOrder: UInt32, queues: [Queue]) {
        self.ringPageOrder = ringPageOrder
        self.queues = queues
    }

    /// The node names.
    public enum Key {
        public static let ringRef = "ring-ref"
        public static let eventChannel = "event-channel"
        /// `ring-ref<page>`.
        public static func ringRef(page: Int) -> String { "ring-ref\(page)" }
        /// The directory of queue `index` when there are several.
        public static func queue(_ index: Int) -> String { "queue-\(index)" }
    }

    /// The prefix of queue `index`'s keys among `count` queues ("" or "queue-N/").
    static func prefix(_ index: Int, of count: Int) -> String { count > 1 ? Key.queue(index) + "/" : "" }

    /// The nodes to write, relative to the frontend's directory.
    public var xenstoreEntries: [String: String] {
        var out: [String: String] = [:]
        for (index, queue) in queues.enumerated() {
            let prefix = Self.prefix(index, of: queues.count)
            if ringPageOrder == 0, queue.ringRefs.count == 1 {
                out[prefix + Key.ringRef] = String(queue.ringRefs[0])
            } else {
                for (page, ref) in queue.ringRefs.enumerated() { out[prefix + Key.ringRef(page: page)] = String(ref) }
            }
            out[prefix + Key.eventChannel] = String(queue.eventChannel)
        }
        return out
    }

    /// Every node ``init(xenstore:ringPageOrder:queueCount:)`` may look at for this geometry,
    /// so a reader can fetch them before parsing.
    public static func keys(ringPageOrder: UInt32, queueCount: Int) -> [String] {
        let pages = 1 << Int(min(ringPageOrder, 31))
        var out: [String] = []
        for index in 0..<max(queueCount, 1) {
            let prefix = prefix(index, of: queueCount)
            if ringPageOrder == 0 { out.append(prefix + Key.ringRef) }
            for page in 0..<min(pages, 1 << 16) { out.append(prefix + Key.ringRef(page: page)) }
            out.append(prefix + Key.eventChannel)
        }
        return out
    }

    /// Parses the frontend's nodes for `queueCount` queues of 2^`ringPageOrder` pages (both
    /// already checked against what the backend offered). `entries` holds the nodes read,
    /// relative to the frontend's directory; absent ones are simply not there.
    public init(xenstore entries: [String: String], ringPageOrder: UInt32, queueCount: Int) throws(BlkifError) {
        guard ringPageOrder <= 16 else {
            throw .featureRange(key: BlkifFrontendFeatures.Key.ringPageOrder, value: UInt64(ringPageOrder), limit: 0...16)
        }
        guard queueCount >= 1 else {
            throw .featureRange(key: BlkifFrontendFeatures.Key.queueCount, value: UInt64(queueCount),
                                limit: 1...UInt64(UInt32.max))
        }
        let pages = 1 << Int(ringPageOrder)
        var queues: [Queue] = []
        for index in 0..<queueCount {
            let prefix = Self.prefix(index, of: queueCount)
            var refs: [UInt32] = []
            if ringPageOrder == 0, let ref = try BlkifXenstoreValue.uint32(entries, prefix + Key.ringRef) {
                refs.append(ref)
            } else {
                for page in 0..<pages { refs.append(try Self.required(entries, prefix + Key.ringRef(page: page))) }
            }
            queues.append(Queue(ringRefs: refs, eventChannel: try Self.required(entries, prefix + Key.eventChannel)))
        }
        self.init(ringPageOrder: ringPageOrder, queues: queues)
    }

    static func required(_ entries: [String: String], _ key: String) throws(BlkifError) -> UInt32 {
        guard let value = try BlkifXenstoreValue.uint32(entries, key) else { throw .missingKey(key) }
        return value
    }
}
