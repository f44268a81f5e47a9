import Blkif
import Glibc
import Testing
import XenBus
import XenLocal
import XenPlatform
import XenStore
import XenTesting
@testable import BlockBackend

/// The device layer end to end on the local hypervisor: disks attached by LocalToolstack,
/// the daemon serving them, a test frontend per disk over XenBus's frontend driver.
@Suite("blkback devices over the local hypervisor", .serialized)
struct BlkbackDeviceTests {
    static let xvda = try! DiskSpec(parsing: "vdev=xvda,access=rw,target=/dev/null").vdev.number
    static let xvdb = try! DiskSpec(parsing: "vdev=xvdb,access=rw,target=/dev/null").vdev.number

    /// Backend key names Protocols/blkif-xenstore.tsv lists as the backend's.
    static func backendKeyNames() throws -> Set<String> {
        let file = String(#filePath).split(separator: "/").dropLast(3).joined(separator: "/")
        let fd = open("/" + file + "/Protocols/blkif-xenstore.tsv", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw VbdTestError("cannot open Protocols/blkif-xenstore.tsv") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        var names: Set<String> = []
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where !line.hasPrefix("#") {
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
            if fields.count > 1, fields[1] == "backend" { names.insert(String(fields[0])) }
        }
        return names
    }

    @Test("handshake to Connected, published keys, data through the ring", arguments: [UInt32(0), 2])
    func handshakeAndData(order: UInt32) async throws {
        let world = try VbdWorld()
        defer { world.stop() }
        let (id, guest, _) = try await world.guestWithOneDisk(sectors: 4096)
        let running = RunningDaemon(try world.daemon())
        let front = try VbdAttached.start(guest, domain: id, device: Self.xvda, configuration: .init(ringPageOrder: order))
        try await vbdEventually("frontend Connected") { front.blkif.state == .connected }

        let keys = front.blkif.backendKeys
        #expect(keys["sectors"] == "4096")
        #expect(keys["sector-size"] == "512")
        #expect(keys["physical-sector-size"].flatMap { UInt32($0) }.map { $0 >= 512 && $0 % 512 == 0 } == true)
        #expect(keys["discard-granularity"] == keys["physical-sector-size"])
        #expect(keys["info"] == "0")
        #expect(keys["feature-flush-cache"] == "1")
        #expect(keys["feature-barrier"] == "1")
        #expect(keys["feature-discard"] == "1")
        #expect(keys["feature-persistent"] == "1", "offered by default; used only if the frontend offers it too")
        #expect(keys["max-ring-page-order"] == "4")
        #expect(keys["multi-queue-max-queues"] == "4")
        #expect(keys["feature-max-indirect-segments"] == "32")
        let published = Set(keys.keys).subtracting(["params", "frontend-id", "online", "removable", "bootable", "state",
                                                    "dev", "type", "mode", "device-type", "discard-enable", "frontend"])
        let documented = try Self.backendKeyNames()
        #expect(published.subtracting(documented).isEmpty, "undocumented backend keys: \(published.subtracting(documented))")

        let bytes = pattern(3 * 4096, seed: 0xB10C + UInt64(order))
        #expect(try front.blkif.write(bytes, sector: 100) == .okay)
        let (status, back) = try front.blkif.read(sector: 100, count: bytes.count)
        #expect(status == .okay)
        #expect(back == bytes)
        #expect(try front.blkif.read(sector: 4095, count: 1024).0 == .error, "a read past the end is refused")

        try await front.close()
        try await running.stop()
    }

    @Test("x86_32-abi and x86_64-abi rings are served in their own layouts", arguments: [BlkifABI.x86_32, .x86_64])
    func foreignABI(abi: BlkifABI) async throws {
        let world = try VbdWorld()
        defer { world.stop() }
        let (id, guest, _) = try await world.guestWithOneDisk(sectors: 1024)
        let running = RunningDaemon(try world.daemon())
        let front = try VbdAttached.start(guest, domain: id, device: Self.xvda, configuration: .init(abi: abi))
        try await vbdEventually("Connected") { front.blkif.state == .connected }
        let bytes = pattern(8192, seed: 32)
        #expect(try front.blkif.write(bytes, sector: 24) == .okay)
        #expect(try front.blkif.read(sector: 24, count: 8192) == (.okay, bytes))
        try await front.close()
        try await running.stop()
    }

    @Test("toolstack keys: no-discard turns feature-discard off; a cdrom is read-only and removable")
    func toolstackKeys() async throws {
        let world = try VbdWorld()
        defer { world.stop() }
        let a = try world.image("a.img", sectors: 1024)
        let b = try world.image("b.iso", sectors: 1024)
        let (id, guest) = try await world.guest("g", disks: ["vdev=xvda,access=rw,no-discard,target=\(a)",
                                                             "vdev=xvdb,devtype=cdrom,target=\(b)"])
        let running = RunningDaemon(try world.daemon())
        let disk = try VbdAttached.start(guest, domain: id, device: Self.xvda)
        let cdrom = try VbdAttached.start(guest, domain: id, device: Self.xvdb)
        try await vbdEventually("both Connected") { disk.blkif.state == .connected && cdrom.blkif.state == .connected }
        let diskKeys = disk.blkif.backendKeys
        #expect(diskKeys["feature-discard"] == "0")
        #expect(diskKeys["discard-granularity"] == nil)
        let cdromKeys = cdrom.blkif.backendKeys
        let info = BlkifDiskInfo(rawValue: UInt32(cdromKeys["info"] ?? "") ?? 0)
        #expect(info == [.cdrom, .readOnly, .removable])
        #expect(cdromKeys["feature-discard"] == "0")
        #expect(try cdrom.blkif.write(pattern(4096, seed: 1), sector: 0) == .error)
        #expect(try cdrom.blkif.read(sector: 0, count: 4096).0 == .okay)
        try await disk.close()
        try await cdrom.close()
        try await running.stop()
    }

    @Test("two queues: multi-queue-num-queues with queue-N keys, each queue serves I/O")
    func twoQueues() async throws {
        let world = try VbdWorld()
        defer { world.stop() }
        let (id, guest, _) = try await world.guestWithOneDisk(sectors: 2048)
        let running = RunningDaemon(try world.daemon(workers: 2))
        let front = try VbdAttached.start(guest, domain: id, device: Self.xvda, configuration: .init(queues: 2))
        try await vbdEventually("frontend Connected") { front.blkif.state == .connected }
        #expect(running.daemon.queuesPerWorker == [1, 1], "each queue placed on its own worker")
        for queue in 0..<2 {
            let bytes = pattern(4096, seed: UInt64(queue))
            #expect(try front.blkif.write(bytes, sector: UInt64(queue * 8), queue: queue) == .okay)
        }
        for queue in 0..<2 {
            let (status, back) = try front.blkif.read(sector: UInt64(queue * 8), count: 4096, queue: 1 - queue)
            #expect(status == .okay)
            #expect(back == pattern(4096, seed: UInt64(queue)))
        }
        try await front.close()
        try await running.stop()
        #expect(running.daemon.queuesPerWorker == [0, 0])
    }

    @Test("two frontends with two disks each at once; a read-only disk refuses writes")
    func manyDevicesAndReadOnly() async throws {
        let world = try VbdWorld()
        defer { world.stop() }
        var guests: [(DomainID, LocalPlatform)] = []
        for g in 0..<2 {
            let a = try world.image("g\(g)a.img", sectors: 1024)
            let b = try world.image("g\(g)b.img", sectors: 1024)
            // The second guest's second disk is read-only.
            let access = g == 1 ? "ro" : "rw"
            guests.append(try await world.guest("g\(g)", disks: ["vdev=xvda,access=rw,target=\(a)",
                                                                 "vdev=xvdb,access=\(access),target=\(b)"]))
        }
        let running = RunningDaemon(try world.daemon())
        var fronts: [VbdAttached] = []
        for (id, platform) in guests {
            for device in [Self.xvda, Self.xvdb] { fronts.append(try VbdAttached.start(platform, domain: id, device: device)) }
        }
        for front in fronts {
            try await vbdEventually("\(front.frontendPath) Connected") { front.blkif.state == .connected }
        }
        for (n, front) in fronts.enumerated() {
            let bytes = pattern(8192, seed: UInt64(n))
            if n == 3 {
                #expect(front.blkif.backendKeys["info"] == String(BlkifDiskInfo.readOnly.rawValue))
                #expect(try front.blkif.write(bytes, sector: 0) == .error)
                #expect(try front.blkif.read(sector: 0, count: 8192) == (.okay, [UInt8](repeating: 0, count: 8192)))
            } else {
                #expect(front.blkif.backendKeys["info"] == "0")
                #expect(try front.blkif.write(bytes, sector: 16) == .okay)
            }
        }
        for (n, front) in fronts.enumerated() where n != 3 {
            let (status, back) = try front.blkif.read(sector: 16, count: 8192)
            #expect(status == .okay)
            #expect(back == pattern(8192, seed: UInt64(n)), "\(front.frontendPath) reads its own data")
        }
        for front in fronts { try await front.close() }
        try await running.stop()
    }

    @Test("growing the backing file is published as sectors and served")
    func resize() async throws {
        let world = try VbdWorld()
        defer { world.stop() }
        let (id, guest, image) = try await world.guestWithOneDisk(sectors: 1024)
        let running = RunningDaemon(try world.daemon())
        let front = try VbdAttached.start(guest, domain: id, device: Self.xvda)
        try await vbdEventually("frontend Connected") { front.blkif.state == .connected }
        #expect(try front.blkif.write(pattern(4096, seed: 1), sector: 2000) == .error, "past the end before the resize")
        #expect(truncate(image, 4096 * 512) == 0)
        let store = try guest.connectXenStore()
        defer { store.close() }
        try await vbdEventually("sectors becomes 4096") { try await readNode(store, front.backendPath + "/sectors") == "4096" }
        #expect(try front.blkif.write(pattern(4096, seed: 1), sector: 2000) == .okay)
        #expect(try front.blkif.read(sector: 2000, count: 4096) == (.okay, pattern(4096, seed: 1)))
        try await front.close()
        try await running.stop()
    }

    @Test("a frontend that disconnects and comes back is served again, with its data")
    func reconnect() async throws {
        let world = try VbdWorld()
        defer { world.stop() }
        let (id, guest, _) = try await world.guestWithOneDisk(sectors: 1024)
        let running = RunningDaemon(try world.daemon())
        let first = try VbdAttached.start(guest, domain: id, device: Self.xvda)
        try await vbdEventually("first Connected") { first.blkif.state == .connected }
        #expect(try first.blkif.write(pattern(4096, seed: 7), sector: 8) == .okay)
        try await first.close()
        let store = try guest.connectXenStore()
        defer { store.close() }
        try await vbdEventually("backend Closed") { try await readNode(store, first.backendPath + "/state") == "6" }
        try await vbdEventually("no queues left") { running.daemon.queuesPerWorker.allSatisfy { $0 == 0 } }
        try await vbdEventually("the backend unmapped the ring pages") { first.blkif.endPinnedAccess() }

        let second = try VbdAttached.start(guest, domain: id, device: Self.xvda, configuration: .init(ringPageOrder: 1))
        try await vbdEventually("second Connected") { second.blkif.state == .connected }
        #expect(try second.blkif.read(sector: 8, count: 4096) == (.okay, pattern(4096, seed: 7)))
        try await second.close()
        try await running.stop()
    }

    @Test("a restarted daemon takes over a Connected frontend")
    func daemonRestart() async throws {
        let world = try VbdWorld()
        defer { world.stop() }
        let (id, guest, _) = try await world.guestWithOneDisk(sectors: 1024)
        let first = RunningDaemon(try world.daemon())
        let front = try VbdAttached.start(guest, domain: id, device: Self.xvda)
        try await vbdEventually("Connected") { front.blkif.state == .connected }
        #expect(try front.blkif.write(pattern(4096, seed: 3), sector: 0) == .okay)
        try await first.stop()
        let second = RunningDaemon(try world.daemon())
        try await vbdEventually("Connected again") {
            front.blkif.state == .connected && front.blkif.connects == 2
        }
        #expect(try front.blkif.read(sector: 0, count: 4096) == (.okay, pattern(4096, seed: 3)))
        try await front.close()
        try await second.stop()
    }

    @Test("the toolstack removing the device stops it and releases the ring")
    func toolstackRemoves() async throws {
        let world = try VbdWorld()
        defer { world.stop() }
        let (id, guest, _) = try await world.guestWithOneDisk(sectors: 1024)
        let running = RunningDaemon(try world.daemon())
        let front = try VbdAttached.start(guest, domain: id, device: Self.xvda)
        try await vbdEventually("Connected") { front.blkif.state == .connected }
        try await world.toolstack.removeBackends(of: id)
        try await vbdEventually("device released") { running.daemon.connectedDevices.isEmpty }
        #expect(running.daemon.queuesPerWorker == [0, 0])
        try await vbdEventually("frontend disconnected") { front.blkif.disconnects == 1 }
        try await vbdEventually("the backend unmapped the ring pages") { front.blkif.endPinnedAccess() }
        try await front.close()
        try await running.stop()
    }

    @Test("xl's detach: the toolstack writes Closing, the device walks to Closed and lets go of the ring")
    func toolstackWritesClosing() async throws {
        let world = try VbdWorld()
        defer { world.stop() }
        let (id, guest, _) = try await world.guestWithOneDisk(sectors: 1024)
        let running = RunningDaemon(try world.daemon())
        let front = try VbdAttached.start(guest, domain: id, device: Self.xvda)
        try await vbdEventually("Connected") { front.blkif.state == .connected }
        let store = try world.dom0.connectXenStore()
        defer { store.close() }
        try await store.withTransaction { tx in
            try await tx.write(front.backendPath + "/online", "0")
            try await tx.write(front.backendPath + "/state", "5")
        }
        try await vbdEventually("backend Closed") { try await readNode(store, front.backendPath + "/state") == "6" }
        try await vbdEventually("no queues left") { running.daemon.queuesPerWorker == [0, 0] }
        try await vbdEventually("the backend unmapped the ring pages") { front.blkif.endPinnedAccess() }
        try await front.close()
        try await running.stop()
    }

    @Test("a disk whose target is gone goes Closing with an error node; the other disk is served")
    func missingTarget() async throws {
        let world = try VbdWorld()
        defer { world.stop() }
        let (id, guest) = try await world.guestWithTwoDisks()
        let b = world.directory + "/b.img"
        #expect(unlink(b) == 0)
        let running = RunningDaemon(try world.daemon())
        let good = try VbdAttached.start(guest, domain: id, device: Self.xvda)
        let store = try world.dom0.connectXenStore()
        defer { store.close() }
        let errorPath = "/local/domain/0/error/backend/vbd/\(id)/\(Self.xvdb)/error"
        try await vbdEventually("an error node names the missing target") { try await readNode(store, errorPath) != nil }
        #expect(try await readNode(store, errorPath)?.contains(b) == true)
        try await vbdEventually("good device Connected") { good.blkif.state == .connected }
        #expect(try good.blkif.write(pattern(4096, seed: 4), sector: 0) == .okay)
        try await good.close()
        try await running.stop()
    }

    @Test("a frontend that overruns its ring is refused and kept down, and served again after it starts over; the other disk is untouched")
    func ringOverrun() async throws {
        let world = try VbdWorld()
        defer { world.stop() }
        let (id, guest) = try await world.guestWithTwoDisks()
        let running = RunningDaemon(try world.daemon())
        let good = try VbdAttached.start(guest, domain: id, device: Self.xvda)
        let bad = try VbdAttached.start(guest, domain: id, device: Self.xvdb)
        try await vbdEventually("both Connected") { good.blkif.state == .connected && bad.blkif.state == .connected }
        #expect(try bad.blkif.write(pattern(4096, seed: 5), sector: 0) == .okay)
        try bad.blkif.overrunRing()
        try await vbdEventually("the bad frontend was disconnected") { bad.blkif.disconnects == 1 }
        // Our xenbus driver follows the backend to Closed; the backend does not invite it back.
        try await vbdEventually("the backend followed the frontend to Closed") {
            try await readNode(bad.store, bad.backendPath + "/state") == "6"
        }
        #expect(bad.blkif.connects == 1)
        #expect(bad.blkif.state == .closed)
        try await bad.close()

        // Starting over (a new driver: Initialising, fresh rings) is served.
        let again = try VbdAttached.start(guest, domain: id, device: Self.xvdb)
        try await vbdEventually("reconnected with fresh rings") { again.blkif.state == .connected }
        #expect(try again.blkif.read(sector: 0, count: 4096) == (.okay, pattern(4096, seed: 5)))
        #expect(good.blkif.disconnects == 0)
        #expect(try good.blkif.write(pattern(4096, seed: 6), sector: 0) == .okay)
        try await again.close()
        try await good.close()
        try await running.stop()
    }

    @Test("hostile frontend keys close that device with an error node; the other keeps working",
          arguments: ["ring-page-order", "missing-queue-key", "protocol", "queue-count", "second-ring-ref"])
    func hostileKeys(kind: String) async throws {
        let world = try VbdWorld()
        defer { world.stop() }
        let (id, guest) = try await world.guestWithTwoDisks()
        let running = RunningDaemon(try world.daemon())
        let baseline = try world.dom0.domainUsage()
        var plan = BlkifRingDriver.Configuration()
        switch kind {
        case "queue-count":
            plan.queues = 2
            plan.tamper = { $0.set("multi-queue-num-queues", "99") }
        case "second-ring-ref":
            // The first queue's ring maps, the second's gref is not granted: connect must
            // undo the first queue (ring, port, copy buffers) before refusing.
            plan.queues = 2
            plan.tamper = { $0.set("queue-1/ring-ref", "4000") }
        case "ring-page-order":
            plan.ringPageOrder = 1
            plan.tamper = { $0.set("ring-page-order", "9") }
        case "missing-queue-key":
            plan.queues = 2
            plan.tamper = { keys in
                keys = XenbusKeys(entries: keys.entries.filter { $0.key != "queue-1/event-channel" })
            }
        default:
            plan.tamper = { $0.set("protocol", "sparc-abi") }
        }
        let good = try VbdAttached.start(guest, domain: id, device: Self.xvda)
        let bad = try VbdAttached.start(guest, domain: id, device: Self.xvdb, configuration: plan)
        let store = try world.dom0.connectXenStore()
        defer { store.close() }
        let errorPath = "/local/domain/0/error/backend/vbd/\(id)/\(Self.xvdb)/error"
        try await vbdEventually("an error node names the refusal") { try await readNode(store, errorPath) != nil }
        if kind == "protocol" {
            // The accepted names, each once (not the native one repeated).
            let message = try await readNode(store, errorPath) ?? ""
            #expect(message.hasSuffix("expected \(BlkifABI.protocolNames.joined(separator: ", "))"), "\(message)")
            #expect(message.components(separatedBy: BlkifABI.native.protocolName).count == 2, "\(message)")
        }
        try await vbdEventually("good device Connected") { good.blkif.state == .connected }
        #expect(try good.blkif.write(pattern(4096, seed: 9), sector: 0) == .okay)
        #expect(try good.blkif.read(sector: 0, count: 4096) == (.okay, pattern(4096, seed: 9)))
        #expect(bad.blkif.connects == 0, "the refused device never connected")
        #expect(try await readNode(store, bad.backendPath + "/sectors") == nil)
        try await bad.close()
        try await good.close()
        let after = try world.dom0.domainUsage()
        #expect(after[0]?.mappingsHeld == baseline[0]?.mappingsHeld, "no mapping left")
        #expect(after[0]?.ports == baseline[0]?.ports, "no port left")
        #expect(after[0]?.copyBufferPages == baseline[0]?.copyBufferPages, "no copy buffer left")
        #expect(after[id]?.pinnedGrants == 0)
        try await running.stop()
    }
}

extension XenbusKeys {
    init(entries: [(key: String, value: String)]) {
        self.init()
        for (key, value) in entries { set(key, value) }
    }
}
