import Foundation
import Glibc
import NetBackend
import Netif
import SharedMemory
import Tap
import Testing
import XenBus
import XenLocal
import XenPlatform
import XenRing
import XenStore
import XenTesting

/// Hostile frontends against the net backend (io/netif.h, Protocols/netif-packets.md): each
/// case checks the outcome the backend gives the attacker (slots answered ERROR or NULL in
/// order, or the vif refused with an error node naming why), that a bystander guest on the
/// same backend keeps passing traffic, and that once the attacker is destroyed dom0 holds
/// nothing of it (asked of the hypervisor, not of the code under test).
@Suite("netback hostile frontends", .serialized)
struct NetbackHostileTests {
    // MARK: 1, 2, 3: chains and fragments

    @Test("a chain past the fatal bound refuses the vif; the bystander keeps passing traffic")
    func chainPastTheFatalBound() async throws {
        try await HostileArena.run { arena, hostile in
            // 24 slots chained with more_data: past the 20 that are answered ERROR.
            for slot in 0..<24 {
                try hostile.produce(NetifTxRequest(gref: hostile.frontend.data.refs[0], offset: 0,
                                                   flags: slot < 23 ? [.moreData] : [], id: UInt16(slot),
                                                   size: slot == 0 ? 2000 : 60))
            }
            try hostile.push()
            try await arena.expectRefused(hostile, .packet(.txChainTooLong(slots: 21, limit: 20)))
        }
    }

    @Test("a chain of 19 and one of 20 data slots (past the 18 served, within the fatal bound): every slot ERROR in order, the vif stays up")
    func chainInTheErrorBand() async throws {
        try await HostileArena.run { arena, hostile in
            var expected: [NetifTxResponse] = []
            var id: UInt16 = 0
            for slots in [19, 20] {
                for slot in 0..<slots {
                    try hostile.produce(NetifTxRequest(gref: hostile.frontend.data.refs[0], offset: 0,
                                                       flags: slot < slots - 1 ? [.moreData] : [], id: id,
                                                       size: slot == 0 ? UInt16(60 * slots) : 60))
                    expected.append(NetifTxResponse(id: id, status: .error))
                    id += 1
                }
            }
            try hostile.push()
            #expect(try await hostile.txResponses(expected.count) == expected)
            try await arena.expectServing(hostile)
        }
    }

    @Test("a checksum-blank frame whose headers do not parse, and a GSO extra on a UDP packet: answered DROPPED (extra NULL), the vif stays up")
    func unparsableOffloadIsDropped() async throws {
        try await HostileArena.run { arena, hostile in
            // An ARP frame claiming a blank checksum: there is no checksum to place.
            let arp = EthernetAddress.netbackVif.octets + hostile.mac + [0x08, 0x06] + [UInt8](repeating: 0, count: 46)
            hostile.write(arp, page: 0)
            try hostile.produce(NetifTxRequest(gref: hostile.frontend.data.refs[0], offset: 0, flags: [.checksumBlank],
                                               id: 5, size: UInt16(arp.count)))
            // TCP segmentation asked of a UDP datagram.
            let udp = TestFrames.udp(sourcePort: 1, destinationPort: 9, payload: [UInt8](repeating: 1, count: 100))
            let frame = EthernetAddress.netbackVif.octets + hostile.mac + TestFrames.etherTypeIPv4
                + TestFrames.ipv4(from: hostile.address, to: hostile.dom0Address, protocol: 17, payloadLength: udp.count) + udp
            hostile.write(frame, page: 1)
            try hostile.produce(NetifTxRequest(gref: hostile.frontend.data.refs[1], offset: 0,
                                               flags: [.extraInfo, .checksumBlank],
                                               id: 6, size: UInt16(frame.count)))
            try hostile.produceExtra(NetifExtraInfo(.gso(size: 1448, type: .tcpv4, features: 0)))
            try hostile.push()
            #expect(try await hostile.txResponses(3) == [NetifTxResponse(id: 5, status: .dropped),
                                                         NetifTxResponse(id: 6, status: .dropped),
                                                   NetifTxResponse(id: 0, status: .null)])
            try await arena.expectServing(hostile)
        }
    }

    @Test("a later fragment larger than the first slot's size: every slot ERROR (extras NULL) in order, the vif stays up")
    func laterFragmentLargerThanPacket() async throws {
        try await HostileArena.run { arena, hostile in
            let ref = hostile.frontend.data.refs[0]
            try hostile.produce(NetifTxRequest(gref: ref, offset: 0, flags: [.moreData, .extraInfo], id: 10, size: 100))
            try hostile.produceExtra(NetifExtraInfo(.gso(size: 1448, type: .tcpv4, features: 0)))
            try hostile.produce(NetifTxRequest(gref: ref, offset: 0, flags: [.moreData], id: 11, size: 60))
            try hostile.produce(NetifTxRequest(gref: ref, offset: 0, flags: [], id: 12, size: 200))
            try hostile.push()
            #expect(try await hostile.txResponses(4) == [
                NetifTxResponse(id: 10, status: .error), NetifTxResponse(id: 0, status: .null),
                NetifTxResponse(id: 11, status: .error), NetifTxResponse(id: 12, status: .error)])
            try await arena.expectServing(hostile)
        }
    }

    @Test("a first slot larger than its own page can hold (size minus the later fragments) refuses the vif")
    func firstSlotDataPastItsPage() async throws {
        try await HostileArena.run { arena, hostile in
            // 6000 bytes in all, 100 of them in the second slot: the first slot's own 5900
            // bytes cannot lie in one page.
            let ref = hostile.frontend.data.refs[0]
            try hostile.produce(NetifTxRequest(gref: ref, offset: 0, flags: [.moreData], id: 1, size: 6000))
            try hostile.produce(NetifTxRequest(gref: ref, offset: 0, flags: [], id: 2, size: 100))
            try hostile.push()
            try await arena.expectRefused(hostile, .packet(.pageRange(offset: 0, size: 5900, limit: 4096)))
        }
    }

    @Test("a single slot whose offset plus size runs past its page refuses the vif")
    func offsetPlusSizePastThePage() async throws {
        try await HostileArena.run { arena, hostile in
            try hostile.produce(NetifTxRequest(gref: hostile.frontend.data.refs[0], offset: 4000, flags: [], id: 1, size: 200))
            try hostile.push()
            try await arena.expectRefused(hostile, .packet(.pageRange(offset: 4000, size: 200, limit: 4096)))
        }
    }

    // MARK: 4, 5: extra-info slots

    @Test("an extra-info slot of an unknown type refuses the vif")
    func unknownExtraType() async throws {
        try await HostileArena.run { arena, hostile in
            try hostile.produce(hostile.firstOfExtras)
            try hostile.frontend.tx.produceRequest([9, 0, 0, 0, 0, 0, 0, 0])
            try hostile.push()
            try await arena.expectRefused(hostile, .packet(.unknownExtraType(9)))
        }
    }

    @Test("extra-info slots chained with XEN_NETIF_EXTRA_MORE over the whole ring refuse the vif at the first repeated type")
    func extraInfoChainedForever() async throws {
        try await HostileArena.run { arena, hostile in
            try hostile.produce(hostile.firstOfExtras)
            let kinds: [NetifExtraInfo.Kind] = [
                .gso(size: 1448, type: .tcpv4, features: 0), .multicastAdd(NetifMACAddress(0x01, 0, 0x5E, 0, 0, 1)),
                .multicastDelete(NetifMACAddress(0x01, 0, 0x5E, 0, 0, 2)), .hash(type: .ipv4, algorithm: .toeplitz, value: 7)]
            // Every slot left on the ring, each saying another follows.
            var index = 0
            while !hostile.frontend.tx.ring.isFull {
                try hostile.produceExtra(NetifExtraInfo(kinds[index % kinds.count], flags: .more))
                index += 1
            }
            try hostile.push()
            try await arena.expectRefused(hostile, .packet(.duplicateExtra(type: 1)))
        }
    }

    @Test("a GSO extra of segment size 0 refuses the vif")
    func gsoSizeZero() async throws {
        try await HostileArena.run { arena, hostile in
            try hostile.produce(hostile.firstOfExtras)
            try hostile.produceExtra(NetifExtraInfo(.gso(size: 0, type: .tcpv4, features: 0)))
            try hostile.push()
            try await arena.expectRefused(hostile, .packet(.gsoSize(value: 0, limit: 1...UInt16.max)))
        }
    }

    @Test("a GSO extra of an unknown GSO type refuses the vif")
    func unknownGSOType() async throws {
        try await HostileArena.run { arena, hostile in
            try hostile.produce(hostile.firstOfExtras)
            // type GSO, no flags, size 1448, gso type 7.
            try hostile.frontend.tx.produceRequest([1, 0, 0xA8, 0x05, 7, 0, 0, 0])
            try hostile.push()
            try await arena.expectRefused(hostile, .packet(.unknownGSOType(7)))
        }
    }

    // MARK: 6, 8: ring indices

    @Test("a tx req_prod far past the ring refuses the vif with a ring error")
    func txRequestProducerOverrun() async throws {
        try await HostileArena.run { arena, hostile in
            let tx = hostile.frontend.tx
            tx.shared.storeRequestProducer(100_000)
            try tx.eventChannel.notify(tx.port)
            try await arena.expectRefused(
                hostile, .ring(direction: .tx, .requestProducerOverrun(producer: 100_000, responsePrivate: 0,
                                                                       size: tx.ring.size)))
        }
    }

    @Test("an rx req_prod far past the ring refuses the vif with a ring error once dom0 has a packet for it")
    func rxRequestProducerOverrun() async throws {
        try await HostileArena.run { arena, hostile in
            let rx = hostile.frontend.rx
            rx.shared.storeRequestProducer(1_000_000)
            try rx.eventChannel.notify(rx.port)
            // The rx ring is looked at when there is something to deliver.
            try await arena.blast(to: hostile, count: 4)
            try await arena.expectRefused(
                hostile, .ring(direction: .rx, .requestProducerOverrun(producer: 1_000_000, responsePrivate: 0,
                                                                       size: rx.ring.size)))
        }
    }

    @Test("one rx request more than the ring holds refuses the vif")
    func rxRequestsPastTheRing() async throws {
        try await HostileArena.run { arena, hostile in
            let rx = hostile.frontend.rx
            // Eight buffers are posted and none answered: claim a ring's worth and one more.
            let claimed = rx.ring.size + 1
            rx.shared.storeRequestProducer(claimed)
            try rx.eventChannel.notify(rx.port)
            try await arena.blast(to: hostile, count: 4)
            try await arena.expectRefused(
                hostile, .ring(direction: .rx, .requestProducerOverrun(producer: claimed, responsePrivate: 0,
                                                                       size: rx.ring.size)))
        }
    }

    @Test("a refused vif is served again once its frontend starts over: Closed, Initialising, new rings")
    func refusedVifStartsOver() async throws {
        try await HostileArena.run { arena, hostile in
            let tx = hostile.frontend.tx
            tx.shared.storeRequestProducer(100_000)
            try tx.eventChannel.notify(tx.port)
            try await arena.expectRefused(
                hostile, .ring(direction: .tx, .requestProducerOverrun(producer: 100_000, responsePrivate: 0,
                                                                       size: tx.ring.size)))

            let store = arena.store, backend = hostile.frontend.backendPath, frontendPath = hostile.frontend.frontendPath
            try await hostile.frontend.store.write(frontendPath + "/state", String(XenbusState.closed.rawValue))
            try await eventually("\(backend) Closed") {
                (try? await store.readString(backend + "/state")) == String(XenbusState.closed.rawValue)
            }
            try await hostile.frontend.store.write(frontendPath + "/state", String(XenbusState.initialising.rawValue))
            try await eventually("\(backend) InitWait") {
                (try? await store.readString(backend + "/state")) == String(XenbusState.initWait.rawValue)
            }
            let again = try await arena.world.reconnect(hostile)
            #expect(try await again.echo(), "the new connection passes traffic")
        }
    }

    // MARK: 7: bad grants

    @Test("tx requests on a never-granted and on a revoked gref are answered ERROR; the vif stays up")
    func txBadGrants() async throws {
        try await HostileArena.run { arena, hostile in
            let revoked = try hostile.platform.grantTable.share(pages: 1, with: 0, writable: false)
            let revokedRef = revoked.refs[0]
            try hostile.platform.grantTable.endAccess(revoked)
            try hostile.produce(NetifTxRequest(gref: 0xFFF0, offset: 0, flags: [], id: 21, size: 60))
            try hostile.produce(NetifTxRequest(gref: revokedRef, offset: 0, flags: [], id: 22, size: 60))
            try hostile.push()
            #expect(try await hostile.txResponses(2)
                == [NetifTxResponse(id: 21, status: .error), NetifTxResponse(id: 22, status: .error)])
            try await arena.expectServing(hostile)
        }
    }

    @Test("more bad-gref tx packets in one push than the backend has buffers: every one answered ERROR, in order")
    func txBadGrantsPastTheBuffers() async throws {
        try await HostileArena.run { arena, hostile in
            // Answered without a TAP write, so no write completion brings the backend
            // back for the rest: it must go on by itself.
            let count = 3 * NetbackQueueConfiguration().txBuffers
            for id in 0..<count {
                try hostile.produce(NetifTxRequest(gref: 0xFFF0, offset: 0, flags: [], id: UInt16(id), size: 60))
            }
            try hostile.push()
            #expect(try await hostile.txResponses(count) == (0..<count).map { NetifTxResponse(id: UInt16($0), status: .error) })
            try await arena.expectServing(hostile)
        }
    }

    @Test("rx buffers on a never-granted and on a revoked gref are answered NETIF_RSP_ERROR in their slots; the vif stays up")
    func rxBadGrants() async throws {
        try await HostileArena.run(rxBuffers: false) { arena, hostile in
            let revoked = try hostile.platform.grantTable.share(pages: 1, with: 0, writable: true)
            let revokedRef = revoked.refs[0]
            try hostile.platform.grantTable.endAccess(revoked)
            let rx = hostile.frontend.rx
            try rx.produceRequest { NetifRxRequest(id: 100, gref: 0xFFF0).encode(into: $0, at: 0) }
            try rx.produceRequest { NetifRxRequest(id: 101, gref: revokedRef).encode(into: $0, at: 0) }
            try rx.pushRequestsAndNotify()
            try await arena.blast(to: hostile, count: 2)
            let answered = try await hostile.rxResponses(2)
            // A failed copy into the guest's buffer is the guest's loss: its slot says
            // NETIF_RSP_ERROR (as Linux's netback answers it) and the packet is gone.
            #expect(answered.map(\.id) == [100, 101])
            #expect(answered.allSatisfy { $0.error == .error && $0.flags.isDisjoint(with: [.moreData, .extraInfo]) },
                    "\(answered)")
            // Good buffers from now on: the vif still delivers.
            hostile.postRxBuffers()
            try await arena.expectServing(hostile)
        }
    }

    // MARK: 9, 10: starvation and floods

    @Test("a guest that never posts rx buffers while dom0 floods it: memory stays bounded, the kernel drops, others are served")
    func rxStarvation() async throws {
        try await HostileArena.run(rxBuffers: false) { arena, hostile in
            let interface = "vif\(hostile.domain).0"
            // Warm up first, so the figures compare steady states.
            try await arena.blast(to: hostile, count: 2000)
            #expect(try await arena.bystander.echo())
            let before = try Self.residentKiB()
            let droppedBefore = try arena.tapDropped(interface)
            for _ in 0..<5 {
                try await arena.blast(to: hostile, count: 10_000)
                #expect(try await arena.bystander.echo(), "the bystander is served during the flood")
            }
            let after = try Self.residentKiB()
            let droppedAfter = try arena.tapDropped(interface)
            // 50 000 datagrams of 1400 bytes (70 MB) went to a guest that takes none: the
            // backend holds its few buffers' worth, the TAP queue drops the rest.
            #expect(after - before < 8 * 1024, "RSS grew from \(before) KiB to \(after) KiB")
            #expect(droppedAfter - droppedBefore > 40_000, "the kernel dropped \(droppedAfter - droppedBefore)")
            #expect(hostile.frontend.rx.shared.loadResponseProducer() == 0, "nothing was answered on an empty ring")
            // Buffers at last: it is served again.
            hostile.postRxBuffers()
            try await arena.expectServing(hostile)
        }
    }

    @Test("an event flood on the tx and rx ports with nothing published: no crash, the bystander and the flooder are served")
    func eventFlood() async throws {
        try await HostileArena.run { arena, hostile in
            let tx = hostile.frontend.tx, rx = hostile.frontend.rx
            async let flooded: String? = offThePool {
                do {
                    for _ in 0..<100_000 {
                        try tx.eventChannel.notify(tx.port)
                        try rx.eventChannel.notify(rx.port)
                    }
                    return nil
                } catch { return "\(error)" }
            }
            var echoes: [Bool] = []
            for _ in 0..<10 { echoes.append((try? await arena.bystander.echo()) ?? false) }
            let floodError = try await flooded
            #expect(floodError == nil)
            #expect(echoes.allSatisfy { $0 }, "bystander echoes during the flood: \(echoes)")
            try await arena.expectServing(hostile)
        }
    }

    // MARK: Partial publication

    @Test("a tx chain published in two pushes is served once its last slot is pushed (the backend asked to be notified)")
    func txChainInTwoPushes() async throws {
        try await HostileArena.run { arena, hostile in
            let data = hostile.frontend.data
            // A runt (answered ERROR, no TAP write) shows when the backend has looked at the
            // ring; the chain after it has only its first slot published.
            try hostile.produce(NetifTxRequest(gref: data.refs[0], offset: 0, flags: [], id: 1, size: 10))
            let (frame, sequence) = hostile.echoFrame()
            let split = 58
            hostile.write(Array(frame[..<split]), page: 0)
            hostile.write(Array(frame[split...]), page: 1)
            try hostile.produce(NetifTxRequest(gref: data.refs[0], offset: 0, flags: [.moreData], id: 2,
                                               size: UInt16(frame.count)))
            try hostile.push()
            #expect(try await hostile.txResponses(1) == [NetifTxResponse(id: 1, status: .error)])
            try hostile.produce(NetifTxRequest(gref: data.refs[1], offset: 0, flags: [], id: 3,
                                               size: UInt16(frame.count - split)))
            try hostile.push()
            #expect(try await hostile.txResponses(2, seconds: 10)
                == [NetifTxResponse(id: 2, status: .okay), NetifTxResponse(id: 3, status: .okay)])
            #expect(try await hostile.awaitEchoReply(sequence: sequence), "the reassembled echo request was answered")
        }
    }

    @Test("a packet needing two rx buffers waits while one is posted and is delivered when the second is")
    func rxBuffersPostedOneByOne() async throws {
        var features = NetifFrontendFeatures()
        features.requestRxCopy = true
        features.scatterGather = true
        try await HostileArena.run(rxBuffers: false, mtu: 9000, features: features) { arena, hostile in
            let rx = hostile.frontend.rx
            func post(_ id: UInt16) throws {
                try rx.produceRequest {
                    NetifRxRequest(id: id, gref: hostile.frontend.data.refs[RawNetfront.rxPages.lowerBound + Int(id)])
                        .encode(into: $0, at: 0)
                }
                try rx.pushRequestsAndNotify()
            }
            // One buffer, one small packet: delivered.
            try post(0)
            try await arena.blast(to: hostile, count: 1, size: 100)
            #expect(try await hostile.rxResponses(1).map(\.size) == [142])
            // A packet of two pages with no buffer posted: the backend asks for a notification.
            try await arena.blast(to: hostile, count: 1, size: 6000)
            try await eventually("the backend waits for rx buffers") {
                rx.shared.loadRequestEvent() == rx.ring.requestProducerPrivate &+ 1
            }
            try post(1)
            // Still one short: it must ask to hear of the next post, not the one it has.
            try await eventually("the backend waits for one more rx buffer", seconds: 10) {
                rx.shared.loadRequestEvent() == rx.ring.requestProducerPrivate &+ 1
            }
            try post(2)
            let responses = try await hostile.rxResponses(2, seconds: 10)
            #expect(responses.map(\.id) == [1, 2])
            #expect(responses.map(\.size) == [4096, 6042 - 4096])
            #expect(responses[0].flags.contains(.moreData) && !responses[1].flags.contains(.moreData))
        }
    }

    // MARK: Helpers

    static func residentKiB() throws -> Int {
        let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") else {
            throw NetTestError("no VmRSS in /proc/self/status")
        }
        return kib
    }
}

/// A guest on the net backend with its own vif, subnet and MAC, driven through a
/// ``RawNetfront``: it echoes to dom0's kernel, and it is the hostile one's handle too.
final class NetGuest: @unchecked Sendable {
    let name: String
    let domain: DomainID
    let platform: LocalPlatform
    let frontend: RawNetfront
    let mac: [UInt8]
    let address: [UInt8]
    let dom0Address: [UInt8]
    var sequence: UInt16 = 0
    var nextTxID: UInt16 = 0x100

    init(name: String, domain: DomainID, platform: LocalPlatform, frontend: RawNetfront, subnet: UInt8) {
        self.name = name
        self.domain = domain
        self.platform = platform
        self.frontend = frontend
        mac = [0x00, 0x16, 0x3E, 0x00, 0x00, subnet]
        address = [198, 18, subnet, 2]
        dom0Address = [198, 18, subnet, 1]
    }

    /// A 60-byte packet's only request, saying extra-info slots follow.
    var firstOfExtras: NetifTxRequest {
        NetifTxRequest(gref: frontend.data.refs[0], offset: 0, flags: [.extraInfo], id: 1, size: 60)
    }

    func produce(_ request: NetifTxRequest) throws {
        try frontend.tx.produceRequest { request.encode(into: $0, at: 0) }
    }

    func produceExtra(_ extra: NetifExtraInfo) throws {
        try frontend.tx.produceRequest { slot in
            slot.fill(0, at: 0, length: slot.count)
            extra.encode(into: slot, at: 0)
        }
    }

    func push() throws { try frontend.tx.pushRequestsAndNotify() }

    /// The next `count` tx responses, waiting up to `seconds`.
    func txResponses(_ count: Int, seconds: Double = 20) async throws -> [NetifTxResponse] {
        try await offThePool { [self] in try txResponsesBlocking(count, seconds: seconds) }
    }

    func txResponsesBlocking(_ count: Int, seconds: Double) throws -> [NetifTxResponse] {
        var out: [NetifTxResponse] = []
        let deadline = ContinuousClock.now + .seconds(seconds)
        while out.count < count {
            try frontend.tx.consumeResponses { view in
                if let response = try? NetifTxResponse.decode(from: view, at: 0) { out.append(response) }
            }
            guard out.count < count else { break }
            guard ContinuousClock.now < deadline else { throw NetTestError("\(name): \(out.count) of \(count) tx responses") }
            if try !frontend.tx.finalCheckForResponses() { try Self.wait(frontend.tx) }
        }
        return out
    }

    /// The next `count` rx responses (any status), waiting up to `seconds`; the buffers
    /// are not posted again.
    func rxResponses(_ count: Int, seconds: Double = 20) async throws -> [NetifRxResponse] {
        try await offThePool { [self] in try rxResponsesBlocking(count, seconds: seconds) }
    }

    func rxResponsesBlocking(_ count: Int, seconds: Double) throws -> [NetifRxResponse] {
        var out: [NetifRxResponse] = []
        let deadline = ContinuousClock.now + .seconds(seconds)
        while out.count < count {
            try frontend.rx.consumeResponses { view in
                if let response = try? NetifRxResponse.decode(from: view, at: 0) { out.append(response) }
            }
            guard out.count < count else { break }
            guard ContinuousClock.now < deadline else { throw NetTestError("\(name): \(out.count) of \(count) rx responses") }
            if try !frontend.rx.finalCheckForResponses() { try Self.wait(frontend.rx) }
        }
        return out
    }

    /// Posts every rx page (ids 0..<8, as ``RawNetfront`` numbers them) that fits.
    func postRxBuffers() {
        for (id, page) in RawNetfront.rxPages.enumerated() where !frontend.rx.ring.isFull {
            try? frontend.rx.produceRequest {
                NetifRxRequest(id: UInt16(id), gref: self.frontend.data.refs[page]).encode(into: $0, at: 0)
            }
        }
        _ = try? frontend.rx.pushRequestsAndNotify()
    }

    /// An ICMP echo request from the guest to dom0's address on its vif, and its sequence.
    func echoFrame() -> ([UInt8], UInt16) {
        sequence &+= 1
        let icmp = TestFrames.echoRequest(identifier: UInt16(domain), sequence: sequence, payload: (0..<56).map { UInt8($0) })
        let frame = EthernetAddress.netbackVif.octets + mac + TestFrames.etherTypeIPv4
            + TestFrames.ipv4(from: address, to: dom0Address, protocol: 1, payloadLength: icmp.count) + icmp
        return (frame, sequence)
    }

    /// Writes `bytes` at the start of tx data page `page`.
    func write(_ bytes: [UInt8], page: Int) {
        let base = frontend.data.view.baseAddress + page * 4096
        bytes.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }

    /// Sends an echo request and waits for the reply, sending it again every 2 s as ping
    /// does (a carrier coming back drops what the kernel routed meanwhile). False if no
    /// reply came within `seconds`.
    func echo(seconds: Double = 20) async throws -> Bool {
        try await offThePool { [self] in
            let (frame, sequence) = echoFrame()
            let deadline = ContinuousClock.now + .seconds(seconds)
            repeat {
                nextTxID &+= 1
                try frontend.send(frame, id: nextTxID)
                if try awaitEchoReplyBlocking(sequence: sequence, seconds: 2) { return true }
            } while ContinuousClock.now < deadline
            return false
        }
    }

    func awaitEchoReply(sequence: UInt16, seconds: Double = 20) async throws -> Bool {
        try await offThePool { [self] in try awaitEchoReplyBlocking(sequence: sequence, seconds: seconds) }
    }

    /// Waits (blocking) for dom0's echo reply to `sequence`, posting each rx buffer again once read
    /// and draining tx responses (so neither ring fills). False if none came in `seconds`.
    func awaitEchoReplyBlocking(sequence: UInt16, seconds: Double) throws -> Bool {
        let identifier = UInt16(domain)
        let deadline = ContinuousClock.now + .seconds(seconds)
        var replied = false
        while !replied {
            try frontend.tx.consumeResponses { _ in }
            var reposts: [UInt16] = []
            try frontend.rx.consumeResponses { view in
                guard let response = try? NetifRxResponse.decode(from: view, at: 0),
                      !response.flags.contains(.extraInfo) || response.size != nil else { return }
                let page = RawNetfront.rxPages.lowerBound + Int(response.id)
                guard RawNetfront.rxPages.contains(page) else { return }
                reposts.append(response.id)
                guard let size = response.size, size >= 42 else { return }
                let bytes = Array(UnsafeRawBufferPointer(start: frontend.data.view.baseAddress + page * 4096
                                                             + Int(response.offset), count: size))
                if bytes[12] == 0x08, bytes[13] == 0x00, bytes[23] == 1, bytes[34] == 0,
                   TestFrames.u16(bytes, 38) == identifier, TestFrames.u16(bytes, 40) == sequence,
                   Array(bytes[26..<30]) == dom0Address, Array(bytes[30..<34]) == address {
                    replied = true
                }
            }
            for id in reposts {
                try frontend.rx.produceRequest {
                    NetifRxRequest(id: id, gref: self.frontend.data.refs[RawNetfront.rxPages.lowerBound + Int(id)])
                        .encode(into: $0, at: 0)
                }
            }
            if !reposts.isEmpty { try frontend.rx.pushRequestsAndNotify() }
            guard !replied else { break }
            guard ContinuousClock.now < deadline else { return false }
            if try !frontend.rx.finalCheckForResponses() { try Self.wait(frontend.rx, milliseconds: 20) }
        }
        return true
    }

    /// Waits up to `milliseconds` for the peer's port, taking the event if it came.
    static func wait(_ peer: MockRingPeer.Frontend, milliseconds: Int32 = 100) throws {
        var poller = pollfd(fd: peer.eventChannel.fileDescriptor, events: Int16(POLLIN), revents: 0)
        if poll(&poller, 1, milliseconds) > 0 { _ = try peer.waitForEvent() }
    }
}

/// One net world with a bystander guest passing traffic, and a hostile guest made for
/// the case; ``run(rxBuffers:_:)`` does the common checks after the attack.
struct HostileArena {
    let world: NetWorld
    let bystander: NetGuest
    let store: XenStoreClient

    static let bystanderSubnet: UInt8 = 7
    static let hostileSubnet: UInt8 = 5

    /// Runs `attack` against a hostile guest (its vif connected, its rx buffers posted if
    /// `rxBuffers`; its vif's MTU and features as given), then checks the bystander is
    /// still served, destroys the hostile guest and checks dom0 holds nothing of it.
    static func run(rxBuffers: Bool = true, mtu: Int? = nil, features: NetifFrontendFeatures? = nil,
                    limits: NetbackDeviceLimits = NetbackDeviceLimits(), queues: Int = 1, controlRing: Bool = false,
                    _ attack: (HostileArena, NetGuest) async throws -> Void) async throws {
        let world = try NetWorld(limits: limits)
        do {
            // No IPv6 on dom0's side: only the packets a case sends reach a guest.
            _ = try TestCommand.run("/usr/sbin/ip", ["netns", "exec", world.namespace.name, "sysctl", "-qw",
                                                     "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])
            let arena = HostileArena(world: world, bystander: try await world.netGuest("bystander", subnet: bystanderSubnet),
                                     store: try world.dom0.connectXenStore())
            #expect(try await arena.bystander.echo(), "the bystander is served before the attack")
            let baseline = try world.dom0.domainUsage()[0]

            let hostile = try await world.netGuest("hostile", subnet: hostileSubnet, postRxBuffers: rxBuffers, mtu: mtu,
                                                  features: features, queues: queues, controlRing: controlRing)
            try await attack(arena, hostile)

            for _ in 0..<3 { #expect(try await arena.bystander.echo(), "the bystander is served after the attack") }
            try await world.toolstack.destroy(name: hostile.name, hotplug: .none)
            let backend = hostile.frontend.backendPath, interface = "vif\(hostile.domain).0"
            try await eventually("the hostile vif released") {
                try world.daemon.connectedDevices[backend] == nil && !world.namespace.hasLink(interface)
            }
            try await eventually("dom0 holds no grant mapping, port or copy buffer of the hostile guest") {
                let now = try world.dom0.domainUsage()[0]
                return now?.mappingsHeld == baseline?.mappingsHeld && now?.ports == baseline?.ports
                    && now?.copyBufferPages == baseline?.copyBufferPages
            }
            #expect(try await arena.bystander.echo(), "the bystander is served after the hostile guest is gone")
            #expect(world.daemon.connectedDevices[arena.bystander.frontend.backendPath] == true)
            arena.store.close()
        } catch {
            await world.stop()
            throw error
        }
        await world.stop()
    }

    /// The vif is refused for `reason`: backend Closing, the error node naming it, the
    /// queue gone and the rings unmapped.
    func expectRefused(_ guest: NetGuest, _ reason: NetbackError) async throws {
        let backend = guest.frontend.backendPath, store = self.store
        try await eventually("\(backend) refused") {
            (try? await store.readString(backend + "/state")) == String(XenbusState.closing.rawValue)
        }
        let node = "/local/domain/0/error/" + backend.dropFirst("/local/domain/0/".count) + "/error"
        let error = try await store.readString(node)
        #expect(error.hasSuffix(reason.description), "error node: \(error)")
        #expect(world.daemon.connectedDevices[backend] == false)
        let dom0 = world.dom0, domain = guest.domain
        try await eventually("the refused vif's rings unmapped") { try dom0.domainUsage()[domain]?.pinnedGrants == 0 }
    }

    /// The vif is still Connected and passes an echo both ways.
    func expectServing(_ guest: NetGuest) async throws {
        let backend = guest.frontend.backendPath
        #expect(try await store.readString(backend + "/state") == String(XenbusState.connected.rawValue))
        #expect(try await guest.echo(), "\(guest.name) still passes traffic")
    }

    /// Sends `count` UDP datagrams of `size` bytes from dom0's side to `guest`'s address,
    /// spread round-robin over `flows` sockets (each its own source port, so its own flow).
    func blast(to guest: NetGuest, count: Int, size: Int = 1400, flows: Int = 1) async throws {
        let destination = guest.address, namespace = world.namespace.namespace
        let sent = try await offThePool { try namespace.run { () -> Int in
            let fds = (0..<flows).map { _ in socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0) }
            guard fds.allSatisfy({ $0 >= 0 }) else { return -1 }
            defer { for fd in fds { close(fd) } }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = UInt16(9).bigEndian
            address.sin_addr.s_addr = destination.withUnsafeBytes { $0.load(as: UInt32.self) }
            let payload = [UInt8](repeating: 0x5A, count: size)
            var sent = 0
            for index in 0..<count {
                let fd = fds[index % fds.count]
                let n = withUnsafePointer(to: &address) { pointer in
                    pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(fd, payload, payload.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
                if n == payload.count { sent += 1 }
            }
            return sent
        }.get() }
        guard sent == count else { throw NetTestError("sent \(sent) of \(count) datagrams to \(destination)") }
    }

    /// The TAP device's tx_dropped counter: packets the kernel dropped on their way to netback.
    func tapDropped(_ interface: String) throws -> Int {
        let text = try world.namespace.readSysfs("/sys/class/net/\(interface)/statistics/tx_dropped")
        guard let value = Int(text) else { throw NetTestError("tx_dropped of \(interface): \(text)") }
        return value
    }
}

extension NetWorld {
    /// A new ``RawNetfront`` (new rings and ports) for `guest`'s vif, connected with rx
    /// buffers posted, once the backend waits in InitWait again.
    func reconnect(_ guest: NetGuest, controlRing: Bool = false) async throws -> NetGuest {
        let frontend = try RawNetfront(guest.platform, domain: guest.domain, controlRing: controlRing)
        var features = NetifFrontendFeatures()
        features.requestRxCopy = true
        try await frontend.connect(features: features)
        try await waitUntilUp(guest.domain)
        return NetGuest(name: guest.name, domain: guest.domain, platform: guest.platform, frontend: frontend,
                        subnet: guest.address[2])
    }

    /// Waits for vifDOMAIN.0 to be operationally up: the kernel takes the carrier up in
    /// its link-watch work, up to a second after netback set it, and drops what it routes
    /// to the vif until then.
    func waitUntilUp(_ domain: DomainID) async throws {
        let interface = "vif\(domain).0"
        try await eventually("\(interface) operationally up") { [self] in
            try namespace.readSysfs("/sys/class/net/\(interface)/operstate") == "up"
        }
    }

    /// Creates guest `name` with one vif on its own subnet 198.18.`subnet`.0/24 (dom0 .1,
    /// the guest .2, MAC 00:16:3e:00:00:`subnet`, the MTU given), plugs it and connects a
    /// ``RawNetfront`` (rx-copy alone unless `features` say more), with or without rx
    /// buffers posted.
    func netGuest(_ name: String, subnet: UInt8, postRxBuffers: Bool = true, mtu: Int? = nil,
                  features given: NetifFrontendFeatures? = nil, queues: Int = 1,
                  controlRing: Bool = false) async throws -> NetGuest {
        let mac = String(format: "00:16:3e:00:00:%02x", subnet)
        let spec = try VifSpec(parsing: "mac=\(mac),bridge=none" + (mtu.map { ",mtu=\($0)" } ?? ""))
        let domain = try await toolstack.createDomain(name: name, disks: [], nics: [spec], hotplug: .none)
        let platform = try LocalPlatform(stateDirectory: directory, domain: name)
        let frontend = try RawNetfront(platform, domain: domain, queues: queues, controlRing: controlRing)
        try await plug(domain: domain, address: "198.18.\(subnet).1", guestAddress: "198.18.\(subnet).2", guestMAC: mac)
        var features = NetifFrontendFeatures()
        features.requestRxCopy = true
        try await frontend.connect(features: given ?? features, rxBuffers: postRxBuffers ? RawNetfront.rxPages.count : 0)
        try await waitUntilUp(domain)
        return NetGuest(name: name, domain: domain, platform: platform, frontend: frontend, subnet: subnet)
    }
}
