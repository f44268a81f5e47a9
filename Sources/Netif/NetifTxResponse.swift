import SharedMemory

/// A transmit response (`io/netif.h: struct netif_tx_response`).
public struct NetifTxResponse: Sendable, Hashable {
    /// `id`: the request's.
    public var id: UInt16
    /// `status`.
    public var status: NetifStatus

    @usableFromInline static let idOffset = 0
    @usableFromInline static let statusOffset = 2

    @inlinable
    public init(id: UInt16, status: NetifStatus) {
        self.id = id
        self.status = status
    }

    /// Reads and validates the response in the slot at `offset`.
    @inlinable
    public static func decode(from view: SharedView, at offset: Int) throws(NetifError) -> NetifTxResponse {
        try NetifLayout.checkSlot(view, offset, NetifLayout.txResponseSize)
        let id = view.load(UInt16.self, at: offset + Self.idOffset)
        let status = try NetifStatus(validating: view.load(Int16.self, at: offset + Self.statusOffset))
        return NetifTxResponse(id: id, status: status)
    }

    /// Writes the response into the slot at `offset` (which must lie inside `view`).
    @inlinable
    public func encode(into view: SharedView, at offset: Int) {
        view.store(id, at: offset + Self.idOffset)
        view.store(status.rawValue, at: offset + Self.statusOffset)
    }
}
