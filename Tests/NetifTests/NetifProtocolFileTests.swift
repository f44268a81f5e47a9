import Testing
import XenTesting
import SharedMemory
@testable import Netif

/// The Swift layouts, constants and encoders against the committed Protocols/ files.
@Suite struct NetifProtocolFileTests {
    @Test func layoutTableMatchesProtocolsInBothABIs() throws {
        let table = try ProtocolTable("netif-layout.tsv")
        for abi in ["x86_32", "x86_64"] {
            let expected = table.rows.filter { $0["abi"] == abi }.map {
                NetifLayout.Field($0["struct"]!, $0["field"]!, Int($0["offset"]!)!, Int($0["size"]!)!)
            }
            #expect(NetifLayout.fields == expected, "layout of \(abi)")
        }
    }

    @Test func constantsMatchProtocols() throws {
        var swift: [String: String] = [
            "XEN_NETIF_NR_SLOTS_MIN": String(NetifLimits.minimumSlotsPerPacket),
            "XEN_NETIF_MAX_TX_SIZE": String(NetifLimits.maxTransmitSize),
            "NETTXF_csum_blank": String(NetifTxFlags.checksumBlank.rawValue),
            "NETTXF_data_validated": String(NetifTxFlags.dataValidated.rawValue),
            "NETTXF_more_data": String(NetifTxFlags.moreData.rawValue),
            "NETTXF_extra_info": String(NetifTxFlags.extraInfo.rawValue),
            "NETRXF_data_validated": String(NetifRxFlags.dataValidated.rawValue),
            "NETRXF_csum_blank": String(NetifRxFlags.checksumBlank.rawValue),
            "NETRXF_more_data": String(NetifRxFlags.moreData.rawValue),
            "NETRXF_extra_info": String(NetifRxFlags.extraInfo.rawValue),
            "NETRXF_gso_prefix": String(NetifRxFlags.gsoPrefix.rawValue),
            "XEN_NETIF_EXTRA_TYPE_NONE": "0",
            "XEN_NETIF_EXTRA_TYPE_GSO": String(NetifExtraInfo.TypeCode.gso),
            "XEN_NETIF_EXTRA_TYPE_MCAST_ADD": String(NetifExtraInfo.TypeCode.multicastAdd),
            "XEN_NETIF_EXTRA_TYPE_MCAST_DEL": String(NetifExtraInfo.TypeCode.multicastDelete),
            "XEN_NETIF_EXTRA_TYPE_HASH": String(NetifExtraInfo.TypeCode.hash),
            "XEN_NETIF_EXTRA_TYPE_MAX": String(NetifExtraInfo.TypeCode.hash + 1),
            "XEN_NETIF_EXTRA_FLAG_MORE": String(NetifExtraFlags.more.rawValue),
            "XEN_NETIF_GSO_TYPE_NONE": String(NetifGSOType.none.rawValue),
            "XEN_NETIF_GSO_TYPE_TCPV4": String(NetifGSOType.tcpv4.rawValue),
            "XEN_NETIF_GSO_TYPE_TCPV6": String(NetifGSOType.tcpv6.rawValue),
            "XEN_NETIF_CTRL_HASH_TYPE_IPV4": String(NetifHashTypes.ipv4.rawValue),
            "XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP": String(NetifHashTypes.ipv4TCP.rawValue),
            "XEN_NETIF_CTRL_HASH_TYPE_IPV6": String(NetifHashTypes.ipv6.rawValue),
            "XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP": String(NetifHashTypes.ipv6TCP.rawValue),
            "XEN_NETIF_CTRL_HASH_ALGORITHM_NONE": String(NetifHashAlgorithm.none.rawValue),
            "XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ": String(NetifHashAlgorithm.toeplitz.rawValue),
            "NETIF_RSP_DROPPED": String(NetifStatus.dropped.rawValue),
            "NETIF_RSP_ERROR": String(NetifStatus.error.rawValue),
            "NETIF_RSP_OKAY": String(NetifStatus.okay.rawValue),
            "NETIF_RSP_NULL": String(NetifStatus.null.rawValue),
        ]
        let typeNames = ["INVALID", "GET_HASH_FLAGS", "SET_HASH_FLAGS", "SET_HASH_KEY", "GET_HASH_MAPPING_SIZE",
                         "SET_HASH_MAPPING_SIZE", "SET_HASH_MAPPING", "SET_HASH_ALGORITHM", "GET_GREF_MAPPING_SIZE",
                         "ADD_GREF_MAPPING", "DEL_GREF_MAPPING"]
        for (type, name) in zip(NetifCtrlType.allCases, typeNames) {
            swift["XEN_NETIF_CTRL_TYPE_" + name] = String(type.rawValue)
        }
        let statusNames = ["SUCCESS", "NOT_SUPPORTED", "INVALID_PARAMETER", "BUFFER_OVERFLOW"]
        for (status, name) in zip(NetifCtrlStatus.allCases, statusNames) {
            swift["XEN_NETIF_CTRL_STATUS_" + name] = String(status.rawValue)
        }
        let bitNames = ["IPV4", "IPV4_TCP", "IPV6", "IPV6_TCP"]
        for (type, name) in zip(NetifHashType.allCases, bitNames) {
            swift["_XEN_NETIF_CTRL_HASH_TYPE_" + name] = String(type.rawValue)
            #expect(swift["XEN_NETIF_CTRL_HASH_TYPE_" + name] == String(type.set.rawValue))
        }
        let table = try ProtocolTable("netif-constants.tsv")
        #expect(Set(table.rows.map { $0["name"]! }) == Set(swift.keys), "every constant is mapped")
        for row in table.rows {
            #expect(swift[row["name"]!] == row["value"], "\(row["name"]!)")
        }
    }

    @Test func goldenVectorsMatchEncoderAndDecoder() throws {
        let table = try ProtocolTable("netif-golden.tsv")
        let region = try MemoryRegion.anonymous(pages: 1)
        let view = region.view
        for abi in ["x86_32", "x86_64"] {
            let rows = table.rows.filter { $0["abi"] == abi }
            #expect(Set(rows.map { $0["name"]! }) == Set(NetifExample.all.keys), "examples for \(abi)")
            for row in rows {
                let name = row["name"]!
                let golden = hexBytes(row["hex"]!)
                let example = try #require(NetifExample.all[name])
                // Every byte of the struct is written, over a dirty slot.
                view.fill(0xAA, at: 0, length: 64)
                encode(example, into: view, at: 12)
                #expect(view.bytes(at: 12, length: golden.count) == golden, "\(abi) \(name) bytes")
                view.fill(0, at: 0, length: 64)
                golden.withUnsafeBytes { view.copyBytes(from: $0, to: 24) }
                #expect(try decode(like: example, from: view, at: 24) == example, "\(abi) \(name) decode")
            }
        }
    }

    func encode(_ example: NetifExample, into view: SharedView, at offset: Int) {
        switch example {
        case let .txRequest(v): v.encode(into: view, at: offset)
        case let .txResponse(v): v.encode(into: view, at: offset)
        case let .rxRequest(v): v.encode(into: view, at: offset)
        case let .rxResponse(v): v.encode(into: view, at: offset)
        case let .extra(v): v.encode(into: view, at: offset)
        }
    }

    func decode(like example: NetifExample, from view: SharedView, at offset: Int) throws -> NetifExample {
        switch example {
        case .txRequest: return .txRequest(try NetifTxRequest.decode(from: view, at: offset))
        case .txResponse: return .txResponse(try NetifTxResponse.decode(from: view, at: offset))
        case .rxRequest: return .rxRequest(try NetifRxRequest.decode(from: view, at: offset))
        case .rxResponse: return .rxResponse(try NetifRxResponse.decode(from: view, at: offset))
        case .extra: return .extra(try NetifExtraInfo.decode(from: view, at: offset))
        }
    }
}
