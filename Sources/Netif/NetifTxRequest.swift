import SharedMemory

/// A transmit request: one fragment of a packet from the frontend
/// (`io/netif.h: struct netif_tx_request`). In the first fragment `size` is the whole
/// packet's length; in the others, the fragment's.
public struct NetifTxRequest: Sendable, Hashable {
    /// `gref`: the granted page holding the data.
    public var gref: UInt32
    /// `offset`: where the data starts in the page.
    public var offset: UInt16
    /// `flags`.
    public var flags: NetifTxFlags
    /// `id`: echoed in the response.
    public var id: UInt16
    /// `size`: bytes (see the type's note on the first fragment).
    public var size: UInt16

    @usableFromInline static let grefOffset = 0
    @usableFromInline static let offsetOffset = 4
    @usableFromInline static let flagsOffset = 6
    @usableFromInline static let idOffset = 8
    @usableFromInline static let sizeOffset = 10

    @inlinable
    public init(gref: UInt32, offset: UInt16, flags: NetifTxFlags, id: UInt16, size: UInt16) {
        self.gref = gref
        self.offset = offset
        self.flags = flags
        self.id = id
        self.size = size
    }

    /// Reads the request in the slot at `offset` (each field once); rejects flag bits
    /// `io/netif.h` does not define.
    @inlinable
    public static func decode(from view: SharedView, at offset: Int) throws(NetifError) -> NetifTxRequest {
        try NetifLayout.checkSlot(view, offset, NetifLayout.txRequestSize)
        let rawFlags = view.load(UInt16.self, at: offset + Self.flagsOffset)
        guard rawFlags & ~NetifTxFlags.known.rawValue == 0 else {
            throw .unknownFlags(field: "netif_tx_request.flags", value: rawFlags, known: NetifTxFlags.known.rawValue)
        }
        return NetifTxRequest(
            gref: view.load(UInt32.self, at: offset + Self.grefOffset),
            offset: view.load(UInt16.self, at: offset + Self.offsetOffset),
            flags: NetifTxFlags(rawValue: rawFlags),
            id: view.load(UInt16.self, at: offset + Self.idOffset),
            size: view.load(UInt16.self, at: offset + Self.sizeOffset))
    }

    /// Writes the request into the slot at `offset` (which must lie inside `view`).
    @inlinable
    public func encode(into view: SharedView, at offset: Int) {
        view.store(gref, at: offset + Self.grefOffset)
        view.store(self.offset, at: offset + Self.offsetOffset)
        view.store(flags.rawValue, at: offset + Self.flagsOffset)
        view.store(id, at: offset + Self.idOffset)
        view.store(size, at: offset + Self.sizeOffset)
    }

    /// Checks that `dataSize` bytes from ``offset`` stay inside one 4 KiB page: pass the
    /// fragment's own data length (for the first fragment, `size` minus the later ones).
    @inlinable
    public func validateFragment(dataSize: UInt16) throws(NetifError) {
        guard Int(offset) + Int(dataSize) <= pageSize else {
            throw .pageRange(offset: offset, size: dataSize, limit: pageSize)
        }
    }
}

