import Foundation
import NetBackend
import Netif
import Tap
import Testing
import XenBus
import XenPlatform
import XenTesting

extension RawNetfront {
    /// Asks for a multicast filter change: a dummy request carrying the extra slot, as
    /// io/netif.h describes; returns the two responses (the request's, then NULL).
    func multicast(_ kind: NetifExtraInfo.Kind, id: UInt16) async throws -> [NetifTxResponse] {
        try tx.produceRequest {
            NetifTxRequest(gref: self.data.refs[0], offset: 0, flags: [.extraInfo], id: id, size: 0).encode(into: $0, at: 0)
        }
        try tx.produceRequest { NetifExtraInfo(kind).encode(into: $0, at: 0) }
        _ = try tx.pushRequestsAndNotify()
        return try await txResponses(2)
    }

    /// The destination addresses of every frame that reaches the rx ring within `seconds`
    /// (buffers reposted as they are used).
    func destinations(within seconds: Int) async throws -> [[UInt8]] {
        try await offThePool { [self] in
            var seen: [[UInt8]] = []
            let deadline = ContinuousClock.now + .seconds(seconds)
            while ContinuousClock.now < deadline {
                var taken: [NetifRxResponse] = []
                _ = try rx.consumeResponses { view in
                    if let response = try? NetifRxResponse.decode(from: view, at: 0) { taken.append(response) }
                }
                for response in taken {
                    let page = Self.rxPages.lowerBound + Int(response.id) % Self.rxPages.count
                    if (response.size ?? 0) >= 6 {
                        seen.append(Array(UnsafeRawBufferPointer(start: data.view.baseAddress + page * 4096, count: 6)))
                    }
                    try rx.produceRequest { NetifRxRequest(id: response.id, gref: self.data.refs[page]).encode(into: $0, at: 0) }
                }
                if !taken.isEmpty { _ = try rx.pushRequestsAndNotify() }
                Self.waitForEvent(rx.eventChannel, milliseconds: 20)
            }
            return seen
        }
    }
}

@Suite("netback multicast control", .serialized)
struct NetbackMulticastTests {
    static let wanted = NetifMACAddress(0x01, 0x00, 0x5E, 0x00, 0x00, 0xFB)
    static let wantedBytes: [UInt8] = [0x01, 0x00, 0x5E, 0x00, 0x00, 0xFB]
    static let unwantedBytes: [UInt8] = [0x01, 0x00, 0x5E, 0x00, 0x00, 0xFC]

    /// Pings `group` from dom0's namespace out of the vif a few times (nobody answers).
    static func ping(_ world: NetWorld, _ group: String) async throws {
        let name = world.namespace.name
        _ = try await offThePool { try TestCommand.run("/usr/sbin/ip", ["netns", "exec", name, "ping", "-q", "-c", "3", "-i", "0.2", "-w", "2", group]) }
    }

    @Test("with request-multicast-control set, only the groups the guest added reach it; clearing the key (dynamic control) floods again")
    func filterFollowsTheGuest() async throws {
        try await NetWorld.with(try NetWorld()) { world in
            let (domain, guest) = try await world.guest("g", mac: NetbackDataTests.guestMAC)
            let frontend = try RawNetfront(guest, domain: domain)
            try await world.plug(domain: domain, address: "198.18.5.1", guestAddress: "198.18.5.2",
                                 guestMAC: NetbackDataTests.guestMAC)
            try world.namespace.ip("route", "add", "224.0.0.0/4", "dev", "vif\(domain).0")
            let store = try world.dom0.connectXenStore()
            #expect(try await store.readString(frontend.backendPath + "/feature-dynamic-multicast-control") == "1")
            var features = NetifFrontendFeatures()
            features.requestRxCopy = true
            features.requestMulticastControl = true
            try await frontend.connect(features: features)
            // The kernel sends to the vif only once its link watch saw the carrier.
            try await world.waitUntilUp(domain)
            #expect(try await frontend.multicast(.multicastAdd(Self.wanted), id: 5)
                == [NetifTxResponse(id: 5, status: .okay), NetifTxResponse(id: 0, status: .null)])

            try await Self.ping(world, "224.0.0.252")
            try await Self.ping(world, "224.0.0.251")
            let seen = try await frontend.destinations(within: 1)
            #expect(seen.contains(Self.wantedBytes), "the added group reaches the guest")
            #expect(!seen.contains(Self.unwantedBytes), "a group it did not add does not")

            // The frontend lifts the filter at run time: the backend re-samples the key.
            try await guest.connectXenStore().write(frontend.frontendPath + "/request-multicast-control", "0")
            try await eventually("every group floods again", seconds: 30) {
                try await Self.ping(world, "224.0.0.252")
                return try await frontend.destinations(within: 1).contains(Self.unwantedBytes)
            }
        }
    }

    @Test("the filter holds 64 addresses: the 65th add is answered ERROR, a delete makes room")
    func filterIsBounded() async throws {
        let filter = NetbackMulticastFilter()
        for n in 0..<64 { #expect(filter.add(NetifMACAddress(0x01, 0, 0x5E, 0, 1, UInt8(n)))) }
        #expect(!filter.add(NetifMACAddress(0x01, 0, 0x5E, 0, 2, 0)))
        #expect(filter.add(NetifMACAddress(0x01, 0, 0x5E, 0, 1, 7)), "an address already held is no new entry")
        filter.remove(NetifMACAddress(0x01, 0, 0x5E, 0, 1, 7))
        #expect(filter.add(NetifMACAddress(0x01, 0, 0x5E, 0, 2, 0)))
        filter.apply(true)
        let broadcast: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
        #expect(broadcast.withUnsafeBytes { filter.admits($0) }, "broadcast is not multicast filtering's")
        #expect(Self.unwantedBytes.withUnsafeBytes { !filter.admits($0) })
        filter.apply(false)
        #expect(Self.unwantedBytes.withUnsafeBytes { filter.admits($0) })
    }
}
