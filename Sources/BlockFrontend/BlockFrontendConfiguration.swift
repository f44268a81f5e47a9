import Blkif

/// What a ``BlockFrontend`` asks for; each is capped by what the backend advertises.
public struct BlockFrontendConfiguration: Sendable {
    /// Largest `ring-page-order` to use (nil: the backend's `max-ring-page-order`, at most 4).
    public var maxRingPageOrder: UInt32?
    /// Rings to use (`multi-queue-num-queues`), capped by `multi-queue-max-queues`.
    public var queues: UInt32
    /// Largest indirect request in segments (0: never use BLKIF_OP_INDIRECT), capped by
    /// the backend's `feature-max-indirect-segments`.
    public var maxIndirectSegments: Int
    /// Requests in flight at once over all rings: each owns persistently granted data
    /// pages for its largest transfer. Capped by the rings' total size.
    public var depth: Int
    /// Advertise `feature-persistent` (the data pages are granted once per connection
    /// and copied into and out of, which is right for any backend either way).
    public var persistent: Bool
    /// The ring layout to speak, published as the `protocol` node (`io/blkif.h`,
    /// `io/protocols.h`): ``BlkifABI/native`` writes this host's name for it, `.x86_32`
    /// "x86_32-abi" (the layout of a 32-bit x86 guest), `.x86_64` "x86_64-abi".
    public var abi: BlkifABI

    public init(maxRingPageOrder: UInt32? = nil, queues: UInt32 = 1, maxIndirectSegments: Int = 32,
                depth: Int = 32, persistent: Bool = true, abi: BlkifABI = .native) {
        self.maxRingPageOrder = maxRingPageOrder
        self.queues = queues
        self.maxIndirectSegments = maxIndirectSegments
        self.depth = depth
        self.persistent = persistent
        self.abi = abi
    }

    func validate() throws(BlockFrontendError) {
        guard (1...16).contains(Int(queues)) else {
            throw .configuration(name: "queues", value: Int(queues), limit: 1...16)
        }
        guard (0...BlkifIndirectPage.maxSegments).contains(maxIndirectSegments) else {
            throw .configuration(name: "maxIndirectSegments", value: maxIndirectSegments,
                                 limit: 0...BlkifIndirectPage.maxSegments)
        }
        guard (1...1024).contains(depth) else {
            throw .configuration(name: "depth", value: depth, limit: 1...1024)
        }
        if let order = maxRingPageOrder, order > 4 {
            throw .configuration(name: "maxRingPageOrder", value: Int(order), limit: 0...4)
        }
    }
}

/// The disk as the backend described it, and what this connection negotiated.
public struct BlockFrontendDisk: Sendable, Hashable {
    /// `sectors`, `sector-size`, `info`.
    public var properties: BlkifDiskProperties
    /// The backend's feature nodes.
    public var backend: BlkifBackendFeatures
    /// `ring-page-order` in use.
    public var ringPageOrder: UInt32
    /// Rings in use.
    public var queues: Int
    /// Segments per request: 11, or the indirect maximum in use.
    public var segmentsPerRequest: Int
    /// Requests in flight at once.
    public var depth: Int

    /// The disk size in 512-byte sectors (the unit of this API).
    public var sectors512: UInt64 { properties.sectors512 }
    /// VDISK_READONLY or VDISK_CDROM: writes, flushes and discards are refused.
    public var readOnly: Bool { properties.info.contains(.readOnly) || properties.info.contains(.cdrom) }
}
