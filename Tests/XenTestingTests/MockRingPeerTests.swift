import Foundation
import SharedMemory
import Testing
import XenPlatform
import XenRing
import XenTesting

/// The scripted ring ends over the in-process platform: set up as real drivers do, raw
/// entries both ways, misuse as typed errors, and a long two-thread exchange.
@Suite struct MockRingPeerTests {
    /// io/blkif.h: sizeof(union blkif_sring_entry) on x86_64: 32 slots in one page.
    static let entrySize = 112

    @Test func setUpAsAFrontendDoes() throws {
        let w = try World()
        let (front, back) = try MockRingPeer.connect(frontend: w.guest1, backend: w.dom0, pages: 2, entrySize: Self.entrySize)
        #expect(front.connection.frontendDomain == w.guest1.domainID)
        #expect(front.connection.refs == front.pages.refs)
        #expect(front.pages.refs.count == 2)
        #expect(front.ring.size == 64, "two pages of 112-byte slots round down to 64")
        #expect(back.ring.size == 64)
        // SHARED_RING_INIT: producers 0, event indices 1, seen through the backend's mapping.
        #expect(back.shared.loadRequestProducer() == 0)
        #expect(back.shared.loadRequestEvent() == 1)
        #expect(back.shared.loadResponseEvent() == 1)
        #expect(w.hypervisor.peer(of: front.port, domain: w.guest1.domainID)! == (.dom0, back.port))
        for ref in front.pages.refs {
            #expect(w.hypervisor.grantFlags(domain: w.guest1.domainID, ref: ref) == [.permitAccess, .reading, .writing])
        }
        try back.close()
        try front.close()
        #expect(w.hypervisor.openPorts(of: w.guest1.domainID).isEmpty)
        #expect(w.hypervisor.liveMappings == 0)
    }

    @Test func rawRequestsAndResponsesTravelWithNotifications() throws {
        let w = try World()
        let (front, back) = try MockRingPeer.connect(frontend: w.guest1, backend: w.dom0, entrySize: Self.entrySize)
        #expect(try back.waitForEvent() == back.port, "bind leaves the backend's port pending")
        let requests: [[UInt8]] = [[1, 2, 3], Array(repeating: 0xEE, count: Self.entrySize), [9]]
        for r in requests { try front.produceRequest(r) }
        #expect(try front.pushRequestsAndNotify(), "req_event starts at 1, so the first push notifies")
        #expect(try back.waitForEvent() == back.port)
        let seen = try back.takeRequests()
        #expect(seen.count == 3)
        for (s, r) in zip(seen, requests) {
            #expect(s.count == Self.entrySize)
            #expect(Array(s.prefix(r.count)) == r)
            #expect(s.dropFirst(r.count).allSatisfy { $0 == 0 }, "the rest of the slot is zero")
        }
        #expect(try !back.finalCheckForRequests())
        try back.produceResponse([0xA1])
        try back.produceResponse([0xA2])
        #expect(try back.pushResponsesAndNotify())
        #expect(try front.waitForEvent() == front.port)
        #expect(try front.takeResponses().map { $0[0] } == [0xA1, 0xA2])
        try back.produceResponse([0xA3])
        #expect(try !back.pushResponsesAndNotify(), "the frontend has not asked again (rsp_event)")
        #expect(try front.finalCheckForResponses())
        #expect(try front.takeResponses().map { $0[0] } == [0xA3])
        #expect(w.hypervisor.notificationCount(domain: w.guest1.domainID, port: front.port) == 1)
        #expect(w.hypervisor.notificationCount(domain: .dom0, port: back.port) == 1)
    }

    @Test func misuseIsATypedError() throws {
        let w = try World()
        let (front, back) = try MockRingPeer.connect(frontend: w.guest1, backend: w.dom0, entrySize: Self.entrySize)
        #expect(throws: XenTestingError.entryTooLarge(bytes: Self.entrySize + 1, entrySize: Self.entrySize)) {
            try front.produceRequest([UInt8](repeating: 0, count: Self.entrySize + 1))
        }
        #expect(throws: XenTestingError.noRequestToAnswer(responseProducer: 0, requestConsumer: 0)) {
            try back.produceResponse([1])
        }
        for _ in 0 ..< 32 { try front.produceRequest([0]) }
        #expect(throws: XenTestingError.ringFull(size: 32)) { try front.produceRequest([0]) }
        #expect(throws: XenTestingError.ring(.badPageCount(17))) {
            _ = try MockRingPeer.Frontend(platform: w.guest2, backendDomain: .dom0, pages: 17, entrySize: Self.entrySize)
        }
        let next = try w.guest2.share(pages: 1, with: .dom0, writable: true)
        #expect(next.refs == [8], "the refused ring's pages were given back")
    }

    @Test func aLyingFrontendIsCaughtByTheBackend() throws {
        let w = try World()
        let (front, back) = try MockRingPeer.connect(frontend: w.guest1, backend: w.dom0, entrySize: Self.entrySize)
        front.shared.storeRequestProducer(1000)
        #expect(throws: XenTestingError.ring(.requestProducerOverrun(producer: 1000, responsePrivate: 0, size: 32))) {
            try back.consumeRequests { _ in }
        }
    }

    @Test func aLyingBackendIsCaughtByTheFrontend() throws {
        let w = try World()
        let (front, back) = try MockRingPeer.connect(frontend: w.guest1, backend: w.dom0, entrySize: Self.entrySize)
        try front.produceRequest([1])
        try front.pushRequestsAndNotify()
        back.shared.storeResponseProducer(5)
        #expect(throws: XenTestingError.ring(.responseProducerOverrun(producer: 5, consumer: 0, outstanding: 1))) {
            try front.consumeResponses { _ in }
        }
    }

    @Test func theFrontendCannotRevokeTheRingWhileTheBackendMapsIt() throws {
        let w = try World()
        let (front, back) = try MockRingPeer.connect(frontend: w.guest1, backend: w.dom0, entrySize: Self.entrySize)
        #expect(throws: XenTestingError.platform(.grantBusy(ref: front.pages.refs[0]))) { try front.close() }
        try back.close()
        try front.close()
    }

    @Test func setUpFailuresSurfaceAsPlatformErrors() throws {
        let w = try World()
        let front = try MockRingPeer.Frontend(platform: w.guest1, backendDomain: .dom0, entrySize: Self.entrySize)
        w.hypervisor.inject(.map(granter: w.guest1.domainID, ref: front.pages.refs[0], status: .noDeviceSpace))
        var thrown: XenTestingError?
        do { _ = try MockRingPeer.Backend(platform: w.dom0, connection: front.connection, entrySize: Self.entrySize) } catch { thrown = error }
        guard case let .platform(.grant(status, _, _, _)) = thrown else {
            Issue.record("expected a grant error, got \(String(describing: thrown))")
            return
        }
        #expect(status == .noDeviceSpace)
        // A backend in the wrong domain cannot map the ring at all.
        do { _ = try MockRingPeer.Backend(platform: w.guest2, connection: front.connection, entrySize: Self.entrySize) } catch { thrown = error }
        guard case let .platform(.grant(status2, _, _, _)) = thrown else {
            Issue.record("expected a grant error, got \(String(describing: thrown))")
            return
        }
        #expect(status2 == .generalError)
        w.hypervisor.inject(.bind(domain: .dom0, errno: EBUSY))
        #expect(throws: XenTestingError.self) {
            _ = try MockRingPeer.Backend(platform: w.dom0, connection: front.connection, entrySize: Self.entrySize)
        }
        #expect(w.hypervisor.liveMappings == 0, "a backend that failed to bind unmaps the ring")
        try front.close()
    }

    /// 100,000 blkif-shaped requests (operation@0, id@8, sector@16) from a frontend thread
    /// to a backend thread and back, each side sleeping in poll() on its event channel
    /// whenever RING_FINAL_CHECK_* says so. Every id must come back exactly once, and the
    /// hypervisor must have counted exactly the notifications the ring asked for.
    /// With masking, each side also proves it unmasks every port it takes.
    @Test(arguments: [false, true])
    func hundredThousandRequestsBetweenTwoThreads(masking: Bool) throws {
        let count: UInt64 = 100_000
        let depth: UInt64 = 32
        var configuration = InProcessHypervisor.Configuration()
        configuration.masksDeliveredPorts = masking
        let w = try World(configuration)
        let (front, back) = try MockRingPeer.connect(frontend: w.guest1, backend: w.dom0, entrySize: Self.entrySize)

        let (frontResult, backResult) = runConcurrently({
            Result { () throws(XenTestingError) -> Tally in try Self.runFrontend(front, count: count, depth: depth) }
        }, {
            Result { () throws(XenTestingError) -> Tally in try Self.runBackend(back, count: count) }
        })
        let f = try frontResult.get()
        let b = try backResult.get()
        #expect(f.messages == count)
        #expect(b.messages == count)
        #expect(f.mismatches == 0)
        #expect(w.hypervisor.notificationCount(domain: w.guest1.domainID, port: front.port) == f.notifications)
        #expect(w.hypervisor.notificationCount(domain: .dom0, port: back.port) == b.notifications)
        #expect(f.notifications >= 1 && b.notifications >= 1)
        try back.close()
        try front.close()
    }

    struct Tally: Sendable {
        var messages: UInt64 = 0
        var notifications = 0
        var mismatches = 0
    }

    static func runFrontend(_ front: MockRingPeer.Frontend, count: UInt64, depth: UInt64) throws(XenTestingError) -> Tally {
        var tally = Tally()
        var outstanding = [Bool](repeating: false, count: Int(count))
        var issued: UInt64 = 0
        while tally.messages < count {
            var produced = false
            while issued < count, issued - tally.messages < depth, !front.ring.isFull {
                let id = issued
                try front.produceRequest { slot in
                    slot.store(UInt8(0), at: 0)
                    slot.store(id, at: 8)
                    slot.store(id &* 8, at: 16)
                }
                outstanding[Int(id)] = true
                issued += 1
                produced = true
            }
            if produced, try front.pushRequestsAndNotify() { tally.notifications += 1 }
            let consumed = try front.consumeResponses { slot in
                let id = slot.load(UInt64.self, at: 0)
                let status = slot.load(Int16.self, at: 10)
                if id < count, outstanding[Int(id)], status == 0 {
                    outstanding[Int(id)] = false
                } else {
                    tally.mismatches += 1
                }
            }
            tally.messages += UInt64(consumed)
            if consumed == 0, !produced, try !front.finalCheckForResponses() {
                _ = try front.waitForEvent()
            }
        }
        return tally
    }

    static func runBackend(_ back: MockRingPeer.Backend, count: UInt64) throws(XenTestingError) -> Tally {
        var tally = Tally()
        var batch: [(id: UInt64, sector: UInt64)] = []
        batch.reserveCapacity(64)
        while tally.messages < count {
            batch.removeAll(keepingCapacity: true)
            try back.consumeRequests { slot in
                batch.append((slot.load(UInt64.self, at: 8), slot.load(UInt64.self, at: 16)))
            }
            for request in batch {
                // Answer only requests whose sector is consistent with their id.
                let status: Int16 = request.sector == request.id &* 8 ? 0 : -1
                try back.produceResponse { slot in
                    slot.store(request.id, at: 0)
                    slot.store(UInt8(0), at: 8)
                    slot.store(status, at: 10)
                }
            }
            tally.messages += UInt64(batch.count)
            if !batch.isEmpty {
                if try back.pushResponsesAndNotify() { tally.notifications += 1 }
            } else if try !back.finalCheckForRequests() {
                _ = try back.waitForEvent()
            }
        }
        return tally
    }
}
