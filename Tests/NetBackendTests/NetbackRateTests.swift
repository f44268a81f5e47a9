import Foundation
import NetBackend
import Netif
import Tap
import Testing
import XenPlatform
import XenTesting

extension RawNetfront {
    /// Sends `count` copies of `frame` from page 0 as fast as the ring takes them and
    /// waits (off the cooperative pool, up to 60 s) for every answer; returns the
    /// statuses and the seconds from the first send to the last answer.
    func blast(_ frame: [UInt8], count: Int) async throws -> (statuses: [NetifStatus], seconds: Double) {
        try await offThePool { [self] in
            frame.withUnsafeBytes { data.view.baseAddress.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            var statuses: [NetifStatus] = []
            var sent = 0
            let start = ContinuousClock.now
            let deadline = start + .seconds(60)
            while statuses.count < count {
                var produced = false
                while sent < count, tx.ring.freeRequests > 0 {
                    try tx.produceRequest {
                        NetifTxRequest(gref: data.refs[0], offset: 0, flags: [], id: UInt16(sent % 256), size: UInt16(frame.count))
                            .encode(into: $0, at: 0)
                    }
                    sent += 1
                    produced = true
                }
                if produced { _ = try tx.pushRequestsAndNotify() }
                _ = try tx.consumeResponses { view in
                    if let response = try? NetifTxResponse.decode(from: view, at: 0) { statuses.append(response.status) }
                }
                if statuses.count < count, try !tx.finalCheckForResponses() {
                    guard ContinuousClock.now < deadline else { throw NetTestError("\(statuses.count) of \(count) answered in 60 s") }
                    Self.waitForEvent(tx.eventChannel, milliseconds: 50)
                }
            }
            let elapsed = ContinuousClock.now - start
            return (statuses, Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
        }
    }
}

@Suite("netback rate limit", .serialized)
struct NetbackRateTests {
    @Test("the backend's rate key holds a guest's transmit to the rate: 1 MB at 1 MB/s takes at least the time the rate allows past its burst")
    func rateHoldsTheGuest() async throws {
        try await NetWorld.with(try NetWorld()) { world in
            // 1 MB/s renewed every 100 ms: 100000 bytes an interval, a 128 KiB burst.
            let (domain, guest) = try await world.guest("g", mac: NetbackDataTests.guestMAC, vifOptions: ",rate=1MB/s@100ms")
            let store = try world.dom0.connectXenStore()
            let frontend = try RawNetfront(guest, domain: domain)
            #expect(try await store.readString(frontend.backendPath + "/rate") == "100000,100000")
            try await world.plug(domain: domain, address: "198.18.5.1", guestAddress: "198.18.5.2",
                                 guestMAC: NetbackDataTests.guestMAC)
            var features = NetifFrontendFeatures()
            features.requestRxCopy = true
            try await frontend.connect(features: features)
            let udp = TestFrames.udp(sourcePort: 4000, destinationPort: 9, payload: Array(repeating: 0x5A, count: 1358))
            let frame = EthernetAddress.netbackVif.octets + NetbackDataTests.guestMACBytes + TestFrames.etherTypeIPv4
                + TestFrames.ipv4(from: NetbackDataTests.guestAddress, to: NetbackDataTests.dom0Address, protocol: 17,
                                  payloadLength: udp.count) + udp
            let count = 1_000_000 / frame.count + 1
            let (statuses, seconds) = try await frontend.blast(frame, count: count)
            #expect(statuses.allSatisfy { $0 == .okay })
            // Past the burst, the rest goes at 1 MB/s at most: a lower bound only, which a
            // slow machine cannot break.
            let floor = Double(count * frame.count - 131_072) / 1_000_000
            #expect(seconds >= floor * 0.9, "\(count) packets of \(frame.count) bytes in \(seconds) s; the rate allows no less than \(floor) s")
        }
    }

    @Test("a malformed rate key refuses the vif, naming the key")
    func malformedRate() async throws {
        try await NetWorld.with(try NetWorld()) { world in
            let (domain, guest) = try await world.guest("g", mac: NetbackDataTests.guestMAC)
            let frontend = try RawNetfront(guest, domain: domain)
            let store = try world.dom0.connectXenStore()
            try await store.write(frontend.backendPath + "/rate", "fast")
            try await world.plug(domain: domain, address: "198.18.5.1", guestAddress: "198.18.5.2",
                                 guestMAC: NetbackDataTests.guestMAC)
            var features = NetifFrontendFeatures()
            features.requestRxCopy = true
            try await frontend.publish(features: features)
            let error = try await NetbackRefusalTests.errorNode(world, frontend.backendPath)
            #expect(error.contains("rate"), "\(error)")
        }
    }
}
