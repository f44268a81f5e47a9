import XenRing
import SharedMemory

/// Byte offsets and sizes of the `io/netif.h` ring structs. They hold only 8-, 16- and
/// 32-bit fields at natural offsets, so one layout serves x86_32 and x86_64 alike.
public enum NetifLayout {
    /// `sizeof(union netif_tx_sring_entry)`: the larger of tx request and response.
    public static let txSlotSize = 12
    /// `sizeof(union netif_rx_sring_entry)`: the larger of rx request and response.
    public static let rxSlotSize = 8
    /// `sizeof(struct netif_tx_request)`.
    public static let txRequestSize = 12
    /// `sizeof(struct netif_tx_response)`.
    public static let txResponseSize = 4
    /// `sizeof(struct netif_rx_request)`.
    public static let rxRequestSize = 8
    /// `sizeof(struct netif_rx_response)`.
    public static let rxResponseSize = 8
    /// `sizeof(struct netif_extra_info)`: fits both a tx and an rx slot.
    public static let extraInfoSize = 8
    /// `sizeof(struct xen_netif_ctrl_request)`.
    public static let ctrlRequestSize = 16
    /// `sizeof(struct xen_netif_ctrl_response)`.
    public static let ctrlResponseSize = 12
    /// `sizeof(union xen_netif_ctrl_sring_entry)`: the larger of the two.
    public static let ctrlSlotSize = 16

    /// One row of the layout table (struct, field, offset, size).
    public typealias Field = WireField

    /// Every field the encoders and decoders use, named as in `io/netif.h`, for checks
    /// against Protocols/netif-layout.tsv and the C compiler.
    public static let fields: [Field] = [
        Field("netif_tx_request", "gref", NetifTxRequest.grefOffset, 4),
        Field("netif_tx_request", "offset", NetifTxRequest.offsetOffset, 2),
        Field("netif_tx_request", "flags", NetifTxRequest.flagsOffset, 2),
        Field("netif_tx_request", "id", NetifTxRequest.idOffset, 2),
        Field("netif_tx_request", "size", NetifTxRequest.sizeOffset, 2),
        Field("netif_tx_request", "sizeof", 0, txRequestSize),
        Field("netif_tx_response", "id", NetifTxResponse.idOffset, 2),
        Field("netif_tx_response", "status", NetifTxResponse.statusOffset, 2),
        Field("netif_tx_response", "sizeof", 0, txResponseSize),
        Field("netif_rx_request", "id", NetifRxRequest.idOffset, 2),
        Field("netif_rx_request", "pad", NetifRxRequest.padOffset, 2),
        Field("netif_rx_request", "gref", NetifRxRequest.grefOffset, 4),
        Field("netif_rx_request", "sizeof", 0, rxRequestSize),
        Field("netif_rx_response", "id", NetifRxResponse.idOffset, 2),
        Field("netif_rx_response", "offset", NetifRxResponse.offsetOffset, 2),
        Field("netif_rx_response", "flags", NetifRxResponse.flagsOffset, 2),
        Field("netif_rx_response", "status", NetifRxResponse.statusOffset, 2),
        Field("netif_rx_response", "sizeof", 0, rxResponseSize),
        Field("netif_extra_info", "type", NetifExtraInfo.typeOffset, 1),
        Field("netif_extra_info", "flags", NetifExtraInfo.flagsOffset, 1),
        Field("netif_extra_info", "u.gso.size", NetifExtraInfo.gsoSizeOffset, 2),
        Field("netif_extra_info", "u.gso.type", NetifExtraInfo.gsoTypeOffset, 1),
        Field("netif_extra_info", "u.gso.pad", NetifExtraInfo.gsoPadOffset, 1),
        Field("netif_extra_info", "u.gso.features", NetifExtraInfo.gsoFeaturesOffset, 2),
        Field("netif_extra_info", "u.mcast.addr", NetifExtraInfo.multicastAddressOffset, 6),
        Field("netif_extra_info", "u.hash.type", NetifExtraInfo.hashTypeOffset, 1),
        Field("netif_extra_info", "u.hash.algorithm", NetifExtraInfo.hashAlgorithmOffset, 1),
        Field("netif_extra_info", "u.hash.value", NetifExtraInfo.hashValueOffset, 4),
        Field("netif_extra_info", "sizeof", 0, extraInfoSize),
        Field("xen_netif_ctrl_request", "id", NetifCtrlRequest.idOffset, 2),
        Field("xen_netif_ctrl_request", "type", NetifCtrlRequest.typeOffset, 2),
        Field("xen_netif_ctrl_request", "data", NetifCtrlRequest.dataOffset, 12),
        Field("xen_netif_ctrl_request", "sizeof", 0, ctrlRequestSize),
        Field("xen_netif_ctrl_response", "id", NetifCtrlResponse.idOffset, 2),
        Field("xen_netif_ctrl_response", "type", NetifCtrlResponse.typeOffset, 2),
        Field("xen_netif_ctrl_response", "status", NetifCtrlResponse.statusOffset, 4),
        Field("xen_netif_ctrl_response", "data", NetifCtrlResponse.dataOffset, 4),
        Field("xen_netif_ctrl_response", "sizeof", 0, ctrlResponseSize),
        Field("netif_tx_sring_entry", "sizeof", 0, txSlotSize),
        Field("netif_rx_sring_entry", "sizeof", 0, rxSlotSize),
        Field("xen_netif_ctrl_sring_entry", "sizeof", 0, ctrlSlotSize),
    ]
}

extension NetifLayout {
    /// Throws unless a slot of `length` bytes at `offset` lies inside `view`.
    @inlinable
    static func checkSlot(_ view: SharedView, _ offset: Int, _ length: Int) throws(NetifError) {
        guard offset >= 0, offset <= view.count, length <= view.count - offset else {
            throw .slotOutOfBounds(offset: offset, length: length, size: view.count)
        }
    }
}

/// Limits from `io/netif.h`.
public enum NetifLimits {
    /// `XEN_NETIF_NR_SLOTS_MIN`: slots per packet every backend must accept.
    public static let minimumSlotsPerPacket = 18
    /// `XEN_NETIF_MAX_TX_SIZE`: largest packet a transmit request can announce.
    public static let maxTransmitSize = 0xFFFF
}
