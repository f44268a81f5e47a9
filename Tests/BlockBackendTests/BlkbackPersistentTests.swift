import Blkif
import BlockFrontend
import Foundation
import Logging
import SharedMemory
import Synchronization
import SystemCalls
import Testing
import URing
import XenBus
import XenLocal
import XenPlatform
import XenStore
import XenTesting
@testable import BlockBackend

/// Persistent grants (`io/blkif.h`: feature-persistent): the queue's mapping cache on the
/// in-process hypervisor, and the negotiation end to end on the local hypervisor.
@Suite("blkback persistent grants")
struct BlkbackPersistentTests {
    static func persistent(slots: Int = 8, bound: Int = BlkbackQueueConfiguration.defaultPersistentGrantsPerQueue,
                           maxIndirect: Int = 32) -> BlkbackQueueConfiguration {
        BlkbackQueueConfiguration(maxIndirectSegments: maxIndirect, slots: slots, persistentGrants: true,
                                  persistentGrantsPerQueue: bound)
    }

    /// Writes `segments` at `sector` and waits for the answer.
    static func write(_ f: TestFrontend, _ segments: [PlannedSegment], sector: UInt64, bytes: [UInt8],
                      indirectPage: Int? = nil) throws -> BlkifStatus? {
        f.fill(segments, with: bytes[...])
        let id = try f.produce(f.request(.write, sector: sector, segments, indirectPage: indirectPage))
        try f.push()
        return try f.await([id])[id]?.status
    }

    /// Reads into `segments` from `sector` and waits for the answer.
    static func read(_ f: TestFrontend, _ segments: [PlannedSegment], sector: UInt64,
                     indirectPage: Int? = nil) throws -> BlkifStatus? {
        let id = try f.produce(f.request(.read, sector: sector, segments, indirectPage: indirectPage))
        try f.push()
        return try f.await([id])[id]?.status
    }

    /// Round `round` of a walk over 40 pages: seeded bytes written over three whole pages
    /// at sector `round` x 24, recorded in `model`; returns the first page, the sector and
    /// the bytes.
    static func walkingWrite(_ f: TestFrontend, round: Int, model: inout [UInt8],
                             using generator: inout SeededGenerator) throws -> (first: Int, sector: UInt64, bytes: [UInt8]) {
        let first = (round * 3) % 40
        let sector = UInt64(round * 24)
        let bytes = (0..<(3 * 4096)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        model.replaceSubrange(Int(sector) * 512..<(Int(sector) * 512 + bytes.count), with: bytes)
        #expect(try write(f, wholePages(first..<(first + 3)), sector: sector, bytes: bytes) == .okay)
        return (first, sector, bytes)
    }

    static func wholePages(_ pages: Range<Int>) -> [PlannedSegment] {
        pages.map { PlannedSegment(page: $0, first: 0, last: 7) }
    }

    // MARK: The cache on the in-process hypervisor

    @Test("read, write and indirect data through mapped pages, every ABI; close unmaps every page",
          arguments: availableEngines)
    func dataEveryABI(engine: BlockIOEngineKind) throws {
        let rig = try Rig(engine: engine)
        var generator = SeededGenerator(seed: 0x9E45)
        var model = [UInt8](repeating: 0, count: 8192 * 512)
        for abi in BlkbackDataTests.abis {
            let f = try rig.attach(name: "guest-\(abi)", abi: abi, configuration: Self.persistent(slots: 32))
            try exercise(f, model: &model, rounds: 4, maxIndirect: 32, using: &generator)
        }
        let diskMatches = try rig.image.contents() == model
        #expect(diskMatches, "the image differs from the model")
        // Ring pages are one mapping each; everything else is a persistently mapped page.
        let rings = rig.frontends.count
        #expect(rig.hypervisor.liveMappings > rings, "data pages stay mapped between requests")
        for queue in rig.queues { try rig.worker.removeQueue(queue) }
        #expect(rig.hypervisor.liveMappings == rings, "removing the queues unmapped every data and indirect page")
        for queue in rig.queues {
            #expect(queue.usesPersistentGrants)
            #expect(queue.persistentlyMappedPages == 0)
            #expect(queue.grants.statistics.hits > 0, "pages were reused, not mapped per request")
            #expect(queue.grants.statistics.copies == 0)
            #expect(queue.grants.statistics.failures == 0)
        }
        rig.queues = []
        try rig.tearDown()
    }

    @Test("more distinct grefs than the bound: LRU eviction unmaps, the bound holds, data stays right")
    func boundAndEviction() throws {
        let rig = try Rig(engine: .threads)
        let bound = 6
        let f = try rig.attach(name: "guest", configuration: Self.persistent(bound: bound))
        var generator = SeededGenerator(seed: 0xB0D)
        var model = [UInt8](repeating: 0, count: 8192 * 512)
        for round in 0..<24 {
            // Three pages per request, walking over 40 pages: far more than the bound.
            let (first, sector, bytes) = try Self.walkingWrite(f, round: round, model: &model, using: &generator)
            #expect(rig.hypervisor.liveMappings - 1 <= bound, "at most \(bound) pages mapped besides the ring")
            // Read it back into other pages (also past the bound), and an older write too.
            let back = Self.wholePages((first + 40)..<(first + 43))
            #expect(try Self.read(f, back, sector: sector) == .okay)
            #expect(f.gather(back) == bytes)
            let older = UInt64(Int.random(in: 0...round, using: &generator) * 24)
            #expect(try Self.read(f, back, sector: older) == .okay)
            #expect(f.gather(back) == Array(model[(Int(older) * 512)..<(Int(older) * 512 + 3 * 4096)]))
            #expect(rig.hypervisor.liveMappings - 1 <= bound)
        }
        try rig.worker.removeQueue(rig.queues[0])
        let statistics = rig.queues[0].grants.statistics
        #expect(statistics.evictions > 0)
        #expect(statistics.maps == statistics.evictions + bound, "every map past the bound evicted one page")
        rig.queues = []
        try rig.tearDown()
    }

    @Test("a request with more pages than the bound copies the pages no entry can take")
    func boundSmallerThanARequest() throws {
        let rig = try Rig(engine: .threads)
        let f = try rig.attach(name: "guest", configuration: Self.persistent(bound: 4))
        var generator = SeededGenerator(seed: 0x5EC)
        let segments = randomSegments(count: BlkifSegments.capacity, firstPage: 0, using: &generator)
        let length = segments.reduce(0) { $0 + $1.bytes }
        let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
        #expect(try Self.write(f, segments, sector: 100, bytes: bytes) == .okay)
        let back = randomSegments(count: BlkifSegments.capacity, firstPage: 20, using: &generator)
            .map { PlannedSegment(page: $0.page, first: 0, last: 7) }
        #expect(try Self.read(f, back, sector: 100) == .okay)
        #expect(Array(f.gather(back).prefix(length)) == bytes)
        try rig.worker.removeQueue(rig.queues[0])
        let statistics = rig.queues[0].grants.statistics
        #expect(statistics.copies > 0, "segments past the bound were grant-copied")
        #expect(statistics.maps > 0)
        rig.queues = []
        try rig.tearDown()
    }

    @Test("persistent grants off: nothing stays mapped, data through grant copies")
    func offCopies() throws {
        let rig = try Rig(engine: .threads)
        let f = try rig.attach(name: "guest", configuration: BlkbackQueueConfiguration(slots: 8))
        var generator = SeededGenerator(seed: 0x0FF)
        var model = [UInt8](repeating: 0, count: 8192 * 512)
        try exercise(f, model: &model, rounds: 2, maxIndirect: 32, using: &generator)
        #expect(rig.hypervisor.liveMappings == 1, "only the ring is mapped")
        #expect(!rig.queues[0].usesPersistentGrants)
        try rig.tearDown()
    }

    @Test("a page granted read-only: writes map it read-only, a read remaps it writable or fails")
    func readOnlyGrant() throws {
        let rig = try Rig(engine: .threads)
        let f = try rig.attach(name: "guest", configuration: Self.persistent())
        let guest = try rig.hypervisor.platform(for: f.domain)
        // A frontend breaking io/blkif.h note 8: one page granted read-only.
        let page = try guest.share(pages: 1, with: .dom0, writable: false)
        let ref = page.refs[0]
        let bytes = pattern(4096, seed: 0x20)
        bytes.withUnsafeBytes { page.view.copyBytes(from: $0, to: 0) }
        let segment = try BlkifSegments([BlkifSegment(gref: ref, firstSector: 0, lastSector: 7)])
        func send(_ operation: BlkifDirectOperation, sector: UInt64) throws -> BlkifStatus? {
            try f.send(operation, sector: sector, segment)
        }
        // Write from it: the writable map fails, a read-only one serves.
        #expect(try send(.write, sector: 8) == .okay)
        #expect(Array(try rig.image.contents()[(8 * 512)..<(8 * 512 + 4096)]) == bytes)
        #expect(rig.hypervisor.grantFlags(domain: f.domain, ref: ref)?.contains(.reading) == true)
        // Read into it: needs a writable mapping, which the grant refuses.
        #expect(try send(.read, sector: 64) == .error)
        // The frontend makes the grant writable (as note 8 asks): the read remaps it.
        let table = try #require(rig.hypervisor.grantEntryTable(of: f.domain))
        table.grant(ref, to: .dom0, frame: UInt32(page.token), readOnly: false)
        #expect(try send(.read, sector: 64) == .okay)
        #expect(page.view.bytes(at: 0, length: 4096) == [UInt8](repeating: 0, count: 4096))
        #expect(rig.hypervisor.grantFlags(domain: f.domain, ref: ref)?.contains(.writing) == true)
        // And a write after it uses the writable mapping, with no new map.
        #expect(try send(.write, sector: 16) == .okay)

        // The other direction: a page first mapped for a read serves a later write as is.
        let segments = Self.wholePages(0..<1)
        #expect(try Self.read(f, segments, sector: 16) == .okay)
        #expect(try Self.write(f, segments, sector: 24, bytes: bytes) == .okay)
        #expect(Array(try rig.image.contents()[(24 * 512)..<(24 * 512 + 4096)]) == bytes)

        try rig.worker.removeQueue(rig.queues[0])
        let statistics = rig.queues[0].grants.statistics
        // Maps: read-only (write), writable (read, after the failed try), data page 0.
        #expect(statistics.maps == 3)
        #expect(statistics.failures == 1)
        #expect(statistics.hits == 2)
        rig.queues = []
        try guest.endAccess(page)
        try rig.tearDown()
    }

    @Test("a gref that cannot be mapped is copied: revoked or invalid, BLKIF_RSP_ERROR; refused locally, served")
    func mapFailures() throws {
        let rig = try Rig(engine: .threads)
        let f = try rig.attach(name: "guest", configuration: Self.persistent())
        // Never granted.
        let bogus = try BlkifSegments([BlkifSegment(gref: 4000, firstSector: 0, lastSector: 7)])
        for operation in [BlkifDirectOperation.read, .write] {
            let id = try f.produce(.direct(BlkifDirectRequest(operation: operation, handle: 0, id: f.takeID(),
                                                              sectorNumber: 0, segments: bogus)))
            try f.push()
            #expect(try f.await([id])[id]?.status == .error)
        }
        // Revoked (injected GNTST_bad_gntref on a real grant, for the map and the copy it
        // falls back to), for a data page and for an indirect segment page.
        rig.hypervisor.inject(.map(granter: f.domain, ref: f.data.refs[3], status: .badGrantRef))
        rig.hypervisor.inject(.copy(granter: f.domain, ref: f.data.refs[3], status: .badGrantRef))
        #expect(try Self.read(f, Self.wholePages(2..<5), sector: 0) == .error)
        // Twice: an indirect page is only read, so a failed writable map is tried read-only.
        rig.hypervisor.inject(.map(granter: f.domain, ref: f.indirect.refs[0], status: .badGrantRef))
        rig.hypervisor.inject(.map(granter: f.domain, ref: f.indirect.refs[0], status: .badGrantRef))
        rig.hypervisor.inject(.copy(granter: f.domain, ref: f.indirect.refs[0], status: .badGrantRef))
        #expect(try Self.read(f, Self.wholePages(0..<12), sector: 0, indirectPage: 0) == .error)
        // A map refused for want of room (GNTST_no_space), the grant fine: the copy serves.
        let first = pattern(3 * 4096, seed: 0xF9)
        #expect(try Self.write(f, Self.wholePages(40..<43), sector: 200, bytes: first) == .okay)
        rig.hypervisor.inject(.map(granter: f.domain, ref: f.data.refs[51], status: .noSpace))
        #expect(try Self.read(f, Self.wholePages(50..<53), sector: 200) == .okay)
        #expect(f.gather(Self.wholePages(50..<53)) == first)
        // The pages a failed request had mapped are not left in use: everything works on.
        let bytes = pattern(12 * 4096, seed: 0xFA)
        #expect(try Self.write(f, Self.wholePages(0..<12), sector: 0, bytes: bytes, indirectPage: 0) == .okay)
        #expect(try Self.read(f, Self.wholePages(20..<32), sector: 0, indirectPage: 1) == .okay)
        #expect(f.gather(Self.wholePages(20..<32)) == bytes)
        try rig.worker.removeQueue(rig.queues[0])
        #expect(rig.queues[0].grants.statistics.failures == 5)
        #expect(rig.queues[0].disconnectReason == nil)
        rig.queues = []
        try rig.tearDown()
    }

    @Test("a frontend that retargets a mapped gref: the mapping stays on the page granted first")
    func retargetedGref() throws {
        let rig = try Rig(engine: .threads)
        let f = try rig.attach(name: "guest", configuration: Self.persistent())
        let bytes = pattern(4096, seed: 0x7A)
        let other = pattern(4096, seed: 0x7B)
        #expect(try Self.write(f, Self.wholePages(0..<1), sector: 40, bytes: bytes) == .okay)
        // Page 0's gref now says page 5; the backend's mapping was made on page 0's frame.
        f.fill(Self.wholePages(5..<6), with: other[...])
        let table = try #require(rig.hypervisor.grantEntryTable(of: f.domain))
        let frame0 = UInt32(f.data.token)
        table.grant(f.data.refs[0], to: .dom0, frame: frame0 + 5, readOnly: false)
        f.fill(Self.wholePages(0..<1), with: [UInt8](repeating: 0, count: 4096)[...])
        #expect(try Self.read(f, Self.wholePages(0..<1), sector: 40) == .okay)
        #expect(f.gather(Self.wholePages(0..<1)) == bytes, "the data went to the page mapped first")
        #expect(f.gather(Self.wholePages(5..<6)) == other, "the page the entry names now was not touched")
        // Restore the entry so the frontend can end access to its own page.
        try rig.worker.removeQueue(rig.queues[0])
        table.grant(f.data.refs[0], to: .dom0, frame: frame0, readOnly: false)
        rig.queues = []
        try rig.tearDown()
    }

    @Test("a bound out of range is refused")
    func boundValidated() throws {
        let rig = try Rig(engine: .threads)
        let f = try TestFrontend(hypervisor: rig.hypervisor, name: "guest", abi: .native, ringPages: 1)
        #expect(throws: BlockBackendError.configuration(name: "persistentGrantsPerQueue", value: 0, limit: 1...65536)) {
            try f.makeQueue(store: rig.store, mapper: rig.mapper, configuration: Self.persistent(bound: 0))
        }
        try f.close()
        try rig.tearDown()
    }

    @Test("the cache's index: hits, evictions in LRU order and deletions keep every gref findable")
    func cacheIndex() throws {
        let hypervisor = try hypervisorForTests()
        let guest = try hypervisor.createDomain(name: "guest")
        let pages = try hypervisor.platform(for: guest).share(pages: 64, with: .dom0, writable: true)
        // No reuse check here: this walks the LRU order under a high miss rate.
        let cache = BlkbackPersistentGrants(capacity: 16, mapper: try hypervisor.platform(for: .dom0), domain: guest,
                                            window: 1 << 30)
        var generator = SeededGenerator(seed: 0x1D)
        // A model of the LRU order of idle pages, most recent last.
        var resident: [GrantRef] = []
        for _ in 0..<2000 {
            let ref = pages.refs[Int.random(in: 0..<64, using: &generator)]
            let wasResident = resident.contains(ref)
            let before = cache.statistics
            guard case let .mapped(entry) = cache.acquire(ref, writable: true) else {
                Issue.record("gref \(ref) was not mapped")
                break
            }
            #expect(cache.view(entry).count == pageSize)
            cache.release(entry)
            if wasResident {
                #expect(cache.statistics.hits == before.hits + 1)
                resident.removeAll { $0 == ref }
            } else {
                #expect(cache.statistics.maps == before.maps + 1)
                if resident.count == 16 {
                    #expect(cache.statistics.evictions == before.evictions + 1)
                    resident.removeFirst()
                }
            }
            resident.append(ref)
            #expect(cache.count == resident.count)
        }
        #expect(hypervisor.liveMappings == resident.count)
        #expect(cache.unmapAll() == nil)
        #expect(hypervisor.liveMappings == 0)
        try hypervisor.platform(for: guest).endAccess(pages)
    }
}

extension BlkbackPersistentTests {
    @Test("a frontend that does not reuse its grants gets copies instead of a map and unmap per page")
    func thrashingFrontend() throws {
        let hypervisor = try hypervisorForTests()
        let guest = try hypervisor.createDomain(name: "guest")
        let pages = try hypervisor.platform(for: guest).share(pages: 64, with: .dom0, writable: true)
        let cache = BlkbackPersistentGrants(capacity: 4, mapper: try hypervisor.platform(for: .dom0), domain: guest,
                                            window: 64)
        func touch(_ ref: GrantRef) -> Bool {
            switch cache.acquire(ref, writable: true) {
            case let .mapped(entry):
                cache.release(entry)
                return true
            case .copy:
                return false
            }
        }
        // A new page every time. Window 1 maps and evicts all along, window 2 copies,
        // window 3 maps again and thrashes again, window 4 and 5 copy.
        for k in 0..<256 { _ = touch(pages.refs[k % 64]) }
        let thrashed = cache.statistics
        #expect(thrashed.thrashingWindows == 2)
        #expect(thrashed.maps == 128, "windows 1 and 3 mapped, 2 and 4 did not")
        #expect(thrashed.evictions == 124)
        // Windows 2 and 4 copy all but the four pages left resident, which still hit.
        #expect(thrashed.copies == 120)
        #expect(thrashed.hits == 8)
        #expect(hypervisor.liveMappings == 4)
        // The frontend settles on four pages: copied through window 5, mapped in window 6,
        // hits from then on, with no more copying.
        let settled = Array(pages.refs[10..<14])
        var mappedAtEnd = 0
        for k in 0..<256 { mappedAtEnd = touch(settled[k % 4]) ? mappedAtEnd + 1 : 0 }
        #expect(mappedAtEnd == 192, "windows 6 to 8 served every lookup from the cache")
        #expect(cache.statistics.thrashingWindows == 2, "window 6 showed reuse")
        #expect(cache.statistics.maps == 132)
        #expect(cache.unmapAll() == nil)
        #expect(hypervisor.liveMappings == 0)
        try hypervisor.platform(for: guest).endAccess(pages)
    }
}

// MARK: Negotiation on the local hypervisor

/// The daemon and frontends over XenLocal: what is published, what is used, and that a
/// frontend gets every page back once the backend let go.
@Suite("blkback persistent grants over the local hypervisor", .serialized)
struct BlkbackPersistentDeviceTests {
    static func daemon(_ world: VbdWorld, persistent: Bool) throws -> BlkbackDaemon {
        let factory = try BlockIOEngineFactory(configuration: .init(queueDepth: 64, capacity: 1024, threads: 2),
                                               environment: [BlockIOEngineKind.environmentVariable: "threads"])
        var limits = BlkbackDeviceLimits()
        limits.persistentGrants = persistent
        return try BlkbackDaemon(platform: world.dom0, configuration: .init(workers: 1, limits: limits),
                                 factory: factory, logger: vbdLogger)
    }

    /// Whether each queue of the device at `backendPath` keeps grants mapped.
    static func queuesPersistent(_ daemon: BlkbackDaemon, _ backendPath: String) -> [Bool] {
        daemon.devices[backendPath]?.state.withLock { $0.queues.map(\.queue.usesPersistentGrants) } ?? []
    }

    @Test("offered and advertised by both: used; offered, not advertised: copied; not offered: 0 published",
          arguments: [(true, true), (true, false), (false, true)])
    func negotiation(backend: Bool, frontend: Bool) async throws {
        let world = try VbdWorld()
        defer { world.stop() }
        let (id, guest, _) = try await world.guestWithOneDisk(sectors: 4096, image: "p.img")
        let daemon = try Self.daemon(world, persistent: backend)
        let running = RunningDaemon(daemon)
        var plan = BlkifRingDriver.Configuration()
        plan.tamper = { keys in if frontend { keys.set("feature-persistent", "1") } }
        let front = try VbdAttached.start(guest, domain: id, device: BlkbackDeviceTests.xvda, configuration: plan)
        try await vbdEventually("frontend Connected") { front.blkif.state == .connected }
        #expect(front.blkif.backendKeys["feature-persistent"] == (backend ? "1" : "0"))
        #expect(try await readNode(front.store, front.frontendPath + "/feature-persistent") == (frontend ? "1" : nil))
        let used = backend && frontend
        #expect(Self.queuesPersistent(daemon, front.backendPath) == [used])

        let bytes = pattern(3 * 4096, seed: 0xAB)
        for round in 0..<3 {
            #expect(try front.blkif.write(bytes, sector: UInt64(100 + round * 8)) == .okay)
            #expect(try front.blkif.read(sector: UInt64(100 + round * 8), count: bytes.count) == (.okay, bytes))
        }
        // Persistently mapped data pages are pinned: the frontend cannot end access to them
        // while connected. Copied ones never were mapped.
        if front.blkif.endDataAccess() {
            #expect(!used, "ending access succeeded although the backend should keep the pages mapped")
        } else {
            #expect(used, "ending access failed although nothing should be mapped")
        }
        // Once the backend saw Closing and removed its queues, every page comes back.
        try await front.close()
        try await running.stop()
    }

    @Test("a frontend breaking its ring, and the toolstack removing the device, both unmap every persistent page")
    func teardownPaths() async throws {
        let world = try VbdWorld()
        defer { world.stop() }
        let (id, guest) = try await world.guestWithTwoDisks()
        let running = RunningDaemon(try Self.daemon(world, persistent: true))
        var plan = BlkifRingDriver.Configuration()
        plan.tamper = { $0.set("feature-persistent", "1") }
        let broken = try VbdAttached.start(guest, domain: id, device: BlkbackDeviceTests.xvda, configuration: plan)
        let removed = try VbdAttached.start(guest, domain: id, device: BlkbackDeviceTests.xvdb, configuration: plan)
        try await vbdEventually("both Connected") { broken.blkif.state == .connected && removed.blkif.state == .connected }
        for front in [broken, removed] {
            let bytes = pattern(8 * 4096, seed: 0x7D)
            #expect(try front.blkif.write(bytes, sector: 16) == .okay)
            #expect(try front.blkif.read(sector: 16, count: bytes.count) == (.okay, bytes))
            #expect(!front.blkif.endDataAccess(), "the data pages are mapped")
        }
        // Disconnect: the daemon takes the queue down (and serves the device afresh).
        try broken.blkif.overrunRing()
        try await vbdEventually("the broken frontend's pages were unmapped") {
            broken.blkif.endDataAccess()
        }
        // Device removal: the backend node goes; the driver stops and removes its queues.
        try await world.toolstack.removeBackends(of: id)
        try await vbdEventually("the removed device's pages were unmapped") {
            removed.blkif.endDataAccess()
        }
        for front in [broken, removed] { try await front.close() }
        try await running.stop()
    }

    @Test("BlockFrontend end to end: persistent negotiated, data right, every grant given back on close")
    func blockFrontend() async throws {
        let world = try VbdWorld()
        defer { world.stop() }
        let (id, guest, _) = try await world.guestWithOneDisk(sectors: 8192, image: "f.img")
        let daemon = try Self.daemon(world, persistent: true)
        let running = RunningDaemon(daemon)
        let frontend = try BlockFrontend(platform: guest, devid: String(BlkbackDeviceTests.xvda),
                                         configuration: BlockFrontendConfiguration(queues: 2, depth: 8), logger: vbdLogger)
        let disk = try await frontend.connected()
        #expect(disk.backend.persistent)
        let backendPath = LocalToolstack.backendPath(kind: "vbd", frontend: id, device: BlkbackDeviceTests.xvda)
        #expect(disk.queues == 2)
        #expect(Self.queuesPersistent(daemon, backendPath) == [true, true], "each queue keeps its own cache")

        var generator = SeededGenerator(seed: 0xE2E)
        var model = [UInt8](repeating: 0, count: 8192 * 512)
        for _ in 0..<40 {
            let count = UInt64.random(in: 1...256, using: &generator)
            let sector = UInt64.random(in: 0...(8192 - count), using: &generator)
            if Bool.random(using: &generator) {
                let bytes = (0..<(Int(count) * 512)).map { _ in UInt8.random(in: 0...255, using: &generator) }
                try await frontend.write(sector: sector, data: bytes)
                model.replaceSubrange(Int(sector) * 512..<(Int(sector + count) * 512), with: bytes)
            } else {
                let bytes = try await frontend.read(sector: sector, count: count)
                #expect(bytes == Array(model[(Int(sector) * 512)..<(Int(sector + count) * 512)]),
                        "read of \(count) sectors at \(sector)")
            }
        }
        try await frontend.flush()
        #expect(await frontend.close(grantWaitSeconds: 20) == 0, "every granted page was given back")
        try await running.stop()
    }

    @Test("xensplit blkback --persistent-grants off publishes feature-persistent 0; other values are refused")
    func commandLine() async throws {
        let state = NSTemporaryDirectory() + "xensplit-persist-cli-\(getpid())"
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: state) }
        let image = state + "/disk.img"
        #expect(FileManager.default.createFile(atPath: image, contents: nil))
        #expect(truncate(image, 2048 * 512) == 0)
        let hypervisor = try BlkbackCommandTests.spawn(["hypervisor", "--state-dir", state])
        // On a failure the process is only signalled; the normal path waits for it below.
        defer { if hypervisor.isRunning { hypervisor.signal(SIGTERM) } }
        try await vbdEventually("the hypervisor's socket") { FileManager.default.fileExists(atPath: state + "/xenstored.socket") }
        let create = try BlkbackCommandTests.spawn(["domain", "create", "guest", "--state-dir", state,
                                                    "--disk", "vdev=xvda,access=rw,target=\(image)"])
        try await Self.exited(create)
        #expect(create.wait().code == 0)
        let guest = try LocalPlatform(stateDirectory: state, domain: "guest")
        let backendPath = LocalToolstack.backendPath(kind: "vbd", frontend: guest.domainID, device: BlkbackDeviceTests.xvda)
        let store = try LocalPlatform(stateDirectory: state).connectXenStore()
        defer { store.close() }

        let refused = try BlkbackCommandTests.spawn(["blkback", "--platform", "local", "--state-dir", state,
                                                     "--persistent-grants", "maybe"])
        try await Self.exited(refused)
        #expect(refused.wait().code != 0)
        #expect(try await readNode(store, backendPath + "/feature-persistent") == nil)

        let blkback = try BlkbackCommandTests.spawn(["blkback", "--platform", "local", "--state-dir", state, "--workers", "1",
                                                     "--persistent-grants", "off", "--persistent-grants-per-queue", "64"])
        defer { if blkback.isRunning { blkback.signal(SIGTERM) } }
        try await vbdEventually("the backend's features") {
            try await readNode(store, backendPath + "/feature-persistent") != nil
        }
        #expect(try await readNode(store, backendPath + "/feature-persistent") == "0")
        blkback.signal(SIGTERM)
        try await Self.exited(blkback)
        #expect(blkback.wait().code == 0)
        hypervisor.signal(SIGTERM)
        try await Self.exited(hypervisor)
    }

    /// Waits for `process` to exit without blocking a thread of the shared task pool (on
    /// two cores a blocked wait() starves the other suites' polling).
    static func exited(_ process: ChildProcess) async throws {
        try await vbdEventually("process \(process.pid) exited") { !process.isRunning }
    }
}

/// Records what a logger was given (level, message, metadata).
extension BlkbackPersistentTests {
    @Test("an unmap that fails on eviction is counted, logged once with its gref, set aside and retried at teardown")
    func failedUnmapOnEviction() throws {
        let hypervisor = try hypervisorForTests()
        let guest = try hypervisor.createDomain(name: "guest")
        let pages = try hypervisor.platform(for: guest).share(pages: 8, with: .dom0, writable: true)
        let log = LogLines()
        let cache = BlkbackPersistentGrants(capacity: 2, mapper: try hypervisor.platform(for: .dom0), domain: guest,
                                            logger: log.logger)
        func touch(_ page: Int) -> Bool {
            switch cache.acquire(pages.refs[page], writable: true) {
            case let .mapped(entry):
                cache.release(entry)
                return true
            case .copy:
                return false
            }
        }
        #expect(touch(0) && touch(1))
        #expect(hypervisor.liveMappings == 2)
        hypervisor.inject(.unmap(granter: guest, ref: pages.refs[0], status: .generalError))
        hypervisor.inject(.unmap(granter: guest, ref: pages.refs[1], status: .generalError))

        // Page 0 is the one to evict for page 2; its unmap fails: page 2 is copied and
        // page 0 stays mapped (and pinned) but is no longer served from the cache.
        #expect(!touch(2))
        #expect(cache.statistics.failedUnmaps == 1)
        #expect(cache.statistics.evictions == 0)
        #expect(cache.setAside == 1)
        #expect(cache.count == 2)
        #expect(hypervisor.liveMappings == 2)
        #expect(hypervisor.pinnedRefs(of: guest).contains(pages.refs[0]))
        // Page 0 again: the set-aside entry is not used, page 1 is evicted for it and fails too.
        #expect(!touch(0))
        #expect(cache.statistics.failedUnmaps == 2)
        #expect(cache.setAside == 2)
        // Every entry set aside: from now on every page is copied, and nothing more is logged.
        for page in 2..<8 { #expect(!touch(page)) }
        #expect(cache.statistics.failedUnmaps == 2)
        #expect(cache.statistics.maps == 2)
        #expect(hypervisor.liveMappings == 2)

        let errors = log.at(.error)
        #expect(errors.count == 1, "one log line for the failed unmaps, not one each: \(errors.map(\.message))")
        #expect(errors.first?.metadata["gref"] == "\(pages.refs[0])")
        #expect(errors.first?.metadata["error"]?.description.contains("GNTST_general_error") == true,
                "\(errors.first?.metadata ?? [:])")

        // Teardown unmaps the set-aside pages: nothing stays mapped or pinned.
        #expect(cache.unmapAll() == nil)
        #expect(cache.count == 0 && cache.setAside == 0)
        #expect(hypervisor.liveMappings == 0)
        #expect(hypervisor.pinnedRefs(of: guest).isEmpty)
        let retried = log.at(.warning)
        #expect(retried.count == 1)
        #expect(retried.first?.metadata["retried"] == "2" && retried.first?.metadata["failed-again"] == "0",
                "\(retried.first?.metadata ?? [:])")
        try hypervisor.platform(for: guest).endAccess(pages)
    }

    @Test("unmaps failing on every eviction: the queue copies once every entry is set aside, data stays right, removal unmaps all")
    func failedUnmapsOnAQueue() throws {
        let rig = try Rig(engine: .threads)
        let bound = 4
        let f = try rig.attach(name: "guest", configuration: Self.persistent(bound: bound))
        // Every page the frontend uses refuses its first unmap.
        for page in 0..<TestFrontend.dataPages {
            rig.hypervisor.inject(.unmap(granter: f.domain, ref: f.data.refs[page], status: .generalError))
        }
        var generator = SeededGenerator(seed: 0xFA11)
        var model = [UInt8](repeating: 0, count: 8192 * 512)
        for round in 0..<16 {
            let (first, sector, bytes) = try Self.walkingWrite(f, round: round, model: &model, using: &generator)
            let back = Self.wholePages((first + 40)..<(first + 43))
            #expect(try Self.read(f, back, sector: sector) == .okay)
            #expect(f.gather(back) == bytes)
            #expect(rig.hypervisor.liveMappings - 1 <= bound, "set-aside pages still count against the bound")
        }
        let queue = rig.queues[0]
        try rig.removeQueues()
        let statistics = queue.grants.statistics
        #expect(statistics.failedUnmaps == bound, "every entry ended up set aside")
        #expect(statistics.evictions == 0)
        #expect(statistics.copies > 0)
        #expect(rig.hypervisor.liveMappings == 1, "removing the queue unmapped the set-aside pages; the ring is left")
        #expect(rig.hypervisor.pinnedRefs(of: f.domain).allSatisfy { !f.data.refs.contains($0) })
        let diskMatches = try rig.image.contents() == model
        #expect(diskMatches, "the image differs from the model")
        rig.queues = []
        try rig.tearDown()
    }
}
