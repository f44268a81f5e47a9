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
    /// Keep the frontend's data and indirect pages mapped between requests and move data
    /// by memcpy (`io/blkif.h`: feature-persistent), instead of a grant copy per request.
    /// Set only when both ends advertised feature-persistent: the backend then may map
    /// every grant writable. Off by default here because a queue built without that
    /// negotiation has no such promise; the device layer sets it from
    /// ``BlkbackDeviceLimits/persistentGrants`` and the frontend's key.
    public var persistentGrants: Bool
    /// The most pages kept mapped per queue when ``persistentGrants`` is on; past it the
    /// least recently used idle page is unmapped (Linux blkback's default is 1056 per ring).
    public var persistentGrantsPerQueue: Int

    /// Linux blkback's default bound on persistently mapped pages per ring (max_pgrants).
    public static let defaultPersistentGrantsPerQueue = 1056

    public init(abi: BlkifABI = .native, maxIndirectSegments: Int = 32, slots: Int = 32,
                readOnly: Bool = false, discard: Bool = true, persistentGrants: Bool = false,
                persistentGrantsPerQueue: Int = BlkbackQueueConfiguration.defaultPersistentGrantsPerQueue) {
        self.abi = abi
        self.maxIndirectSegments = maxIndirectSegments
        self.slots = slots
        self.readOnly = readOnly
        self.discard = discard
        self.persistentGrants = persistentGrants
        self.persistentGrantsPerQueue = persistentGrantsPerQueue
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
        guard (1...65536).contains(persistentGrantsPerQueue) else {
            throw .configuration(name: "persistentGrantsPerQueue", value: persistentGrantsPerQueue, limit: 1...65536)
        }
    }
}
