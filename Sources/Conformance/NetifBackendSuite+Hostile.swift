import Netif
import SharedMemory
import XenPlatform
import XenRing

extension NetifBackendSuite {
    /// A grant reference no frontend is expected to have made.
    static let neverGranted: UInt32 = 0x7FFF_FFF0

    /// A first slot announcing extras, for the lies about extras that follow it.
    static func firstOfExtras(_ peer: NetfrontPeer) throws {
        let frame = peer.frame()
        try peer.produceTx(NetifTxRequest(gref: peer.data.refs[0], offset: 0, flags: [.extraInfo], id: peer.takeTxID(),
                                          size: UInt16(frame.count)), data: frame)
    }

    /// Chains of `lengths` data slots; each slot's expected answer is ERROR.
    static func chains(_ peer: NetfrontPeer, _ lengths: [Int]) throws -> [NetifTxResponse] {
        var expected: [NetifTxResponse] = []
        for slots in lengths {
            for slot in 0 ..< slots {
                let id = peer.takeTxID()
                try peer.produceTx(NetifTxRequest(gref: peer.data.refs[0], offset: 0, flags: slot < slots - 1 ? [.moreData] : [],
                                                  id: id, size: slot == 0 ? UInt16(60 * slots) : 60))
                expected.append(NetifTxResponse(id: id, status: .error))
            }
        }
        return expected
    }

    /// A lie written by `lie` on a connected vif, which the backend must refuse the vif for.
    static func refusal(_ id: String, _ what: String, _ lie: @escaping @Sendable (NetfrontPeer) async throws -> Void) -> Check {
        connected(id) { peer in
            try await lie(peer)
            return try await refused(peer, what)
        }
    }

    static let badPackets: [Check] = [
        connected("NETIF-BE-030") { peer in
            let expected = try chains(peer, [19, 20])
            try peer.pushTx()
            let responses = try peer.txResponses(expected.count)
            let seen = "chains of 19 and 20 slots: \(responses.filter { $0.status == .error }.count) of \(expected.count) slots ERROR"
                + (responses == expected ? " in order" : ", answers \(describe(Array(responses.prefix(4))))...")
            guard responses == expected else { return .fail(seen) }
            return await stillServing(peer, seen)
        },
        refusal("NETIF-BE-031", "a chain of 24 slots") { peer in
            _ = try chains(peer, [24])
            try peer.pushTx()
        },
        connected("NETIF-BE-032") { peer in
            let ref = peer.data.refs[0]
            let ids = (0 ..< 3).map { _ in peer.takeTxID() }
            try peer.produceTx(NetifTxRequest(gref: ref, offset: 0, flags: [.moreData, .extraInfo], id: ids[0], size: 100))
            try peer.produceExtra(NetifExtraInfo(.gso(size: 1448, type: .tcpv4, features: 0)))
            try peer.produceTx(NetifTxRequest(gref: ref, offset: 0, flags: [.moreData], id: ids[1], size: 60))
            try peer.produceTx(NetifTxRequest(gref: ref, offset: 0, flags: [], id: ids[2], size: 200))
            try peer.pushTx()
            let responses = try peer.txResponses(4)
            let expected = [NetifTxResponse(id: ids[0], status: .error), NetifTxResponse(id: 0, status: .null),
                            NetifTxResponse(id: ids[1], status: .error), NetifTxResponse(id: ids[2], status: .error)]
            let seen = "sizes 100 (GSO extra), 60, 200: answered \(responses.map { "\($0.id):\($0.status)" })"
            guard responses == expected else { return .fail(seen) }
            return await stillServing(peer, seen)
        },
        refusal("NETIF-BE-033", "sizes 6000 then 100") { peer in
            try peer.produceTx(NetifTxRequest(gref: peer.data.refs[0], offset: 0, flags: [.moreData], id: peer.takeTxID(), size: 6000))
            try peer.produceTx(NetifTxRequest(gref: peer.data.refs[1], offset: 0, flags: [], id: peer.takeTxID(), size: 100))
            try peer.pushTx()
        },
        refusal("NETIF-BE-034", "offset 4000, size 200") { peer in
            try peer.produceTx(NetifTxRequest(gref: peer.data.refs[0], offset: 4000, flags: [], id: peer.takeTxID(), size: 200))
            try peer.pushTx()
        },
        refusal("NETIF-BE-035", "an extra of type 9") { peer in
            try firstOfExtras(peer)
            try peer.produceTxSlot { slot in for (i, byte) in [UInt8](arrayLiteral: 9, 0, 0, 0, 0, 0, 0, 0).enumerated() { slot.store(byte, at: i) } }
            try peer.pushTx()
        },
        refusal("NETIF-BE-036", "extras with FLAG_MORE over the whole ring") { peer in
            try firstOfExtras(peer)
            let kinds: [NetifExtraInfo.Kind] = [
                .gso(size: 1448, type: .tcpv4, features: 0), .multicastAdd(NetifMACAddress(0x01, 0, 0x5E, 0, 0, 1)),
                .multicastDelete(NetifMACAddress(0x01, 0, 0x5E, 0, 0, 2)), .hash(type: .ipv4, algorithm: .toeplitz, value: 7)]
            var index = 0
            while try !peer.rings().queues[0].tx.isFull {
                try peer.produceExtra(NetifExtraInfo(kinds[index % kinds.count], flags: .more))
                index += 1
            }
            try peer.pushTx()
        },
        refusal("NETIF-BE-037", "gso.size 0") { peer in
            try firstOfExtras(peer)
            try peer.produceExtra(NetifExtraInfo(.gso(size: 0, type: .tcpv4, features: 0)))
            try peer.pushTx()
        },
        refusal("NETIF-BE-038", "gso.type 7") { peer in
            try firstOfExtras(peer)
            // type GSO, no flags, size 1448, gso type 7.
            try peer.produceTxSlot { slot in for (i, byte) in [UInt8](arrayLiteral: 1, 0, 0xA8, 0x05, 7, 0, 0, 0).enumerated() { slot.store(byte, at: i) } }
            try peer.pushTx()
        },
        refusal("NETIF-BE-039", "tx req_prod set to 100000") { peer in
            let rings = try peer.rings()
            rings.queues[0].tx.shared.storeRequestProducer(100_000)
            try rings.notify(rings.queues[0].txPort)
        },
        refusal("NETIF-BE-040", "rx req_prod set to 1000000 and frames from the host") { peer in
            let rings = try peer.rings()
            rings.queues[0].rx.shared.storeRequestProducer(1_000_000)
            try rings.notify(rings.queues[0].rxPort)
            // The rx ring is looked at when there is something to deliver.
            for _ in 0 ..< 4 { try peer.host.send(peer.frame(toGuest: true)) }
        },
        connected("NETIF-BE-041") { peer in
            let id = peer.takeTxID()
            try peer.produceTx(NetifTxRequest(gref: 0xFFF0, offset: 0, flags: [], id: id, size: 60))
            try peer.pushTx()
            let responses = try peer.txResponses(1)
            let seen = "gref 0xfff0 answered \(describe(responses))"
            guard responses == [NetifTxResponse(id: id, status: .error)] else { return .fail(seen) }
            return await stillServing(peer, seen)
        },
        connected("NETIF-BE-042") { peer in
            let revoked = try peer.platform.grantTable.share(pages: 1, with: peer.backendID, writable: false)
            let ref = revoked.refs[0]
            try peer.platform.grantTable.endAccess(revoked)
            let id = peer.takeTxID()
            try peer.produceTx(NetifTxRequest(gref: ref, offset: 0, flags: [], id: id, size: 60))
            try peer.pushTx()
            let responses = try peer.txResponses(1)
            let seen = "revoked gref \(ref) answered \(describe(responses))"
            guard responses == [NetifTxResponse(id: id, status: .error)] else { return .fail(seen) }
            return await stillServing(peer, seen)
        },
        Check("NETIF-BE-043") { peer in
            try await peer.startOver(force: true)
            var handshake = NetfrontPeer.Handshake()
            handshake.rxBuffers = 0
            try await peer.connect(handshake)
            try peer.postRx(id: 0, page: NetfrontPeer.rxPages.lowerBound, gref: neverGranted)
            try peer.postRx(id: 1, page: NetfrontPeer.rxPages.lowerBound + 1)
            peer.pushRx()
            for _ in 0 ..< 2 { try peer.host.send(peer.frame(toGuest: true)) }
            let packets = try peer.rxPackets(repost: false) { $0.count >= 2 }
            let seen = "a buffer on a never-granted gref, then a good one: answered \(packets.map { "\($0.responses.first.map { "\($0.id):\($0.status)" } ?? "?")" })"
            guard packets.count == 2, packets[0].error != nil, packets[0].responses.first?.id == 0,
                  packets[1].error == nil, packets[1].bytes.count > 14 else { return .fail(seen) }
            return await stillServing(peer, seen)
        },
        connected("NETIF-BE-044") { peer in
            let arp = [0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF] + peer.mac + [0x08, 0x06] + [UInt8](repeating: 0, count: 46)
            let id = try peer.sendFrame(arp, flags: [.checksumBlank])
            let responses = try peer.txResponses(1)
            let seen = "an ARP frame with NETTXF_csum_blank answered \(describe(responses))"
            guard responses.count == 1, responses[0].id == id, [.dropped, .error].contains(responses[0].status) else { return .fail(seen) }
            return await stillServing(peer, seen)
        },
        connected("NETIF-BE-045") { peer in
            let rings = try peer.rings()
            for _ in 0 ..< 10_000 { try rings.notify(rings.queues[0].txPort) }
            return await stillServing(peer, "10000 notifications with nothing published")
        },
        connected("NETIF-BE-046") { peer in
            let id = try peer.sendFrame(Array(peer.frame()[..<10]))
            let responses = try peer.txResponses(1)
            let seen = "a 10-byte slot answered \(describe(responses))"
            guard responses.count == 1, responses[0].id == id, [.dropped, .error].contains(responses[0].status) else { return .fail(seen) }
            return await stillServing(peer, seen)
        },
        connected("NETIF-BE-047") { peer in
            let frame = peer.frame()
            let id = peer.takeTxID()
            try peer.produceTx(NetifTxRequest(gref: peer.data.refs[0], offset: 0, flags: [], id: id, size: UInt16(frame.count)), data: frame)
            // Flag bit 7, which io/netif.h does not define, written over the slot.
            let rings = try peer.rings()
            rings.queues[0].tx.requestSlot(rings.queues[0].tx.requestProducerPrivate &- 1).store(UInt16(0x80), at: 6)
            try peer.pushTx()
            let responses = try peer.txResponses(1, within: NetfrontPeer.refusalWindow)
            if responses == [NetifTxResponse(id: id, status: .error)] {
                if let problem = await peer.servedAfterStartOver() { return .fail("flags 0x80 answered ERROR; \(problem)") }
                return .pass("flags 0x80 answered ERROR; served after a start over")
            }
            guard responses.isEmpty || responses.first?.status != .okay else { return .fail("flags 0x80 answered \(describe(responses))") }
            return try await refused(peer, "flags 0x80 (answered \(describe(responses)))")
        },
    ]
}
