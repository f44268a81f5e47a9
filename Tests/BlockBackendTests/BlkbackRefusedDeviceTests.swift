import Blkif
import Foundation
import Glibc
import Logging
import SharedMemory
import Synchronization
import SystemCalls
import Testing
import URing
import XenDevice
import XenLocal
import XenPlatform
import XenStore
import XenTesting
@testable import BlockBackend

/// A blkif frontend written from Protocols/ and io/blkif.h alone, with no xenbus driver: it
/// writes its keys and states itself and reacts to nothing unless told, so a test can leave
/// it idle, Connected, on a ring it broke.
final class RawBlkfront: @unchecked Sendable {
    // SAFETY (@unchecked): used by one test task at a time.
    let platform: LocalPlatform
    let store: XenStoreClient
    let frontendPath: String
    let backendPath: String
    let data: SharedPages
    private(set) var ring: MockRingPeer.Frontend?
    /// Rings given up while the backend still mapped them.
    var stale: [MockRingPeer.Frontend] = []
    var nextID: UInt64 = 0

    init(_ platform: LocalPlatform, domain: DomainID, device: UInt32) throws {
        self.platform = platform
        store = try platform.connectXenStore()
        frontendPath = LocalToolstack.frontendPath(kind: "vbd", frontend: domain, device: device)
        backendPath = LocalToolstack.backendPath(kind: "vbd", frontend: domain, device: device)
        data = try platform.share(pages: 2, with: .dom0, writable: true)
    }

    func backendState() async throws -> String? { try await readNode(store, backendPath + "/state") }

    func waitForBackend(_ state: XenbusStateValue) async throws {
        let store = self.store, path = backendPath + "/state"
        try await vbdEventually("backend \(path) reads \(state)") { try await readNode(store, path) == state.rawValue }
    }

    /// Waits for InitWait, grants a fresh one-page ring and publishes its keys with
    /// Initialised in one transaction; `ringPageOrder` is written as given, if given.
    func publish(ringPageOrder: String? = nil) async throws {
        try await waitForBackend(.initWait)
        let ring = try MockRingPeer.Frontend(platform: platform, backendDomain: .dom0, pages: 1,
                                             entrySize: BlkifABI.native.slotSize)
        self.ring = ring
        let path = frontendPath
        try await store.withTransaction { tx in
            try await tx.write(path + "/ring-ref", String(ring.pages.refs[0]))
            try await tx.write(path + "/event-channel", String(ring.port))
            try await tx.write(path + "/protocol", BlkifABI.native.protocolName)
            if let ringPageOrder { try await tx.write(path + "/ring-page-order", ringPageOrder) }
            try await tx.write(path + "/state", XenbusStateValue.initialised.rawValue)
        }
    }

    /// The whole handshake: publish, wait for the backend's Connected, write Connected.
    func connect() async throws {
        try await publish()
        try await waitForBackend(.connected)
        try await store.write(frontendPath + "/state", XenbusStateValue.connected.rawValue)
    }

    /// Starts over as a frontend driver that was reloaded does: Closed, then Initialising
    /// with the old ring given up, then a new handshake on a fresh ring.
    func startOver() async throws {
        try await store.write(frontendPath + "/state", XenbusStateValue.closed.rawValue)
        if let ring {
            self.ring = nil
            do { try ring.close() } catch { stale.append(ring) }
        }
        try? await store.rm(frontendPath + "/ring-page-order")
        try await store.write(frontendPath + "/state", XenbusStateValue.initialising.rawValue)
        try await connect()
    }

    func transfer(_ operation: BlkifDirectOperation, sector: UInt64, bytes: Int = 4096) async throws -> BlkifStatus {
        try await offThePool { try self.transferNow(operation, sector: sector, bytes: bytes) }
    }

    private func transferNow(_ operation: BlkifDirectOperation, sector: UInt64, bytes: Int) throws -> BlkifStatus {
        guard let ring else { throw VbdTestError("no ring") }
        nextID += 1
        return try ring.blkifTransfer(operation, sector: sector, byteCount: bytes, data: data, id: nextID, abi: .native)
    }

    /// Writes `bytes` (at most the two data pages) at `sector` and reads them back.
    func roundTrip(_ bytes: [UInt8], sector: UInt64) async throws -> Bool {
        bytes.withUnsafeBytes { data.view.copyBytes(from: $0, to: 0) }
        guard try await transfer(.write, sector: sector, bytes: bytes.count) == .okay else { return false }
        data.view.fill(0, at: 0, length: bytes.count)
        guard try await transfer(.read, sector: sector, bytes: bytes.count) == .okay else { return false }
        return data.view.bytes(at: 0, length: bytes.count) == bytes
    }

    /// `count` one-sector reads past the end of a disk of `diskSectors`, a ring's worth at
    /// a time; returns how many were answered ERROR.
    func refusedReads(_ count: Int, diskSectors: UInt64) async throws -> Int {
        try await offThePool { try self.refusedReadsNow(count, diskSectors: diskSectors) }
    }

    private func refusedReadsNow(_ count: Int, diskSectors: UInt64) throws -> Int {
        guard let ring else { throw VbdTestError("no ring") }
        var errors = 0
        var sent = 0
        while sent < count {
            let batch = min(Int(ring.ring.size), count - sent)
            var ids = Set<UInt64>()
            for _ in 0..<batch {
                nextID += 1
                ids.insert(nextID)
                let segment = BlkifSegment(gref: data.refs[0], firstSector: 0, lastSector: 0)
                let request = BlkifRequest.direct(try BlkifDirectRequest(operation: .read, handle: 0, id: nextID,
                                                                         sectorNumber: diskSectors + 8,
                                                                         segments: BlkifSegments([segment])))
                try ring.produceRequest { request.encode(into: $0, at: 0, abi: .native) }
            }
            try ring.pushRequestsAndNotify()
            try ring.awaitBlkifResponses(abi: .native) { response in
                if ids.remove(response.id) != nil, response.status == .error { errors += 1 }
                return ids.isEmpty
            }
            sent += batch
        }
        return errors
    }

    /// Publishes a req_prod a whole ring ahead of the responses and notifies.
    func overrun() throws {
        guard let ring else { throw VbdTestError("no ring") }
        ring.shared.storeRequestProducer(ring.shared.loadResponseProducer() &+ ring.ring.size &+ 1)
        try ring.eventChannel.notify(ring.port)
    }

    /// Overwrites the whole ring page, indices included, with seeded random bytes and notifies.
    func scribble(seed: UInt64) throws {
        guard let ring else { throw VbdTestError("no ring") }
        let bytes = pattern(ring.pages.view.count, seed: seed)
        bytes.withUnsafeBytes { ring.pages.view.copyBytes(from: $0, to: 0) }
        try ring.eventChannel.notify(ring.port)
    }

    func close() {
        for ring in [ring].compactMap({ $0 }) + stale { try? ring.close() }
        try? platform.endAccess(data)
        store.close()
    }
}

/// io/xenbus.h's states as the decimal strings written in `state` nodes.
enum XenbusStateValue: String {
    case initialising = "1", initWait = "2", initialised = "3", connected = "4", closing = "5", closed = "6"
}

/// The block backend as a process of its own, started again at will, its output in a file.
final class BlkbackProcess: @unchecked Sendable {
    // SAFETY (@unchecked): the process is started in init and only read or killed after.
    let process: ChildProcess
    let logPath: String

    init(stateDirectory: String, logPath: String) throws {
        self.logPath = logPath
        process = try ChildProcess(BlkbackCommandTests.binary,
                                   ["blkback", "--platform", "local", "--state-dir", stateDirectory, "--workers", "1", "--io-workers", "1"],
                                   standardOutput: .file(logPath), standardError: .standardOutput)
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// SIGKILL: nothing is written on the way down, as after a crash.
    func kill() async throws {
        guard process.signal(SIGKILL) else { return }
        await process.exited()
    }

    /// For `defer`, where nothing may suspend: SIGKILL only (the test's end reaps it).
    func killNow() {
        process.signal(SIGKILL)
    }
}

@Suite("blkback: a device refused for a protocol violation stays down until its frontend starts over", .serialized)
struct BlkbackRefusedDeviceTests {
    enum Violation: String, CaseIterable, CustomStringConvertible {
        case reqProdOverrun = "req_prod overrun"
        case scribbledRingPage = "scribbled ring page"
        case badRingPageOrder = "ring-page-order 9"
        var description: String { rawValue }
    }

    /// Leaves the hostile frontend idle for 3 s, then checks what the backend wrote since
    /// `writes` was last cleared: Closing among them, at most two in all, never InitWait
    /// or Connected again, and the state it ends in is Closing or Closed.
    static func checkStaysDown(_ hostile: RawBlkfront, _ writes: XenStoreWriteCounter, closingExpected: Bool,
                               _ phase: String) async throws {
        try await Task.sleep(for: .seconds(3))
        let seen = writes.values
        if closingExpected {
            #expect(seen.contains(XenbusStateValue.closing.rawValue), "\(phase): Closing written; writes \(seen)")
        }
        #expect(seen.count <= 2, "\(phase): at most two state writes; writes \(seen)")
        #expect(!seen.contains(XenbusStateValue.initWait.rawValue) && !seen.contains(XenbusStateValue.connected.rawValue),
                "\(phase): not taken up again; writes \(seen)")
        let now = try await hostile.backendState()
        #expect(now == XenbusStateValue.closing.rawValue || now == XenbusStateValue.closed.rawValue,
                "\(phase): backend state \(now ?? "absent")")
    }

    @Test("the violation closes the device once, a restarted backend process keeps it down, and a fresh ring is served",
          arguments: Violation.allCases)
    func staysDownUntilStartOver(violation: Violation) async throws {
        let world = try VbdWorld()
        defer { world.stop() }
        let (id, guest) = try await world.guestWithTwoDisks()
        var backend = try BlkbackProcess(stateDirectory: world.directory, logPath: world.directory + "/blkback-1.log")
        defer { backend.killNow() }
        let dom0Store = try world.dom0.connectXenStore()
        defer { dom0Store.close() }

        // An honest frontend beside it, on our xenbus driver: it shows each process serving.
        let honest = try VbdAttached.start(guest, domain: id, device: BlkbackDeviceTests.xvda)
        try await vbdEventually("the honest disk Connected") { honest.blkif.state == .connected }
        let hostile = try RawBlkfront(guest, domain: id, device: BlkbackDeviceTests.xvdb)
        defer { hostile.close() }
        let errorPath = "/local/domain/0/error/backend/vbd/\(id)/\(BlkbackDeviceTests.xvdb)/error"

        // Phase 1: the violation, in the process that saw it.
        let writes: XenStoreWriteCounter
        switch violation {
        case .badRingPageOrder:
            try await hostile.waitForBackend(.initWait)
            writes = try await XenStoreWriteCounter(dom0Store, hostile.backendPath + "/state")
            try await hostile.publish(ringPageOrder: "9")
        case .reqProdOverrun, .scribbledRingPage:
            try await hostile.connect()
            #expect(try await hostile.roundTrip(pattern(4096, seed: 0xF1), sector: 8), "served before it misbehaves")
            writes = try await XenStoreWriteCounter(dom0Store, hostile.backendPath + "/state")
            if violation == .reqProdOverrun { try hostile.overrun() } else { try hostile.scribble(seed: 0x5C1B) }
        }
        defer { writes.cancel() }
        try await vbdEventually("the backend refused the device") {
            try await hostile.backendState() == XenbusStateValue.closing.rawValue
        }
        let error = try await readNode(dom0Store, errorPath)
        let expectedErrno = violation == .badRingPageOrder ? EINVAL : EPROTO
        #expect(error?.hasPrefix("\(expectedErrno) ") == true, "error node: \(error ?? "absent")")
        try await Self.checkStaysDown(hostile, writes, closingExpected: true, "after the violation")

        // Phase 2: the backend process is killed and started again.
        try await backend.kill()
        writes.forget()
        backend = try BlkbackProcess(stateDirectory: world.directory, logPath: world.directory + "/blkback-2.log")
        // The new process took over the honest disk (its ring is still Connected): proof it runs.
        let honestDriver = honest.blkif
        #expect(try await offThePool { try honestDriver.read(sector: 0, count: 4096).0 } == .okay,
                "the honest disk is served by the new process")
        try await Self.checkStaysDown(hostile, writes, closingExpected: false, "after the backend restarted")
        #expect(backend.log.contains("not taking over the frontend's ring"), "the new process says why it holds the device")
        #expect(try await readNode(dom0Store, errorPath) != nil, "the error node stays until the frontend starts over")

        // Phase 3: the frontend starts over on a fresh ring and is served.
        try await hostile.startOver()
        let bytes = pattern(8192, seed: 0xF3)
        #expect(try await hostile.roundTrip(bytes, sector: 64), "served again after starting over")
        #expect(try await readNode(dom0Store, errorPath) == nil, "the refusal is cleared once the frontend started over")
        #expect(honest.blkif.disconnects == 0, "the honest disk was never disconnected")
        #expect(try await offThePool { try honestDriver.write(pattern(4096, seed: 0xF4), sector: 16) } == .okay)
        try await honest.close()
    }

    @Test("10,000 requests answered ERROR in a burst give at most 100 log lines, then one line with the count suppressed")
    func refusalsAreRateLimited() async throws {
        let world = try VbdWorld()
        defer { world.stop() }
        let (id, guest, _) = try await world.guestWithOneDisk(sectors: 1024)
        let lines = LogLines()
        let logger = lines.logger
        let factory = try BlockIOEngineFactory(configuration: .init(queueDepth: 64, capacity: 1024, threads: 2),
                                               environment: [BlockIOEngineKind.environmentVariable: "threads"])
        var configuration = BlkbackDaemon.Configuration(workers: 1, resizeInterval: .milliseconds(50))
        // A window longer than any burst here, so the count is of one burst.
        configuration.guestLog = GuestLog.Policy(burst: 100, window: .seconds(600), quiet: .seconds(2))
        let running = RunningDaemon(try BlkbackDaemon(platform: world.dom0, configuration: configuration,
                                                      factory: factory, logger: logger))
        let front = try RawBlkfront(guest, domain: id, device: BlkbackDeviceTests.xvda)
        defer { front.close() }
        try await front.connect()
        #expect(try await front.refusedReads(10_000, diskSectors: 1024) == 10_000)
        try await vbdEventually("the suppressed count was logged") { lines.count("guest-caused log lines suppressed") > 0 }
        let refused = lines.count("blkback request refused")
        let summaries = lines.metadata(of: "guest-caused log lines suppressed")
        #expect(refused <= 100, "refusal lines: \(refused)")
        #expect(summaries.count == 1, "summary lines: \(summaries)")
        let suppressed = summaries.first.flatMap { $0["suppressed"].map { Int("\($0)") } } ?? nil
        #expect(suppressed.map { $0 + refused } == 10_000, "suppressed \(suppressed ?? -1) + logged \(refused)")
        // The device is still served: refusals are answers, not violations.
        #expect(try await front.roundTrip(pattern(4096, seed: 0xA1), sector: 8))
        try await running.stop()
    }
}
