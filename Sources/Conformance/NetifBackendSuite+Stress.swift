import Netif
import SharedMemory
import XenBus

extension NetifBackendSuite {
    static let stress: [Check] = [
        Check("NETIF-BE-025") { peer in
            try await peer.startOver(force: true)
            var handshake = NetfrontPeer.Handshake()
            handshake.rxBuffers = 0
            try await peer.connect(handshake)
            for _ in 0 ..< 2000 { try peer.host.send(peer.frame(toGuest: true)) }
            let out = peer.frame()
            let id = try peer.sendFrame(out)
            let responses = try peer.txResponses(1)
            let outSeen = try peer.seenOnHost(out) != nil
            guard responses == [NetifTxResponse(id: id, status: .okay)], outSeen else {
                return .fail("after 2000 frames for a guest with no buffers, a tx frame was answered \(describe(responses)), \(outSeen ? "on the host" : "not on the host")")
            }
            try peer.refillRx()
            // The frames held for the guest come first; a fresh one sent while they fill
            // the backend's inbox may rightly be dropped, so it goes once they are taken.
            var held = 0
            for _ in 0 ..< 200 {
                let taken = try peer.rxPackets(within: .milliseconds(300)) { _ in false }
                held += taken.count
                if taken.isEmpty { break }
            }
            let fresh = peer.frame(toGuest: true)
            let (packet, all) = try peer.deliver(fresh)
            return .expect(packet != nil, "after 2000 frames for a guest with no buffers: a tx frame reached the host; once buffers were posted \(held) held frames came, then \(packet != nil ? "a fresh one" : "not a fresh one (\(all.count) others)")")
        },
        connected("NETIF-BE-048") { peer in
            var expected: [NetifTxResponse] = []
            for _ in 0 ..< 200 {
                let id = peer.takeTxID()
                try peer.produceTx(NetifTxRequest(gref: 0xFFF0, offset: 0, flags: [], id: id, size: 60))
                expected.append(NetifTxResponse(id: id, status: .error))
            }
            try peer.pushTx()
            let responses = try peer.txResponses(expected.count)
            let seen = "200 slots on gref 0xfff0 in one push: \(responses.count) answered, \(responses.filter { $0.status == .error }.count) ERROR\(responses == expected ? ", in order" : "")"
            guard responses == expected else { return .fail(seen) }
            return await stillServing(peer, seen)
        },
        connected("NETIF-BE-049") { peer in
            let frame = peer.frame(size: 300)
            let ids = (0 ..< 3).map { _ in peer.takeTxID() }
            for part in 0 ..< 3 {
                try peer.produceTx(NetifTxRequest(gref: peer.data.refs[part], offset: 0, flags: part < 2 ? [.moreData] : [],
                                                  id: ids[part], size: part == 0 ? 300 : 100), data: Array(frame[part * 100 ..< (part + 1) * 100]))
            }
            let rings = try peer.rings()
            let tx = rings.queues[0].tx
            // The first two slots only.
            tx.shared.storeRequestProducer(tx.requestProducerPrivate &- 1)
            try rings.notify(rings.queues[0].txPort)
            let early = try peer.host.receive(within: .milliseconds(300)) { NetfrontPeer.same($0, as: frame) }
            guard early == nil else { return .fail("a frame reached the host before the chain's last slot was published") }
            try peer.pushTx()
            let responses = try peer.txResponses(3)
            let seen = try peer.seenOnHost(frame)
            return .expect(responses == ids.map { NetifTxResponse(id: $0, status: .okay) } && seen == frame,
                           "nothing on the host while 2 of 3 slots were published; after the last: answered \(describe(responses)), \(seen == frame ? "the whole frame on the host" : "not the frame")")
        },
        Check("NETIF-BE-059") { peer in
            try await peer.startOver(force: true)
            var handshake = NetfrontPeer.Handshake()
            handshake.queues = 2
            try await peer.connect(handshake)
            try await peer.store.write(peer.frontendPath + "/" + NetifFrontendFeatures.Key.queueCount, "1")
            try await Task.sleep(for: .milliseconds(200))
            var seen: [String] = []
            var ok = true
            for queue in 0 ..< 2 {
                let frame = peer.frame()
                let id = try peer.sendFrame(frame, page: queue, queue: queue)
                let responses = try peer.txResponses(1, queue: queue)
                let arrived = try peer.seenOnHost(frame) == frame
                ok = ok && responses == [NetifTxResponse(id: id, status: .okay)] && arrived
                seen.append("queue \(queue): answered \(describe(responses)), \(arrived ? "on the host" : "not on the host")")
            }
            return .expect(ok, "multi-queue-num-queues rewritten to 1 after Connected; " + seen.joined(separator: "; "))
        },
    ]
}
