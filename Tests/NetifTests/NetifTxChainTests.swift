import SharedMemory
import Testing
@testable import Netif

/// The tx chain parser over slots written as a frontend writes them.
@Suite struct NetifTxChainTests {
    /// One tx slot's content.
    enum Entry {
        case request(NetifTxRequest)
        case extra(NetifExtraInfo)
    }

    /// Slots laid out in one page, 12 bytes each, as on the tx ring.
    final class Slots {
        let region: MemoryRegion
        let count: Int

        init(_ entries: [Entry]) throws {
            region = try MemoryRegion.anonymous(pages: 1)
            count = entries.count
            for (i, entry) in entries.enumerated() {
                let view = slot(i)
                switch entry {
                case let .request(r): r.encode(into: view, at: 0)
                case let .extra(e): e.encode(into: view, at: 0)
                }
            }
        }

        func slot(_ i: Int) -> SharedView { try! region.view.slice(offset: i * NetifLayout.txSlotSize, length: NetifLayout.txSlotSize) }
    }

    static func request(id: UInt16, size: UInt16, flags: NetifTxFlags = [], offset: UInt16 = 0) -> Entry {
        .request(NetifTxRequest(gref: 100 + UInt32(id), offset: offset, flags: flags, id: id, size: size))
    }

    func parse(_ entries: [Entry], available: Int? = nil,
               parser: NetifTxChainParser = NetifTxChainParser()) throws(NetifError) -> NetifTxChainParser.Outcome {
        let slots = try! Slots(entries)
        return try parser.parse(available: available ?? slots.count) { slots.slot($0) }
    }

    @Test func aThreeFragmentPacketWithAGSOExtra() throws {
        let gso = NetifExtraInfo(.gso(size: 1448, type: .tcpv4, features: 0))
        let outcome = try parse([Self.request(id: 1, size: 8900, flags: [.moreData, .extraInfo, .checksumBlank], offset: 100),
                                 .extra(gso),
                                 Self.request(id: 2, size: 4096, flags: [.moreData]),
                                 Self.request(id: 3, size: 904)])
        guard case let .packet(packet) = outcome else { Issue.record("\(outcome)"); return }
        #expect(packet.length == 8900)
        #expect(packet.fragments.map(\.size) == [3900, 4096, 904], "the first keeps what the others leave")
        #expect(packet.fragments[0].offset == 100)
        #expect(packet.extras == [gso])
        #expect(packet.flags == [.checksumBlank])
        #expect(packet.slotIDs == [1, nil, 2, 3], "responses in ring order, NULL for the extra")
    }

    @Test func chainedExtrasFollowExtraMore() throws {
        let gso = NetifExtraInfo(.gso(size: 1448, type: .tcpv6, features: 0), flags: [.more])
        let hash = NetifExtraInfo(.hash(type: .ipv4TCP, algorithm: .toeplitz, value: 7))
        let outcome = try parse([Self.request(id: 5, size: 60, flags: [.extraInfo]), .extra(gso), .extra(hash)])
        guard case let .packet(packet) = outcome else { Issue.record("\(outcome)"); return }
        #expect(packet.extras.count == 2)
        #expect(packet.slotIDs == [5, nil, nil])
    }

    @Test func eighteenSlotsAreServedAndNineteenRefusedEveryOneAnsweredAndTwentyOneAViolation() throws {
        func chain(_ n: Int) -> [Entry] {
            (0..<n).map { i in Self.request(id: UInt16(i), size: i == 0 ? UInt16(n * 100) : 100,
                                            flags: i + 1 < n ? [.moreData] : []) }
        }
        guard case let .packet(packet) = try parse(chain(NetifLimits.minimumSlotsPerPacket)) else {
            Issue.record("XEN_NETIF_NR_SLOTS_MIN slots must be served"); return
        }
        #expect(packet.fragments.count == 18)
        guard case let .refused(reason, slotIDs) = try parse(chain(19)) else { Issue.record("19 slots refused"); return }
        #expect(reason == .tooManySlots(count: 19, limit: 18))
        #expect(slotIDs == (0..<19).map { UInt16($0) }, "every slot is answered")
        #expect(throws: NetifError.txChainTooLong(slots: 21, limit: 20)) { try self.parse(chain(21)) }
        // A larger limit of our own serves more.
        let wider = NetifTxChainParser(maxSlots: 30, fatalSlots: 40)
        guard case .packet = try parse(chain(25), parser: wider) else { Issue.record("25 slots under a limit of 30"); return }
    }

    @Test func aChainRunningPastThePublishedSlotsWaits() throws {
        let entries = [Self.request(id: 1, size: 200, flags: [.moreData]), Self.request(id: 2, size: 100)]
        #expect(try parse(entries, available: 1) == .incomplete)
        #expect(try parse([Self.request(id: 1, size: 60, flags: [.extraInfo])], available: 1) == .incomplete)
        #expect(try parse(entries, available: 0) == .incomplete)
    }

    @Test func badSizesAreRefusedAndPageCrossingIsAViolation() throws {
        let bigger = try parse([Self.request(id: 1, size: 100, flags: [.moreData]), Self.request(id: 2, size: 200)])
        #expect(bigger == .refused(.fragmentLargerThanPacket(index: 1, size: 200, left: 100), slotIDs: [1, 2]))
        let short = try parse([Self.request(id: 1, size: 10)])
        #expect(short == .refused(.packetTooShort(length: 10, minimum: 14), slotIDs: [1]))
        #expect(throws: NetifError.pageRange(offset: 4000, size: 200, limit: 4096)) {
            try self.parse([Self.request(id: 1, size: 200, offset: 4000)])
        }
        #expect(throws: NetifError.pageRange(offset: 100, size: 4096, limit: 4096)) {
            try self.parse([Self.request(id: 1, size: 8192, flags: [.moreData]), Self.request(id: 2, size: 4096, offset: 100)])
        }
        let gso = NetifExtraInfo(.gso(size: 1448, type: .tcpv4, features: 0), flags: [.more])
        #expect(throws: NetifError.duplicateExtra(type: 1)) {
            try self.parse([Self.request(id: 1, size: 60, flags: [.extraInfo]), .extra(gso), .extra(gso)])
        }
    }
}

@Suite struct NetifRxPlanTests {
    @Test func aGSOPacketSpreadsOverPagesWithItsExtraAfterTheFirstResponse() throws {
        let gso = NetifExtraInfo(.gso(size: 1448, type: .tcpv4, features: 0))
        let plan = try NetifRxPlan(length: 9000, flags: [.dataValidated, .checksumBlank], extras: [gso])
        #expect(plan.requestsNeeded == 4, "three pages of data and one extra slot")
        #expect(plan.slots == [
            .data(packetOffset: 0, length: 4096, flags: [.dataValidated, .checksumBlank, .moreData, .extraInfo]),
            .extra(gso),
            .data(packetOffset: 4096, length: 4096, flags: [.moreData]),
            .data(packetOffset: 8192, length: 808, flags: []),
        ])
    }

    @Test func extrasAreChainedWithExtraMoreAndASmallPacketTakesOneSlot() throws {
        let gso = NetifExtraInfo(.gso(size: 1448, type: .tcpv6, features: 0))
        let hash = NetifExtraInfo(.hash(type: .ipv6TCP, algorithm: .toeplitz, value: 1))
        let plan = try NetifRxPlan(length: 100, extras: [gso, hash])
        #expect(plan.slots == [.data(packetOffset: 0, length: 100, flags: [.extraInfo]),
                               .extra(NetifExtraInfo(gso.kind, flags: [.more])), .extra(hash)])
        #expect(try NetifRxPlan(length: 60).slots == [.data(packetOffset: 0, length: 60, flags: [])])
        #expect(try NetifRxPlan(length: 4096).slots.count == 1)
        #expect(try NetifRxPlan(length: 4097).slots.count == 2)
    }

    @Test func badInputIsRefused() {
        #expect(throws: NetifError.self) { try NetifRxPlan(length: 0) }
        #expect(throws: NetifError.self) { try NetifRxPlan(length: 70_000) }
        let hash = NetifExtraInfo(.hash(type: .ipv4, algorithm: .toeplitz, value: 1))
        #expect(throws: NetifError.duplicateExtra(type: 4)) { try NetifRxPlan(length: 60, extras: [hash, hash]) }
    }
}
