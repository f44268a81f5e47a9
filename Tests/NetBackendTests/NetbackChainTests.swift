import Foundation
import Netif
import Tap
import Testing
import XenTesting

extension RawNetfront {
    /// One tx slot: `bytes` placed at `offset` of tx page `page`.
    struct Slot {
        let page: Int
        let offset: Int
        let bytes: [UInt8]
    }

    /// Sends one packet as a chain of `slots` (ids from `firstID` up): the first slot's
    /// size is the packet's, every slot but the last has moreData (`io/netif.h`).
    func sendChain(_ slots: [Slot], firstID: UInt16) throws {
        let total = slots.reduce(0) { $0 + $1.bytes.count }
        for (index, slot) in slots.enumerated() {
            precondition(Self.txPages.contains(slot.page) && slot.offset + slot.bytes.count <= 4096)
            let base = data.view.baseAddress + slot.page * 4096 + slot.offset
            slot.bytes.withUnsafeBytes { if $0.count > 0 { base.copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
            let size = index == 0 ? total : slot.bytes.count
            let flags: NetifTxFlags = index == slots.count - 1 ? [] : .moreData
            try tx.produceRequest {
                NetifTxRequest(gref: self.data.refs[slot.page], offset: UInt16(slot.offset), flags: flags,
                               id: firstID + UInt16(index), size: UInt16(size)).encode(into: $0, at: 0)
            }
        }
        _ = try tx.pushRequestsAndNotify()
    }
}

@Suite("netback odd but legal tx chains", .serialized)
struct NetbackChainTests {
    @Test("an echo request in a chain with zero-length slots and its headers split across slots reaches dom0 intact")
    func oddChainArrivesIntact() async throws {
        let world = try NetWorld()
        do {
            let (domain, guest) = try await world.guest("g", mac: NetbackDataTests.guestMAC)
            let frontend = try RawNetfront(guest, domain: domain)
            try await world.plug(domain: domain, address: "198.18.5.1", guestAddress: "198.18.5.2",
                                 guestMAC: NetbackDataTests.guestMAC)
            var features = NetifFrontendFeatures()
            features.requestRxCopy = true
            features.rxNotify = true
            features.scatterGather = true
            try await frontend.connect(features: features)

            let payload = (0..<56).map { UInt8(truncatingIfNeeded: $0 &* 13) }
            let icmp = TestFrames.echoRequest(identifier: 0x4343, sequence: 1, payload: payload)
            let frame = EthernetAddress.netbackVif.octets + NetbackDataTests.guestMACBytes + TestFrames.etherTypeIPv4
                + TestFrames.ipv4(from: NetbackDataTests.guestAddress, to: NetbackDataTests.dom0Address, protocol: 1,
                                  payloadLength: icmp.count) + icmp
            // The Ethernet header split in two (the second part ending a page), the IPv4
            // header split between slots, and empty slots at the chain's head and middle.
            let slots = [
                RawNetfront.Slot(page: 0, offset: 0, bytes: Array(frame[0..<6])),
                RawNetfront.Slot(page: 1, offset: 100, bytes: []),
                RawNetfront.Slot(page: 2, offset: 4096 - 10, bytes: Array(frame[6..<16])),
                RawNetfront.Slot(page: 3, offset: 0, bytes: []),
                RawNetfront.Slot(page: 4, offset: 1, bytes: Array(frame[16..<30])),
                RawNetfront.Slot(page: 5, offset: 0, bytes: Array(frame[30...])),
            ]
            try frontend.sendChain(slots, firstID: 10)
            let responses = try await frontend.txResponses(slots.count)
            #expect(Set(responses.map(\.id)) == Set(10..<16))
            #expect(responses.allSatisfy { $0.status == .okay })

            // The kernel answers only a frame whose IPv4 and ICMP checksums verify.
            var reply: [UInt8] = []
            for _ in 0..<16 {
                let (response, bytes) = try await frontend.receive()
                #expect(response.error == nil)
                if bytes.count >= 35, bytes[12] == 0x08, bytes[13] == 0x00, bytes[23] == 1, bytes[34] == 0 {
                    reply = bytes
                    break
                }
            }
            #expect(reply.count == frame.count, "an echo reply of the request's size")
            if reply.count == frame.count {
                #expect(Array(reply[38..<42]) == Array(frame[38..<42]), "identifier and sequence echoed")
                #expect(Array(reply[42...]) == payload)
            }
        } catch {
            await world.stop()
            throw error
        }
        await world.stop()
    }
}
