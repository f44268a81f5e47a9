import Netif
import SharedMemory
import Tap
import Testing
import XenRing
@testable import NetFrontend

/// Received packets put back together from rx responses, and a backend that lies about
/// them: each lie is a typed reason, never a crash.
struct NetFrontendRxAssemblerTests {
    /// An rx ring's slots and one page per slot, as the backend would fill them.
    final class Ring {
        let ringMemory: MemoryRegion
        let pageMemory: MemoryRegion
        let ring: SharedRing
        var assembler: NetFrontendRxAssembler
        var next: RingIndex = 0

        init() throws {
            ringMemory = try MemoryRegion.anonymous(pages: 1)
            ring = try SharedRing(memory: ringMemory.view, pages: 1, entrySize: NetifLayout.rxSlotSize)
            pageMemory = try MemoryRegion.anonymous(pages: Int(ring.size))
            assembler = NetFrontendRxAssembler(ringSize: ring.size)
        }

        func page(_ index: RingIndex) -> SharedView {
            SharedView(base: pageMemory.view.baseAddress + Int(index & (ring.size - 1)) * pageSize, count: pageSize)
        }

        /// Writes `bytes` into the next slot's page at `offset` and the response, then takes it.
        func data(_ bytes: [UInt8], offset: UInt16 = 0, flags: NetifRxFlags, id: UInt16? = nil,
                  status: Int16? = nil) throws(NetFrontendError) -> NetFrontendRxAssembler.Outcome {
            let index = next
            bytes.withUnsafeBytes { page(index).copyBytes(from: $0, to: Int(offset)) }
            let response = NetifRxResponse(id: id ?? UInt16(index & (ring.size - 1)), offset: offset, flags: flags,
                                           status: status ?? Int16(bytes.count))
            response.encode(into: ring.slot(index), at: 0)
            return try take()
        }

        func extra(_ info: NetifExtraInfo) throws(NetFrontendError) -> NetFrontendRxAssembler.Outcome {
            info.encode(into: ring.slot(next), at: 0)
            return try take()
        }

        private func take() throws(NetFrontendError) -> NetFrontendRxAssembler.Outcome {
            let index = next
            next &+= 1
            return try assembler.take(slot: ring.slot(index), index: index, page: page(index))
        }

        var header: VirtioNetHeader? { VirtioNetHeader(decoding: assembler.packet) }
        var frame: [UInt8] { Array(assembler.packet[VirtioNetHeader.size ..< assembler.packetLength]) }
    }

    @Test func oneSlotPacketWithValidatedData() throws {
        let ring = try Ring()
        let frame = Frames.udp4(payload: Frames.payload(200))
        #expect(try ring.data(frame, offset: 64, flags: .dataValidated) == .packet)
        #expect(ring.frame == frame)
        #expect(ring.header == VirtioNetHeader(flags: .dataValid))
    }

    @Test func chainWithGSOExtraBecomesOneGSOFrame() throws {
        let ring = try Ring()
        var frame = Frames.tcp4(payload: Frames.payload(10_000))
        _ = try Frames.makePartial(&frame)
        #expect(try ring.data(Array(frame[0 ..< 4096]), flags: [.checksumBlank, .dataValidated, .extraInfo, .moreData]) == .more)
        #expect(try ring.extra(NetifExtraInfo(.gso(size: 1448, type: .tcpv4, features: 0))) == .more)
        #expect(try ring.data(Array(frame[4096 ..< 8192]), flags: .moreData) == .more)
        #expect(try ring.data(Array(frame[8192...]), flags: []) == .packet)
        #expect(ring.frame == frame)
        #expect(ring.header == VirtioNetHeader(flags: .needsChecksum, gsoType: .tcpv4, headerLength: 54, gsoSize: 1448,
                                               csumStart: 34, csumOffset: 16))
        // The next packet starts clean.
        #expect(try ring.data(Frames.udp4(payload: [1, 2, 3]), flags: []) == .packet)
        #expect(ring.header == VirtioNetHeader())
    }

    @Test func checksumBlankUDPNeedsItsChecksum() throws {
        let ring = try Ring()
        var frame = Frames.udp4(payload: Frames.payload(99))
        _ = try Frames.makePartial(&frame)
        #expect(try ring.data(frame, flags: .checksumBlank) == .packet)
        #expect(ring.header == VirtioNetHeader(flags: .needsChecksum, csumStart: 34, csumOffset: 6))
    }

    @Test func gsoWithoutChecksumBlankGetsThePseudoHeaderSum() throws {
        let ring = try Ring()
        var frame = Frames.tcp6(payload: Frames.payload(3000))
        #expect(try ring.data(frame, flags: [.extraInfo]) == .more)
        #expect(try ring.extra(NetifExtraInfo(.gso(size: 1428, type: .tcpv6, features: 0))) == .packet)
        _ = try Frames.makePartial(&frame)
        #expect(ring.frame == frame)
        #expect(ring.header?.flags == .needsChecksum && ring.header?.gsoType == .tcpv6)
    }

    @Test func errorStatusDropsThePacketAndTheRingGoesOn() throws {
        let ring = try Ring()
        #expect(try ring.data([], flags: [], status: NetifStatus.error.rawValue) == .dropped(.rxErrorStatus(-1)))
        #expect(try ring.data([1, 2, 3], flags: []) == .dropped(.frameTooShort(length: 3)))
        #expect(try ring.data(Frames.udp4(payload: [9]), flags: []) == .packet)
    }

    @Test func responseForAnotherSlotIsALie() throws {
        let ring = try Ring()
        #expect(throws: NetFrontendError.rxResponseID(found: 5, expected: 0)) {
            try ring.data(Frames.udp4(payload: [1]), flags: [], id: 5)
        }
    }

    @Test func duplicateIDIsALie() throws {
        let ring = try Ring()
        #expect(try ring.data(Frames.udp4(payload: [1]), flags: []) == .packet)
        #expect(throws: NetFrontendError.rxResponseID(found: 0, expected: 1)) {
            try ring.data(Frames.udp4(payload: [2]), flags: [], id: 0)
        }
    }

    @Test func dataPastThePageIsALie() throws {
        let ring = try Ring()
        let response = NetifRxResponse(id: 0, offset: 4000, flags: [], size: 200)
        response.encode(into: ring.ring.slot(0), at: 0)
        #expect(throws: NetFrontendError.malformedResponse(ring: .rx, .pageRange(offset: 4000, size: 200, limit: pageSize))) {
            try ring.assembler.take(slot: ring.ring.slot(0), index: 0, page: ring.page(0))
        }
    }

    @Test func chainThatNeverEndsIsALie() throws {
        let ring = try Ring()
        for _ in 0 ..< NetFrontendRxAssembler.maxDataSlots {
            #expect(try ring.data(Frames.payload(4096), flags: .moreData) == .more)
        }
        #expect(throws: NetFrontendError.rxChainTooLong(slots: NetFrontendRxAssembler.maxDataSlots)) {
            try ring.data(Frames.payload(4096), flags: .moreData)
        }
    }

    @Test func extraInfoAfterTheFirstResponseIsALie() throws {
        let ring = try Ring()
        #expect(try ring.data(Frames.payload(100), flags: .moreData) == .more)
        #expect(throws: NetFrontendError.rxExtraInfoNotFirst) { try ring.data(Frames.payload(100), flags: .extraInfo) }
    }

    /// Seeded random slots, most of them well formed so chains complete and grow: every
    /// outcome is a packet, a drop or a typed lie, never a crash, and a packet never
    /// exceeds what a chain can hold.
    @Test func randomSlotsNeverCrash() throws {
        var generator = SeededGenerator(seed: 0x5EED_0F4E_7F00)
        var lies = 0
        var completed = 0
        for _ in 0 ..< 200 {
            let ring = try Ring()
            for _ in 0 ..< 64 {
                let index = ring.next
                if UInt8.random(in: 0 ..< 8, using: &generator) != 0 {
                    let flags: NetifRxFlags = Bool.random(using: &generator) ? .moreData : .dataValidated
                    NetifRxResponse(id: UInt16(index & (ring.ring.size - 1)), offset: 0, flags: flags,
                                    size: UInt16.random(in: 0 ... 4096, using: &generator)).encode(into: ring.ring.slot(index), at: 0)
                } else {
                    for i in 0 ..< NetifLayout.rxSlotSize {
                        ring.ring.slot(index).store(UInt8.random(in: 0 ... 255, using: &generator), at: i)
                    }
                }
                ring.next &+= 1
                do {
                    switch try ring.assembler.take(slot: ring.ring.slot(index), index: index, page: ring.page(index)) {
                    case .more: break
                    case .packet:
                        completed += 1
                        #expect(ring.assembler.packetLength <= ring.assembler.packet.count)
                    case .dropped: completed += 1
                    }
                } catch {
                    lies += 1
                    break
                }
            }
        }
        #expect(lies > 0 && completed > 0)
    }

    @Test func multicastExtraIsNeverAsked() throws {
        let ring = try Ring()
        #expect(try ring.data(Frames.udp4(payload: [1]), flags: .extraInfo) == .more)
        #expect(throws: NetFrontendError.rxUnexpectedExtra(type: 2)) {
            try ring.extra(NetifExtraInfo(.multicastAdd(NetifMACAddress(1, 0, 0x5E, 0, 0, 1))))
        }
    }
}
