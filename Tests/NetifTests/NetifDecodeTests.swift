import Testing
import XenTesting
import SharedMemory
@testable import Netif

/// Decoding hostile slots: every rule has a failing case.
@Suite struct NetifDecodeTests {
    let region: MemoryRegion
    var view: SharedView { region.view }

    init() throws { region = try MemoryRegion.anonymous(pages: 1) }

    @Test func txFlags() throws {
        NetifTxRequest(gref: 1, offset: 0, flags: [], id: 1, size: 60).encode(into: view, at: 0)
        view.store(UInt16(0x10), at: 6)
        #expect(throws: NetifError.unknownFlags(field: "netif_tx_request.flags", value: 0x10, known: 0xf)) {
            try NetifTxRequest.decode(from: view, at: 0)
        }
        view.store(UInt16(0x8000 | 0x4), at: 6)
        #expect(throws: NetifError.unknownFlags(field: "netif_tx_request.flags", value: 0x8004, known: 0xf)) {
            try NetifTxRequest.decode(from: view, at: 0)
        }
        view.store(UInt16(0xf), at: 6)
        #expect(try NetifTxRequest.decode(from: view, at: 0).flags == NetifTxFlags.known)
    }

    @Test func txFragmentMustStayInItsPage() {
        let request = NetifTxRequest(gref: 1, offset: 4000, flags: [], id: 1, size: 1514)
        #expect(throws: Never.self) { try request.validateFragment(dataSize: 96) }
        #expect(throws: NetifError.pageRange(offset: 4000, size: 97, limit: 4096)) {
            try request.validateFragment(dataSize: 97)
        }
        let far = NetifTxRequest(gref: 1, offset: .max, flags: [], id: 1, size: .max)
        #expect(throws: NetifError.pageRange(offset: .max, size: .max, limit: 4096)) {
            try far.validateFragment(dataSize: far.size)
        }
    }

    @Test func txResponseStatus() {
        for raw: Int16 in [2, -3, .max, .min] {
            view.store(UInt16(5), at: 0)
            view.store(raw, at: 2)
            #expect(throws: NetifError.unknownStatus(raw)) { try NetifTxResponse.decode(from: view, at: 0) }
        }
    }

    @Test func rxResponseRules() throws {
        NetifRxResponse(id: 1, offset: 0, flags: [], status: 0).encode(into: view, at: 0)
        view.store(UInt16(0x20), at: 4)
        #expect(throws: NetifError.unknownFlags(field: "netif_rx_response.flags", value: 0x20, known: 0x1f)) {
            try NetifRxResponse.decode(from: view, at: 0)
        }
        NetifRxResponse(id: 1, offset: 0, flags: [], status: -3).encode(into: view, at: 0)
        #expect(throws: NetifError.unknownStatus(-3)) { try NetifRxResponse.decode(from: view, at: 0) }
        NetifRxResponse(id: 1, offset: 100, flags: [], size: 3997).encode(into: view, at: 0)
        #expect(throws: NetifError.pageRange(offset: 100, size: 3997, limit: 4096)) {
            try NetifRxResponse.decode(from: view, at: 0)
        }
        NetifRxResponse(id: 1, offset: 100, flags: [.moreData], size: 3996).encode(into: view, at: 0)
        let ok = try NetifRxResponse.decode(from: view, at: 0)
        #expect(ok.size == 3996 && ok.error == nil)
        NetifRxResponse(id: 1, offset: 0, flags: [], status: -2).encode(into: view, at: 0)
        #expect(try NetifRxResponse.decode(from: view, at: 0).error == .dropped)
    }

    func writeExtra(type: UInt8, flags: UInt8 = 0, _ bytes: [UInt8] = [0, 0, 0, 0, 0, 0]) {
        view.store(type, at: 0)
        view.store(flags, at: 1)
        for (i, b) in bytes.enumerated() { view.store(b, at: 2 + i) }
    }

    @Test func extraInfoRules() throws {
        for type: UInt8 in [0, 5, 0xff] {
            writeExtra(type: type)
            #expect(throws: NetifError.unknownExtraType(type)) { try NetifExtraInfo.decode(from: view, at: 0) }
        }
        writeExtra(type: 1, flags: 2, [0xa8, 0x05, 1, 0, 0, 0])
        #expect(throws: NetifError.unknownFlags(field: "netif_extra_info.flags", value: 2, known: 1)) {
            try NetifExtraInfo.decode(from: view, at: 0)
        }
        for gsoType: UInt8 in [0, 3] {
            writeExtra(type: 1, [0xa8, 0x05, gsoType, 0, 0, 0])
            #expect(throws: NetifError.unknownGSOType(gsoType)) { try NetifExtraInfo.decode(from: view, at: 0) }
        }
        writeExtra(type: 1, [0, 0, 1, 0, 0, 0])
        #expect(throws: NetifError.gsoSize(value: 0, limit: 1...UInt16.max)) { try NetifExtraInfo.decode(from: view, at: 0) }
        writeExtra(type: 4, [4, 1, 0, 0, 0, 0])
        #expect(throws: NetifError.unknownHashType(4)) { try NetifExtraInfo.decode(from: view, at: 0) }
        writeExtra(type: 4, [3, 2, 0, 0, 0, 0])
        #expect(throws: NetifError.unknownHashAlgorithm(2)) { try NetifExtraInfo.decode(from: view, at: 0) }
        writeExtra(type: 2, flags: 1, [0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa])
        #expect(try NetifExtraInfo.decode(from: view, at: 0)
                == NetifExtraInfo(.multicastAdd(NetifMACAddress(0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa)), flags: .more))
    }

    @Test func slotBounds() {
        #expect(throws: NetifError.slotOutOfBounds(offset: 4090, length: 12, size: 4096)) {
            try NetifTxRequest.decode(from: view, at: 4090)
        }
        #expect(throws: NetifError.slotOutOfBounds(offset: 4093, length: 4, size: 4096)) {
            try NetifTxResponse.decode(from: view, at: 4093)
        }
        #expect(throws: NetifError.slotOutOfBounds(offset: -1, length: 8, size: 4096)) {
            try NetifRxRequest.decode(from: view, at: -1)
        }
        #expect(throws: NetifError.slotOutOfBounds(offset: Int.max, length: 8, size: 4096)) {
            try NetifRxResponse.decode(from: view, at: Int.max)
        }
        #expect(throws: NetifError.slotOutOfBounds(offset: 4089, length: 8, size: 4096)) {
            try NetifExtraInfo.decode(from: view, at: 4089)
        }
    }

    @Test func macAddressText() {
        #expect(NetifMACAddress(0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb).description == "01:00:5e:00:00:fb")
        #expect(NetifMACAddress(0xff, 0xff, 0xff, 0xff, 0xff, 0xff).rawValue == 0xffff_ffff_ffff)
    }

    /// Seeded random values survive encode/decode at every slot of a ring page.
    @Test func randomRoundTrip() throws {
        var rng = SeededGenerator(seed: 0x4E37)
        func u16() -> UInt16 { UInt16.random(in: 0...UInt16.max, using: &rng) }
        for n in 0..<2000 {
            let tx = 64 + (n % 336) * NetifLayout.txSlotSize
            let rx = 64 + (n % 504) * NetifLayout.rxSlotSize
            let txRequest = NetifTxRequest(gref: UInt32.random(in: 0...UInt32.max, using: &rng), offset: u16(),
                                           flags: NetifTxFlags(rawValue: u16() & 0xf), id: u16(), size: u16())
            txRequest.encode(into: view, at: tx)
            #expect(try NetifTxRequest.decode(from: view, at: tx) == txRequest)
            let pageOffset = UInt16.random(in: 0...4096, using: &rng)
            let rxResponse = NetifRxResponse(id: u16(), offset: pageOffset, flags: NetifRxFlags(rawValue: u16() & 0x1f),
                                             size: UInt16.random(in: 0...(4096 - pageOffset), using: &rng))
            rxResponse.encode(into: view, at: rx)
            #expect(try NetifRxResponse.decode(from: view, at: rx) == rxResponse)
            let extra: NetifExtraInfo
            switch n % 4 {
            case 0: extra = NetifExtraInfo(.gso(size: max(1, u16()), type: Bool.random(using: &rng) ? .tcpv4 : .tcpv6,
                                                features: u16()), flags: NetifExtraFlags(rawValue: UInt8(n & 1)))
            case 1: extra = NetifExtraInfo(.multicastAdd(NetifMACAddress(UInt8(n & 0xff), 1, 2, 3, 4, UInt8(n >> 8))))
            case 2: extra = NetifExtraInfo(.multicastDelete(NetifMACAddress(0xff, UInt8(n & 0xff), 0, 0, 0, 9)))
            default: extra = NetifExtraInfo(.hash(type: NetifHashType.allCases.randomElement(using: &rng)!,
                                                  algorithm: .toeplitz, value: UInt32.random(in: 0...UInt32.max, using: &rng)))
            }
            extra.encode(into: view, at: rx)
            #expect(try NetifExtraInfo.decode(from: view, at: rx) == extra)
        }
    }
}
