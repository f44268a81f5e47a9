import Blkif
import Dispatch
import Foundation
import Glibc
import Synchronization
import Testing
import URing
import XenLocal
import XenPlatform
import XenTesting
@testable import BlockBackend

/// Hostile frontends at the device level, on the local hypervisor: the daemon keeps
/// serving everyone else, and afterwards the hypervisor's own counts show nothing held.
@Suite("blkback devices against hostile frontends", .serialized)
struct BlkbackDeviceHostileTests {
    static let xvda = try! DiskSpec(parsing: "vdev=xvda,access=rw,target=/dev/null").vdev.number

    /// Counts engines made, so the first worker's engine can be gated and the second not.
    final class EngineCount: Sendable {
        let made = Mutex(0)
        func next() -> Int { made.withLock { n in defer { n += 1 }; return n } }
    }

    /// A daemon with two workers whose first worker's disk completions wait for `gate`.
    static func gatedDaemon(_ world: VbdWorld, gate: IOGate) throws -> BlkbackDaemon {
        let count = EngineCount()
        let factory = BlockIOEngineFactory(kind: .threads,
                                           configuration: .init(queueDepth: 64, capacity: 1024, threads: 2)) {
            configuration throws(URingError) in
            try GatedEngine(configuration: configuration, gate: count.next() == 0 ? gate : nil)
        }
        return try BlkbackDaemon(platform: world.dom0, configuration: .init(workers: 2, resizeInterval: .milliseconds(50)),
                                 factory: factory, logger: vbdLogger)
    }

    /// Open descriptors of this process that name `path`.
    static func descriptors(naming path: String) -> Int {
        ((try? listDirectory("/proc/self/fd")) ?? []).filter { fd in
            var target = [CChar](repeating: 0, count: 4096)
            let n = readlink("/proc/self/fd/\(fd)", &target, target.count - 1)
            return n > 0 && String(cString: target) == path
        }.count
    }

    /// Verified write and read-back of `pages` pages at `sector`.
    static func roundTrip(_ front: BlkifRingDriver, sector: UInt64, seed: UInt64, pages: Int = 2) throws -> Bool {
        let bytes = pattern(pages * 4096, seed: seed)
        guard try front.write(bytes, sector: sector) == .okay else { return false }
        let (status, back) = try front.read(sector: sector, count: bytes.count)
        return status == .okay && back == bytes
    }

    @Test("a frontend that disconnects with I/O in flight: removal waits for the I/O, then nothing is held; the other frontend is served throughout")
    func disconnectWithIOInFlight() async throws {
        let world = try VbdWorld()
        defer { world.stop() }
        let gate = IOGate()
        let victimImage = try world.image("victim.img", sectors: 4096)
        let otherImage = try world.image("other.img", sectors: 4096)
        let (victimID, victimGuest) = try await world.guest("victim", disks: ["vdev=xvda,access=rw,target=\(victimImage)"])
        let (otherID, otherGuest) = try await world.guest("other", disks: ["vdev=xvda,access=rw,target=\(otherImage)"])
        let running = RunningDaemon(try Self.gatedDaemon(world, gate: gate))
        let baseline = try world.dom0.domainUsage()

        // The victim connects first, so its queue lands on the first (gated) worker.
        let victim = try VbdAttached.start(victimGuest, domain: victimID, device: Self.xvda, configuration: .init(depth: 16))
        try await vbdEventually("victim Connected") { victim.blkif.state == .connected }
        let other = try VbdAttached.start(otherGuest, domain: otherID, device: Self.xvda)
        try await vbdEventually("other Connected") { other.blkif.state == .connected }
        #expect(try Self.roundTrip(other.blkif, sector: 64, seed: 1))

        gate.close()
        try victim.blkif.submitWrites(count: 16)
        try await vbdEventually("the victim's writes held in flight") { gate.held > 0 }
        #expect(try world.dom0.domainUsage()[victimID]?.pinnedGrants ?? 0 > 0, "the victim's ring is mapped")

        let closing = Task { await victim.blkif.close(grantWaitSeconds: 20) }
        // Removal is waiting on the victim's I/O; the other worker's frontend is served.
        for round in 0..<5 { #expect(try Self.roundTrip(other.blkif, sector: 128 + UInt64(round) * 16, seed: 10 + UInt64(round))) }
        #expect(try world.dom0.domainUsage()[victimID]?.pinnedGrants ?? 0 > 0,
                "the ring stays mapped while its requests are in flight")

        gate.open()
        #expect(await closing.value == 0, "the backend let go of the victim's ring and data pages")
        victim.store.close()
        #expect(try Self.roundTrip(other.blkif, sector: 512, seed: 20), "the other frontend still served")

        try await other.close()
        try await world.toolstack.destroy(name: "victim")
        try await world.toolstack.destroy(name: "other")
        try await vbdEventually("backing files closed") {
            Self.descriptors(naming: victimImage) == 0 && Self.descriptors(naming: otherImage) == 0
        }
        let after = try world.dom0.domainUsage()
        #expect(after[0]?.ports == baseline[0]?.ports, "dom0 event-channel ports back to where they were")
        #expect(after[0]?.mappingsHeld == baseline[0]?.mappingsHeld, "no grant mapping left")
        #expect(after[0]?.copyBufferPages == baseline[0]?.copyBufferPages, "no copy buffer left")
        try await running.stop()
    }

    @Test("an event-channel flood harms no one: the flooder and another frontend keep correct data")
    func eventChannelFlood() async throws {
        let world = try VbdWorld()
        defer { world.stop() }
        let floodImage = try world.image("flood.img", sectors: 4096)
        let otherImage = try world.image("other.img", sectors: 4096)
        let (floodID, floodGuest) = try await world.guest("flooder", disks: ["vdev=xvda,access=rw,target=\(floodImage)"])
        let (otherID, otherGuest) = try await world.guest("other", disks: ["vdev=xvda,access=rw,target=\(otherImage)"])
        let running = RunningDaemon(try world.daemon())
        let flooder = try VbdAttached.start(floodGuest, domain: floodID, device: Self.xvda)
        let other = try VbdAttached.start(otherGuest, domain: otherID, device: Self.xvda)
        try await vbdEventually("both Connected") { flooder.blkif.state == .connected && other.blkif.state == .connected }
        guard let rings = flooder.blkif.rings else { throw VbdTestError("flooder has no ring") }

        // 200 000 notifications with nothing on the ring, while the other frontend does I/O.
        let (floodError, rounds) = runConcurrently({ () -> String? in
            do {
                for _ in 0..<200_000 { try rings.notify(queue: 0) }
                return nil
            } catch { return "\(error)" }
        }, { () -> [Bool] in
            (0..<20).map { round in (try? Self.roundTrip(other.blkif, sector: UInt64(round) * 16, seed: UInt64(round))) ?? false }
        })
        #expect(floodError == nil)
        #expect(rounds.allSatisfy { $0 }, "other frontend's round trips: \(rounds)")
        #expect(try Self.roundTrip(flooder.blkif, sector: 1000, seed: 99), "the flooder itself is still served")
        #expect(flooder.blkif.state == .connected)

        try await flooder.close()
        try await other.close()
        try await running.stop()
    }

    @Test("a protocol rewritten after Connected changes nothing until the frontend reconnects; then the new ABI is served")
    func protocolChangedAfterConnect() async throws {
        let world = try VbdWorld()
        defer { world.stop() }
        let (id, guest, _) = try await world.guestWithOneDisk(sectors: 4096)
        let running = RunningDaemon(try world.daemon())
        let first = try VbdAttached.start(guest, domain: id, device: Self.xvda)
        try await vbdEventually("Connected") { first.blkif.state == .connected }
        let bytes = pattern(8192, seed: 0xAB1)
        #expect(try first.blkif.write(bytes, sector: 40) == .okay)

        // The ABI is read once, at connect (as blkback's connect_ring does): a rewrite,
        // even with a state write that wakes the backend, is not taken up mid-connection.
        try await first.store.write(first.frontendPath + "/protocol", "x86_32-abi")
        try await first.store.write(first.frontendPath + "/state", "4")
        try await Task.sleep(for: .milliseconds(100))
        #expect(try await readNode(first.store, first.backendPath + "/state") == "4")
        let (status, back) = try first.blkif.read(sector: 40, count: bytes.count)
        #expect(status == .okay)
        #expect(back == bytes, "still served in the layout negotiated at connect")
        try await first.close()

        // A new connection with the other ABI is served in that layout, data intact.
        let second = try VbdAttached.start(guest, domain: id, device: Self.xvda, configuration: .init(abi: .x86_32))
        try await vbdEventually("Connected again") { second.blkif.state == .connected }
        let (status32, back32) = try second.blkif.read(sector: 40, count: bytes.count)
        #expect(status32 == .okay)
        #expect(back32 == bytes)
        #expect(try Self.roundTrip(second.blkif, sector: 200, seed: 0xAB2))
        try await second.close()
        try await running.stop()
    }

    @Test("seventeen frontends at once, one with two disks, each with its own verified data")
    func manyFrontends() async throws {
        let world = try VbdWorld(poolPages: 32768)
        defer { world.stop() }
        var attached: [VbdAttached] = []
        var images: [String] = []
        // The engine factory as `xensplit blkback` makes it (default capacity): the daemon
        // must size its engines for the queues, or the seventh ring on two workers fails.
        let factory = try BlockIOEngineFactory(environment: [BlockIOEngineKind.environmentVariable: "threads"])
        let daemon = try BlkbackDaemon(platform: world.dom0, configuration: .init(workers: 2), factory: factory,
                                       logger: vbdLogger)
        let running = RunningDaemon(daemon)
        let baseline = try world.dom0.domainUsage()
        for index in 0..<17 {
            let a = try world.image("d\(index)a.img", sectors: 2048)
            var disks = ["vdev=xvda,access=rw,target=\(a)"]
            images.append(a)
            if index == 0 {
                let b = try world.image("d\(index)b.img", sectors: 2048)
                disks.append("vdev=xvdb,access=rw,target=\(b)")
                images.append(b)
            }
            let (id, guest) = try await world.guest("g\(index)", disks: disks)
            for disk in disks {
                let number = try DiskSpec(parsing: disk).vdev.number
                attached.append(try VbdAttached.start(guest, domain: id, device: number))
            }
        }
        let fronts = attached
        try await vbdEventually("all Connected", seconds: 60) { fronts.allSatisfy { $0.blkif.state == .connected } }

        // Every frontend on its own thread at once: distinct data per disk, read back twice.
        let results = Mutex([Bool](repeating: false, count: fronts.count))
        let group = DispatchGroup()
        for (index, front) in fronts.enumerated() {
            group.enter()
            let thread = Foundation.Thread {
                var ok = true
                for round in 0..<8 {
                    let sector = UInt64(round) * 64 + UInt64(index % 4) * 8
                    ok = ok && ((try? Self.roundTrip(front.blkif, sector: sector, seed: UInt64(index) << 8 | UInt64(round))) ?? false)
                }
                results.withLock { $0[index] = ok }
                group.leave()
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
        group.wait()
        let ok = results.withLock { $0 }
        #expect(ok.allSatisfy { $0 }, "frontends with wrong data: \(ok.indices.filter { !ok[$0] })")

        // Each disk holds only its own writes.
        for (index, front) in fronts.enumerated() {
            let sector = UInt64(7) * 64 + UInt64(index % 4) * 8
            let (status, back) = try front.blkif.read(sector: sector, count: 2 * 4096)
            #expect(status == .okay)
            #expect(back == pattern(2 * 4096, seed: UInt64(index) << 8 | 7), "disk \(index)")
        }
        for front in fronts { try await front.close() }
        let after = try world.dom0.domainUsage()
        #expect(after[0]?.mappingsHeld == baseline[0]?.mappingsHeld)
        #expect(after[0]?.copyBufferPages == baseline[0]?.copyBufferPages)
        #expect(after[0]?.ports == baseline[0]?.ports)
        try await running.stop()
    }
}

extension BlkifRingDriver {
    /// Sends `count` one-page writes from slot 0 on, without waiting for them.
    func submitWrites(count: Int) throws {
        guard let rings else { throw VbdTestError("\(frontendPath) is not connected") }
        for slot in 0..<count { try rings.submit(.write, slot: slot, sector: UInt64(8 * slot), sectors: 8) }
        try rings.pushRequests()
    }
}
