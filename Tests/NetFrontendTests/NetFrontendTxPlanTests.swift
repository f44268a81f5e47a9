import Netif
import SharedMemory
import Tap
import Testing
@testable import NetFrontend

/// Frames from the TAP device as tx chains: sizes, flags, pages, the virtio-net header's
/// checksum and GSO, and the checksum finished here when the backend would not.
struct NetFrontendTxPlanTests {
    static func backend(sg: Bool = true, gso4: Bool = true, gso6: Bool = true, ipv6Csum: Bool = true) -> NetifBackendFeatures {
        var features = NetifBackendFeatures()
        features.rxCopy = true
        features.scatterGather = sg
        features.gsoTCPv4 = gso4
        features.gsoTCPv6 = gso6
        features.ipv6ChecksumOffload = ipv6Csum
        return features
    }

    func plan(_ header: VirtioNetHeader, _ frame: inout [UInt8], _ backend: NetifBackendFeatures) throws -> NetFrontendTxPlan {
        try frame.withUnsafeMutableBytes { bytes in
            try NetFrontendTxPlan(header: header, frame: bytes, backend: backend)
        }
    }

    @Test func smallFrameIsOneSlotWithTheWholeLength() throws {
        var frame = Frames.udp4(payload: Frames.payload(100))
        let plan = try plan(VirtioNetHeader(), &frame, Self.backend())
        #expect(plan.fragmentCount == 1 && plan.slotCount == 1)
        let request = plan.request(0, gref: 77, id: 3)
        #expect(request == NetifTxRequest(gref: 77, offset: 0, flags: [], id: 3, size: UInt16(frame.count)))
    }

    @Test func largeFrameCrossesPagesWithMoreDataOnAllButTheLast() throws {
        var frame = Frames.udp4(payload: Frames.payload(9000))
        let plan = try plan(VirtioNetHeader(flags: .dataValid), &frame, Self.backend())
        #expect(plan.fragmentCount == 3)
        #expect(plan.fragment(0) == 0 ..< 4096 && plan.fragment(1) == 4096 ..< 8192 && plan.fragment(2) == 8192 ..< frame.count)
        let requests = (0 ..< 3).map { plan.request($0, gref: UInt32(10 + $0), id: UInt16($0)) }
        #expect(requests.map(\.size) == [UInt16(frame.count), 4096, UInt16(frame.count - 8192)])
        #expect(requests.map(\.flags) == [[.dataValidated, .moreData], [.moreData], []])
    }

    @Test func exactlyOnePageIsOneSlot() throws {
        var frame = Frames.udp4(payload: Frames.payload(4096 - 42))
        #expect(frame.count == 4096)
        #expect(try plan(VirtioNetHeader(), &frame, Self.backend()).fragmentCount == 1)
    }

    @Test func partialChecksumIsLeftBlankForABackendThatFinishesIt() throws {
        var frame = Frames.udp4(payload: Frames.payload(300))
        let header = try Frames.makePartial(&frame)
        let before = frame
        let plan = try plan(header, &frame, Self.backend())
        #expect(plan.flags == [.checksumBlank, .dataValidated])
        #expect(frame == before)
    }

    @Test func ipv6PartialChecksumIsFinishedHereWithoutIPv6Offload() throws {
        var frame = Frames.tcp6(payload: Frames.payload(501))
        let header = try Frames.makePartial(&frame)
        #expect(try !Frames.checksumVerifies(frame))
        let plan = try plan(header, &frame, Self.backend(ipv6Csum: false))
        #expect(plan.flags == [.dataValidated])
        #expect(try Frames.checksumVerifies(frame))
        var offloaded = Frames.tcp6(payload: Frames.payload(501))
        let offloadedHeader = try Frames.makePartial(&offloaded)
        #expect(try self.plan(offloadedHeader, &offloaded, Self.backend()).flags == [.checksumBlank, .dataValidated])
    }

    @Test func gsoFrameGetsAnExtraInfoSlot() throws {
        var frame = Frames.tcp4(payload: Frames.payload(20_000))
        var header = try Frames.makePartial(&frame)
        header.gsoType = .tcpv4
        header.gsoSize = 1448
        header.headerLength = 54
        let plan = try plan(header, &frame, Self.backend())
        #expect(plan.gso == NetifExtraInfo(.gso(size: 1448, type: .tcpv4, features: 0)))
        #expect(plan.flags == [.checksumBlank, .dataValidated, .extraInfo])
        #expect(plan.fragmentCount == 5 && plan.slotCount == 6)
        #expect(plan.request(0, gref: 1, id: 0).flags == [.checksumBlank, .dataValidated, .extraInfo, .moreData])
        #expect(plan.request(4, gref: 1, id: 0).flags == [])
    }

    @Test func gsoTheBackendDoesNotTakeIsRefused() throws {
        var frame = Frames.tcp6(payload: Frames.payload(5000))
        var header = try Frames.makePartial(&frame)
        header.gsoType = .tcpv6
        header.gsoSize = 1428
        #expect(throws: NetFrontendError.gsoNotOffered(.tcpv6)) { try plan(header, &frame, Self.backend(gso6: false)) }
        header.gsoType = .udp
        #expect(throws: NetFrontendError.gsoNotOffered(.udp)) { try plan(header, &frame, Self.backend()) }
    }

    @Test func sizesOutsideTheLimitsAreRefused() throws {
        var big = Frames.udp4(payload: Frames.payload(5000))
        #expect(throws: NetFrontendError.frameTooLarge(length: big.count, limit: pageSize)) {
            try plan(VirtioNetHeader(), &big, Self.backend(sg: false))
        }
        var huge = [UInt8](repeating: 0, count: 65_536)
        #expect(throws: NetFrontendError.frameTooLarge(length: 65_536, limit: 65_535)) {
            try plan(VirtioNetHeader(), &huge, Self.backend())
        }
        var runt = [UInt8](repeating: 0, count: 13)
        #expect(throws: NetFrontendError.frameTooShort(length: 13)) { try plan(VirtioNetHeader(), &runt, Self.backend()) }
    }

    @Test func tapOffloadsAreExactlyWhatTheBackendTakes() {
        let vif = NetifVifSettings(mac: NetifMACAddress(0, 0x16, 0x3E, 1, 2, 3))
        #expect(NetFrontendLink(backend: Self.backend(), vif: vif).tapOffloads == [.checksum, .tso4, .tso6])
        #expect(NetFrontendLink(backend: Self.backend(ipv6Csum: false), vif: vif).tapOffloads == [.checksum, .tso4])
        #expect(NetFrontendLink(backend: Self.backend(sg: false), vif: vif).tapOffloads == [.checksum])
        #expect(NetFrontendLink(backend: Self.backend(sg: false), vif: NetifVifSettings(mac: vif.mac, mtu: 9000)).mtu == 1500)
        #expect(NetFrontendLink(backend: Self.backend(), vif: NetifVifSettings(mac: vif.mac, mtu: 9000)).mtu == 9000)
    }
}
