import Foundation
import Glibc
import NetBackend
import Netif
import Tap
import Testing
import XenLocal
import XenPlatform
import XenStore
import XenTesting

extension RawNetfront {
    /// Sends `frame` from queue `queue`'s tx ring (1...: an extra pair), page 0 of its data.
    func send(_ frame: [UInt8], id: UInt16, queue: Int) throws {
        guard queue > 0 else { return try send(frame, id: id) }
        let pair = extraPairs[queue - 1]
        frame.withUnsafeBytes { pair.data.view.baseAddress.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        try pair.tx.produceRequest {
            NetifTxRequest(gref: pair.data.refs[0], offset: 0, flags: [], id: id, size: UInt16(frame.count)).encode(into: $0, at: 0)
        }
        _ = try pair.tx.pushRequestsAndNotify()
    }

    /// Waits (up to 20 s) for an echo reply on any queue's rx ring that `matches`; returns
    /// the queue it came on. Buffers are not reposted (a few replies fit in 16).
    func echoReply(matching: @escaping @Sendable ([UInt8]) -> Bool) async throws -> Int {
        let rings = [(rx, data)] + extraPairs.map { ($0.rx, $0.data) }
        return try await offThePool {
            let deadline = ContinuousClock.now + .seconds(20)
            while ContinuousClock.now < deadline {
                for (queue, (ring, data)) in rings.enumerated() {
                    var found = false
                    _ = try ring.consumeResponses { view in
                        guard let response = try? NetifRxResponse.decode(from: view, at: 0), let size = response.size else { return }
                        let page = RawNetfront.rxPages.lowerBound + Int(response.id) % RawNetfront.rxPages.count
                        let bytes = Array(UnsafeRawBufferPointer(start: data.view.baseAddress + page * 4096, count: min(size, 4096)))
                        if matching(bytes) { found = true }
                    }
                    if found { return queue }
                }
                usleep(2000)
            }
            throw NetTestError("no echo reply on any queue in 20 s")
        }
    }
}

@Suite("netback multi-queue", .serialized)
struct NetbackMultiQueueTests {
    @Test("1, 2 and 4 queue pairs: the keys read from queue-N/, a TAP queue each, an echo sent on every queue answered",
          arguments: [1, 2, 4])
    func queues(count: Int) async throws {
        var limits = NetbackDeviceLimits()
        limits.maxQueues = 4
        try await NetWorld.with(try NetWorld(limits: limits)) { world in
            let store = try world.dom0.connectXenStore()
            let (domain, guest) = try await world.guest("g", mac: NetbackDataTests.guestMAC)
            let frontend = try RawNetfront(guest, domain: domain, queues: count)
            let backend = frontend.backendPath
            try await eventually("InitWait") { (try? await store.readString(backend + "/state")) == "2" }
            #expect(try await store.readString(backend + "/" + NetifBackendFeatures.Key.maxQueues) == "4")
            try await world.plug(domain: domain, address: "198.18.5.1", guestAddress: "198.18.5.2",
                                 guestMAC: NetbackDataTests.guestMAC)
            var features = NetifFrontendFeatures()
            features.requestRxCopy = true
            try await frontend.connect(features: features)
            // The kernel sends to the vif only once its link watch saw the carrier.
            try await world.waitUntilUp(domain)
            #expect(world.daemon.queuesPerWorker.reduce(0, +) == count)

            for queue in 0..<count {
                let sequence = UInt16(queue + 1)
                let icmp = TestFrames.echoRequest(identifier: 0x5151, sequence: sequence, payload: Array(repeating: UInt8(queue), count: 40))
                let frame = EthernetAddress.netbackVif.octets + NetbackDataTests.guestMACBytes + TestFrames.etherTypeIPv4
                    + TestFrames.ipv4(from: NetbackDataTests.guestAddress, to: NetbackDataTests.dom0Address, protocol: 1,
                                      payloadLength: icmp.count) + icmp
                try frontend.send(frame, id: UInt16(10 + queue), queue: queue)
                _ = try await frontend.echoReply { bytes in
                    bytes.count == frame.count && bytes[23] == 1 && bytes[34] == 0 && bytes[40] == 0 && bytes[41] == UInt8(sequence)
                }
            }
        }
    }

    @Test("a frontend asking for more queues than offered is refused, naming the key")
    func tooManyQueues() async throws {
        var limits = NetbackDeviceLimits()
        limits.maxQueues = 2
        try await NetWorld.with(try NetWorld(limits: limits)) { world in
            let (domain, guest) = try await world.guest("g", mac: NetbackDataTests.guestMAC)
            let frontend = try RawNetfront(guest, domain: domain, queues: 3)
            try await world.plug(domain: domain, address: "198.18.5.1", guestAddress: "198.18.5.2",
                                 guestMAC: NetbackDataTests.guestMAC)
            var features = NetifFrontendFeatures()
            features.requestRxCopy = true
            try await frontend.publish(features: features)
            let error = try await NetbackRefusalTests.errorNode(world, frontend.backendPath)
            #expect(error.contains("multi-queue-num-queues"), "\(error)")
        }
    }
}
