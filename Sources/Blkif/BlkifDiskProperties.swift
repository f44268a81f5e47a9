/// The properties of the virtual disk a block backend publishes when it connects
/// (`io/blkif.h`, "Backend Device Properties"), as values.
public struct BlkifDiskProperties: Sendable, Hashable {
    /// `sectors`: the disk size in 512-byte units, whatever ``sectorSize`` is. Xen 4.17's
    /// io/blkif.h says units of `sector-size`, but Linux's blkback and blkfront have always
    /// used 512-byte units, and Xen's header has since been corrected to say so; the two
    /// readings differ only for disks of sectors larger than 512 bytes.
    public var sectors512: UInt64
    /// `sector-size`: the logical block size in bytes, a power of two of at least 512.
    public var sectorSize: UInt32
    /// `physical-sector-size`: the physical block size in bytes, a multiple of
    /// ``sectorSize`` (absent: equal to it).
    public var physicalSectorSize: UInt32?
    /// `info`: VDISK_* bits.
    public var info: BlkifDiskInfo

    /// A disk of `sectors512` 512-byte units, with logical blocks of `sectorSize` bytes.
    public init(sectors512: UInt64, sectorSize: UInt32 = 512, physicalSectorSize: UInt32? = nil,
                info: BlkifDiskInfo = []) {
        self.sectors512 = sectors512
        self.sectorSize = sectorSize
        self.physicalSectorSize = physicalSectorSize
        self.info = info
    }

    /// The node names.
    public enum Key {
        public static let sectors = "sectors"
        public static let sectorSize = "sector-size"
        public static let physicalSectorSize = "physical-sector-size"
        public static let info = "info"
    }

    /// The nodes the backend writes.
    public var xenstoreEntries: [String: String] {
        var out = [
            Key.sectors: String(sectors512),
            Key.sectorSize: String(sectorSize),
            Key.info: String(info.rawValue),
        ]
        if let physicalSectorSize { out[Key.physicalSectorSize] = String(physicalSectorSize) }
        return out
    }

    /// Parses the backend's nodes. `sectors` and `sector-size` are required; `info`
    /// defaults to no bits.
    public init(xenstore entries: [String: String]) throws(BlkifError) {
        guard let sectorsText = entries[Key.sectors] else {
            throw .featureValue(key: Key.sectors, value: "", expected: "a decimal number (the node is required)")
        }
        sectors512 = try BlkifXenstoreValue.uint64(Key.sectors, sectorsText)
        guard let size = try BlkifXenstoreValue.uint32(entries, Key.sectorSize) else {
            throw .featureValue(key: Key.sectorSize, value: "", expected: "a decimal number (the node is required)")
        }
        guard size >= 512, size & (size - 1) == 0 else {
            throw .featureValue(key: Key.sectorSize, value: String(size), expected: "a power of two >= 512")
        }
        sectorSize = size
        physicalSectorSize = try BlkifXenstoreValue.uint32(entries, Key.physicalSectorSize)
        if let physical = physicalSectorSize, physical == 0 || physical % size != 0 {
            throw .featureValue(key: Key.physicalSectorSize, value: String(physical),
                                expected: "a multiple of sector-size \(size)")
        }
        info = BlkifDiskInfo(rawValue: try BlkifXenstoreValue.uint32(entries, Key.info) ?? 0)
    }
}

/// Bits of the backend's `info` node (`io/blkif.h: VDISK_*`).
public struct BlkifDiskInfo: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// `io/blkif.h: VDISK_CDROM`.
    public static let cdrom = BlkifDiskInfo(rawValue: 0x1)
    /// `io/blkif.h: VDISK_REMOVABLE`.
    public static let removable = BlkifDiskInfo(rawValue: 0x2)
    /// `io/blkif.h: VDISK_READONLY`.
    public static let readOnly = BlkifDiskInfo(rawValue: 0x4)
}
