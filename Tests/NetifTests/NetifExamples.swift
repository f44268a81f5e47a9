@testable import Netif

/// The example values of Tests/InteropTests/C/layout_check.c, built through the Swift
/// API; Protocols/netif-golden.tsv holds the bytes the C compiler made of them.
enum NetifExample: Equatable {
    case txRequest(NetifTxRequest)
    case txResponse(NetifTxResponse)
    case rxRequest(NetifRxRequest)
    case rxResponse(NetifRxResponse)
    case extra(NetifExtraInfo)

    static let group = NetifMACAddress(0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb)

    static let all: [String: NetifExample] = [
        "tx_request": .txRequest(NetifTxRequest(gref: 0x1234_5678, offset: 0x0a0b, flags: [.checksumBlank, .moreData],
                                                id: 0x0102, size: 1514)),
        "tx_request_extra": .txRequest(NetifTxRequest(gref: 7, offset: 0, flags: [.dataValidated, .extraInfo],
                                                      id: 0xffff, size: 0xffff)),
        "tx_response_okay": .txResponse(NetifTxResponse(id: 0x0102, status: .okay)),
        "tx_response_dropped": .txResponse(NetifTxResponse(id: 9, status: .dropped)),
        "tx_response_null": .txResponse(NetifTxResponse(id: 10, status: .null)),
        "rx_request": .rxRequest(NetifRxRequest(id: 0x0304, gref: 0x89ab_cdef)),
        "rx_response": .rxResponse(NetifRxResponse(id: 0x0304, offset: 0x10, flags: [.dataValidated, .extraInfo],
                                                   size: 1500)),
        "rx_response_error": .rxResponse(NetifRxResponse(id: 1, offset: 0, flags: [], status: NetifStatus.error.rawValue)),
        "extra_gso": .extra(NetifExtraInfo(.gso(size: 1448, type: .tcpv4, features: 0), flags: .more)),
        "extra_gso_v6": .extra(NetifExtraInfo(.gso(size: 1428, type: .tcpv6, features: 0x8001))),
        "extra_mcast_add": .extra(NetifExtraInfo(.multicastAdd(group))),
        "extra_mcast_del": .extra(NetifExtraInfo(.multicastDelete(group), flags: .more)),
        "extra_hash": .extra(NetifExtraInfo(.hash(type: .ipv4TCP, algorithm: .toeplitz, value: 0x1122_3344))),
    ]
}
