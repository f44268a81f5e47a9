import SharedMemory

/// A receive request: an empty page the frontend offers for a packet
/// (`io/netif.h: struct netif_rx_request`).
public struct NetifRxRequest: Sendable, Hashable {
    /// `id`: echoed in the response.
    public var id: UInt16
    /// `gref`: the granted page to fill.
    public var gref: UInt32

    @usableFromInline static let idOffset = 0
    @usableFromInline static let padOffset = 2
    @usableFromInline static let grefOffset = 4

    @inlinable
    public init(id: UInt16, gref: UInt32) {
        self.id = id
        self.gref = gref
    }

    /// Reads the request in the slot at `offset` (each field once; `pad` is not read).
    @inlinable
    public static func decode(from view: SharedView, at offset: Int) throws(NetifError) -> NetifRxRequest {
        try NetifLayout.checkSlot(view, offset, NetifLayout.rxRequestSize)
        return NetifRxRequest(id: view.load(UInt16.self, at: offset + Self.idOffset),
                              gref: view.load(UInt32.self, at: offset + Self.grefOffset))
    }

    /// Writes the request, `pad` zeroed, into the slot at `offset`.
    @inlinable
    public func encode(into view: SharedView, at offset: Int) {
        view.store(id, at: offset + Self.idOffset)
        view.store(UInt16(0), at: offset + Self.padOffset)
        view.store(gref, at: offset + Self.grefOffset)
    }
}

