/// The rings a netif frontend publishes for the backend to connect to (io/netif.h,
/// "Frontend XenBus Nodes"): per queue pair a tx and an rx ring reference and either one
/// event channel or, with `feature-split-event-channels`, one for tx and one for rx; and,
/// with `feature-ctrl-ring`, the control ring's reference and event channel. One queue
/// pair keeps its keys at the top level; several keep each pair's under `queue-N/`. The
/// one place these names are read and written.
public struct NetifConnectionKeys: Sendable, Hashable {
    /// How a queue pair is notified.
    public enum EventChannels: Sendable, Hashable {
        /// `event-channel`: one port for both rings.
        case shared(UInt32)
        /// `event-channel-tx` and `event-channel-rx`.
        case split(tx: UInt32, rx: UInt32)
    }

    /// One queue pair.
    public struct Queue: Sendable, Hashable {
        /// `tx-ring-ref`: the one-page tx ring.
        public var txRingRef: UInt32
        /// `rx-ring-ref`: the one-page rx ring.
        public var rxRingRef: UInt32
        public var eventChannels: EventChannels

        public init(txRingRef: UInt32, rxRingRef: UInt32, eventChannels: EventChannels) {
            self.txRingRef = txRingRef
            self.rxRingRef = rxRingRef
            self.eventChannels = eventChannels
        }
    }

    /// The control ring (`ctrl-ring-ref`, `event-channel-ctrl`).
    public struct Control: Sendable, Hashable {
        public var ringRef: UInt32
        public var eventChannel: UInt32

        public init(ringRef: UInt32, eventChannel: UInt32) {
            self.ringRef = ringRef
            self.eventChannel = eventChannel
        }
    }

    /// The queue pairs, queue 0 first.
    public var queues: [Queue]
    /// The control ring, if the frontend set one up.
    public var control: Control?

    public init(queues: [Queue], control: Control? = nil) {
        self.queues = queues
        self.control = control
    }

    /// The node names.
    public enum Key {
        public static let txRingRef = "tx-ring-ref"
        public static let rxRingRef = "rx-ring-ref"
        public static let eventChannel = "event-channel"
        public static let eventChannelTx = "event-channel-tx"
        public static let eventChannelRx = "event-channel-rx"
        public static let ctrlRingRef = "ctrl-ring-ref"
        public static let eventChannelCtrl = "event-channel-ctrl"
        /// The directory of queue pair `index` when there are several.
        public static func queue(_ index: Int) -> String { "queue-\(index)" }
    }

    static func prefix(_ index: Int, of count: Int) -> String { count > 1 ? Key.queue(index) + "/" : "" }

    /// The nodes to write, relative to the frontend's directory.
    public var xenstoreEntries: [String: String] {
        var out: [String: String] = [:]
        for (index, queue) in queues.enumerated() {
            let prefix = Self.prefix(index, of: queues.count)
            out[prefix + Key.txRingRef] = String(queue.txRingRef)
            out[prefix + Key.rxRingRef] = String(queue.rxRingRef)
            switch queue.eventChannels {
            case let .shared(port):
                out[prefix + Key.eventChannel] = String(port)
            case let .split(tx, rx):
                out[prefix + Key.eventChannelTx] = String(tx)
                out[prefix + Key.eventChannelRx] = String(rx)
            }
        }
        if let control {
            out[Key.ctrlRingRef] = String(control.ringRef)
            out[Key.eventChannelCtrl] = String(control.eventChannel)
        }
        return out
    }

    /// The `queue-N` directory nodes of several queue pairs, queue 0 first (none for one
    /// pair): a frontend writes each, empty, before the keys under it (io/netif.h's example
    /// does), so removing the directory takes that queue's keys with it.
    public var queueDirectories: [String] {
        queues.count > 1 ? queues.indices.map(Key.queue) : []
    }

    /// Every node ``init(xenstore:queueCount:splitEventChannels:controlRing:)`` may look at.
    public static func keys(queueCount: Int) -> [String] {
        var out: [String] = []
        for index in 0..<max(queueCount, 1) {
            let prefix = prefix(index, of: queueCount)
            out += [Key.txRingRef, Key.rxRingRef, Key.eventChannel, Key.eventChannelTx, Key.eventChannelRx]
                .map { prefix + $0 }
        }
        return out + [Key.ctrlRingRef, Key.eventChannelCtrl]
    }

    /// Parses the frontend's nodes for `queueCount` queue pairs. Split event channels are
    /// taken when both `event-channel-tx` and `-rx` are there and the backend offered them
    /// (`splitEventChannels`), else `event-channel` is required, as Linux's netback reads
    /// them; the control ring is read only if the backend offered it (`controlRing`), and
    /// then both its nodes or neither must be there.
    public init(xenstore entries: [String: String], queueCount: Int, splitEventChannels: Bool,
                controlRing: Bool) throws(NetifError) {
        guard queueCount >= 1 else {
            throw .featureRange(key: NetifFrontendFeatures.Key.queueCount, value: UInt64(queueCount),
                                limit: 1...UInt64(UInt32.max))
        }
        var queues: [Queue] = []
        for index in 0..<queueCount {
            let prefix = Self.prefix(index, of: queueCount)
            let tx = try Self.required(entries, prefix + Key.txRingRef)
            let rx = try Self.required(entries, prefix + Key.rxRingRef)
            let channels: EventChannels
            if splitEventChannels, let txPort = try Self.optional(entries, prefix + Key.eventChannelTx),
               let rxPort = try Self.optional(entries, prefix + Key.eventChannelRx) {
                channels = .split(tx: txPort, rx: rxPort)
            } else {
                channels = .shared(try Self.required(entries, prefix + Key.eventChannel))
            }
            queues.append(Queue(txRingRef: tx, rxRingRef: rx, eventChannels: channels))
        }
        var control: Control?
        if controlRing {
            let ref = try Self.optional(entries, Key.ctrlRingRef)
            let port = try Self.optional(entries, Key.eventChannelCtrl)
            switch (ref, port) {
            case let (ref?, port?): control = Control(ringRef: ref, eventChannel: port)
            case (nil, nil): control = nil
            case (nil, _?): throw .missingKey(Key.ctrlRingRef)
            case (_?, nil): throw .missingKey(Key.eventChannelCtrl)
            }
        }
        self.init(queues: queues, control: control)
    }

    static func optional(_ entries: [String: String], _ key: String) throws(NetifError) -> UInt32? {
        try NetifXenstoreValue.uint32(entries, key, range: 0...UInt64(UInt32.max))
    }

    static func required(_ entries: [String: String], _ key: String) throws(NetifError) -> UInt32 {
        guard let value = try optional(entries, key) else { throw .missingKey(key) }
        return value
    }
}
