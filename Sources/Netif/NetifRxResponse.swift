import SharedMemory

/// A receive response: one fragment of a packet for the frontend
/// (`io/netif.h: struct netif_rx_response`).
public struct NetifRxResponse: Sendable, Hashable {
    /// `id`: the request's.
    public var id: UInt16
    /// `offset`: where the data starts in the page.
    public var offset: UInt16
    /// `flags`.
    public var flags: NetifRxFlags
    /// `status`: bytes received when >= 0, else a negative NETIF_RSP_* code.
    public var status: Int16

    @usableFromInline static let idOffset = 0
    @usableFromInline static let offsetOffset = 2
    @usableFromInline static let flagsOffset = 4
    @usableFromInline static let statusOffset = 6

    @inlinable
    public init(id: UInt16, offset: UInt16, flags: NetifRxFlags, status: Int16) {
        self.id = id
        self.offset = offset
        self.flags = flags
        self.status = status
    }

    /// A successful fragment of `size` bytes.
    @inlinable
    public init(id: UInt16, offset: UInt16, flags: NetifRxFlags, size: UInt16) {
        self.init(id: id, offset: offset, flags: flags, status: Int16(truncatingIfNeeded: size))
    }

    /// The fragment's length, or nil for an error status.
    @inlinable
    public var size: Int? { status >= 0 ? Int(status) : nil }

    /// The error, or nil for a fragment.
    @inlinable
    public var error: NetifStatus? { status < 0 ? NetifStatus(rawValue: status) : nil }

    /// Reads and validates the response in the slot at `offset` (each field once): flag
    /// bits must be defined, a negative status must be a NETIF_RSP_* code, and
    /// `offset + size` must stay inside the page.
    @inlinable
    public static func decode(from view: SharedView, at offset: Int) throws(NetifError) -> NetifRxResponse {
        try NetifLayout.checkSlot(view, offset, NetifLayout.rxResponseSize)
        let id = view.load(UInt16.self, at: offset + Self.idOffset)
        let pageOffset = view.load(UInt16.self, at: offset + Self.offsetOffset)
        let rawFlags = view.load(UInt16.self, at: offset + Self.flagsOffset)
        let status = view.load(Int16.self, at: offset + Self.statusOffset)
        guard rawFlags & ~NetifRxFlags.known.rawValue == 0 else {
            throw .unknownFlags(field: "netif_rx_response.flags", value: rawFlags, known: NetifRxFlags.known.rawValue)
        }
        if status < 0 {
            guard NetifStatus(rawValue: status) != nil else { throw .unknownStatus(status) }
        } else {
            guard Int(pageOffset) + Int(status) <= pageSize else {
                throw .pageRange(offset: pageOffset, size: UInt16(status), limit: pageSize)
            }
        }
        return NetifRxResponse(id: id, offset: pageOffset, flags: NetifRxFlags(rawValue: rawFlags), status: status)
    }

    /// Writes the response into the slot at `offset` (which must lie inside `view`).
    @inlinable
    public func encode(into view: SharedView, at offset: Int) {
        view.store(id, at: offset + Self.idOffset)
        view.store(self.offset, at: offset + Self.offsetOffset)
        view.store(flags.rawValue, at: offset + Self.flagsOffset)
        view.store(status, at: offset + Self.statusOffset)
    }
}
