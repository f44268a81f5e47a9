import SharedMemory

/// A control-ring request type (`io/netif.h: XEN_NETIF_CTRL_TYPE_*`).
public enum NetifCtrlType: UInt16, Sendable, Hashable, CaseIterable {
    /// `XEN_NETIF_CTRL_TYPE_INVALID`: never a valid request.
    case invalid = 0
    /// `XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS`: the hash types the backend can calculate.
    case getHashFlags = 1
    /// `XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS`: the hash types to calculate.
    case setHashFlags = 2
    /// `XEN_NETIF_CTRL_TYPE_SET_HASH_KEY`: the key, from a granted page.
    case setHashKey = 3
    /// `XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE`: the largest mapping table served.
    case getHashMappingSize = 4
    /// `XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE`: the table's size (zero-filled anew).
    case setHashMappingSize = 5
    /// `XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING`: a (sub-)table of queue numbers, from a granted page.
    case setHashMapping = 6
    /// `XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM`: none or Toeplitz.
    case setHashAlgorithm = 7
    /// `XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE`: how many static grants stay mapped.
    case getGrefMappingSize = 8
    /// `XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING`: map a list of static grants.
    case addGrefMapping = 9
    /// `XEN_NETIF_CTRL_TYPE_DEL_GREF_MAPPING`: unmap a list of static grants.
    case delGrefMapping = 10
}

/// A control-ring response status (`io/netif.h: XEN_NETIF_CTRL_STATUS_*`).
public enum NetifCtrlStatus: UInt32, Sendable, Hashable, CaseIterable {
    /// `XEN_NETIF_CTRL_STATUS_SUCCESS`.
    case success = 0
    /// `XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED`: the type is unknown or not served (now).
    case notSupported = 1
    /// `XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER`: a value in the request (or in the page
    /// it grants) is out of range.
    case invalidParameter = 2
    /// `XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW`: more data than the backend keeps.
    case bufferOverflow = 3
}

/// A control-ring request (`io/netif.h: struct xen_netif_ctrl_request`, 16 bytes): an
/// id echoed in the response, a type and three words whose meaning the type gives. The
/// type is kept raw: an unknown one is answered NOT_SUPPORTED, not refused.
public struct NetifCtrlRequest: Sendable, Hashable {
    /// `id`.
    public var id: UInt16
    /// `type`, as written (see ``kind``).
    public var type: UInt16
    /// `data[0]`, `data[1]`, `data[2]`.
    public var data: (UInt32, UInt32, UInt32)

    @usableFromInline static let idOffset = 0
    @usableFromInline static let typeOffset = 2
    @usableFromInline static let dataOffset = 4

    /// A request of any raw `type` (an unknown one included).
    public init(id: UInt16, type: UInt16, data: (UInt32, UInt32, UInt32) = (0, 0, 0)) {
        self.id = id
        self.type = type
        self.data = data
    }

    /// A request of a type io/netif.h defines.
    public init(id: UInt16, _ kind: NetifCtrlType, data: (UInt32, UInt32, UInt32) = (0, 0, 0)) {
        self.init(id: id, type: kind.rawValue, data: data)
    }

    /// The type, if it is one `io/netif.h` defines.
    public var kind: NetifCtrlType? { NetifCtrlType(rawValue: type) }

    /// Reads the request at `offset`, each field once. Any bit pattern is a request (its
    /// type is judged when answered); only a slot outside `view` throws.
    @inlinable
    public static func decode(from view: SharedView, at offset: Int) throws(NetifError) -> NetifCtrlRequest {
        try NetifLayout.checkSlot(view, offset, NetifLayout.ctrlRequestSize)
        return NetifCtrlRequest(
            id: view.load(UInt16.self, at: offset + idOffset), type: view.load(UInt16.self, at: offset + typeOffset),
            data: (view.load(UInt32.self, at: offset + dataOffset), view.load(UInt32.self, at: offset + dataOffset + 4),
                   view.load(UInt32.self, at: offset + dataOffset + 8)))
    }

    /// Writes the 16 bytes at `offset` (inside `view`).
    @inlinable
    public func encode(into view: SharedView, at offset: Int) {
        view.store(id, at: offset + Self.idOffset)
        view.store(type, at: offset + Self.typeOffset)
        view.store(data.0, at: offset + Self.dataOffset)
        view.store(data.1, at: offset + Self.dataOffset + 4)
        view.store(data.2, at: offset + Self.dataOffset + 8)
    }

    public static func == (a: NetifCtrlRequest, b: NetifCtrlRequest) -> Bool {
        a.id == b.id && a.type == b.type && a.data == b.data
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(id)
        hasher.combine(type)
        hasher.combine(data.0)
        hasher.combine(data.1)
        hasher.combine(data.2)
    }
}

/// A control-ring response (`io/netif.h: struct xen_netif_ctrl_response`, 12 bytes):
/// the request's id and type, a status and one word of data.
public struct NetifCtrlResponse: Sendable, Hashable {
    /// `id`: the request's.
    public var id: UInt16
    /// `type`: the request's, as it wrote it.
    public var type: UInt16
    /// `status`.
    public var status: NetifCtrlStatus
    /// `data`: what the type returns on success, else 0.
    public var data: UInt32

    @usableFromInline static let idOffset = 0
    @usableFromInline static let typeOffset = 2
    @usableFromInline static let statusOffset = 4
    @usableFromInline static let dataOffset = 8

    /// A response with every field given.
    public init(id: UInt16, type: UInt16, status: NetifCtrlStatus, data: UInt32 = 0) {
        self.id = id
        self.type = type
        self.status = status
        self.data = data
    }

    /// The answer to `request` with `status` and `data`.
    public init(answering request: NetifCtrlRequest, _ status: NetifCtrlStatus, data: UInt32 = 0) {
        self.init(id: request.id, type: request.type, status: status, data: data)
    }

    /// Reads the response at `offset`; a status that is not a XEN_NETIF_CTRL_STATUS_* throws.
    @inlinable
    public static func decode(from view: SharedView, at offset: Int) throws(NetifError) -> NetifCtrlResponse {
        try NetifLayout.checkSlot(view, offset, NetifLayout.ctrlResponseSize)
        let raw = view.load(UInt32.self, at: offset + statusOffset)
        guard let status = NetifCtrlStatus(rawValue: raw) else { throw .unknownCtrlStatus(raw) }
        return NetifCtrlResponse(id: view.load(UInt16.self, at: offset + idOffset),
                                 type: view.load(UInt16.self, at: offset + typeOffset), status: status,
                                 data: view.load(UInt32.self, at: offset + dataOffset))
    }

    /// Writes the 12 bytes at `offset` (inside `view`).
    @inlinable
    public func encode(into view: SharedView, at offset: Int) {
        view.store(id, at: offset + Self.idOffset)
        view.store(type, at: offset + Self.typeOffset)
        view.store(status.rawValue, at: offset + Self.statusOffset)
        view.store(data, at: offset + Self.dataOffset)
    }
}
