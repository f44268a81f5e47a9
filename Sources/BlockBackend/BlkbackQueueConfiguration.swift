import Blkif

/// The limits of one ring queue: what the backend advertised to the frontend and how much
/// it preallocates. The device layer fills these from the negotiated xenstore values.
public struct BlkbackQueueConfiguration: Sendable {
    /// The frontend's ABI (its `protocol` node).
    public var abi: BlkifABI
    /// The `feature-max-indirect-segments` advertised (0: no indirect requests). At most
    /// ``BlkifIndirectPage/maxSegments``.
    public var maxIndirectSegments: Int
    /// Requests in flight at once; each owns preallocated copy-buffer pages for its
    /// largest possible transfer. When all are busy the queue stops taking requests and
    /// leaves the rest in the ring.
    public var slots: Int
    /// Refuse writes, barriers with data and discards even if the store is writable.
    public var readOnly: Bool
    /// Honour BLKIF_OP_DISCARD (only if the store supports it too).
    public var discard: Bool

    public init(abi: BlkifABI = .native, maxIndirectSegments: Int = 32, slots: Int = 32,
                readOnly: Bool = false, discard: Bool = true) {
        self.abi = abi
        self.maxIndirectSegments = maxIndirectSegments
        self.slots = slots
        self.readOnly = readOnly
        self.discard = discard
    }

    /// Segments one request may carry: the direct maximum or the indirect maximum.
    var segmentsPerRequest: Int { max(BlkifSegments.capacity, maxIndirectSegments) }

    func validate() throws(BlockBackendError) {
        guard (0...BlkifIndirectPage.maxSegments).contains(maxIndirectSegments) else {
            throw .configuration(name: "maxIndirectSegments", value: maxIndirectSegments,
                                 limit: 0...BlkifIndirectPage.maxSegments)
        }
        guard (1...4096).contains(slots) else {
            throw .configuration(name: "slots", value: slots, limit: 1...4096)
        }
    }
}
