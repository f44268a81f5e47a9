import Blkif
import Foundation
import Glibc
import SystemCalls
import Testing
import URing
import XenLocal
import XenTesting
@testable import BlockBackend

/// Direct I/O (O_DIRECT) of backing stores: asked for by the toolstack's `direct-io-safe`,
/// done only where the file system or device does it, with the sector size it needs.
@Suite("blkback direct I/O", .serialized)
struct BlkbackDirectIOTests {
    /// A loop device over `file` with `sectorSize`-byte logical sectors, detached at deinit.
    final class LoopDevice {
        let path: String

        init(file: String, sectorSize: Int) throws {
            let result = try run("/sbin/losetup", ["--find", "--show", "--sector-size", "\(sectorSize)", file])
            guard result.status == 0, result.out.hasPrefix("/dev/loop") else {
                throw VbdTestError("losetup over \(file): status \(result.status): \(result.err)")
            }
            path = result.out.trimmingCharacters(in: .whitespacesAndNewlines)
        }

        deinit { _ = try? run("/sbin/losetup", ["--detach", path]) }
    }

    static func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
        let process = try ChildProcess(executable, arguments, standardOutput: .pipe, standardError: .pipe)
        let (o, e) = try process.collectOutput()
        return (process.wait().code, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    /// A one-worker daemon on io_uring (the engine O_DIRECT matters to), running.
    static func uringDaemon(_ world: VbdWorld) throws -> RunningDaemon {
        let factory = try BlockIOEngineFactory(configuration: .init(queueDepth: 64, capacity: 1024),
                                               environment: [BlockIOEngineKind.environmentVariable: "uring"])
        return RunningDaemon(try BlkbackDaemon(platform: world.dom0, configuration: .init(workers: 1),
                                               factory: factory, logger: vbdLogger))
    }

    /// Whether the open file description of `descriptor` has O_DIRECT, as the kernel says.
    static func hasDirectFlag(_ descriptor: Int32) -> Bool {
        let flags = fcntl(descriptor, F_GETFL)
        return flags >= 0 && flags & FileBackingStore.O_DIRECT != 0
    }

    /// The descriptors this process holds open on `path`.
    static func descriptors(openOn path: String) throws -> [Int32] {
        try listDirectory("/proc/self/fd").compactMap { entry -> Int32? in
            guard let fd = Int32(entry) else { return nil }
            var target = [CChar](repeating: 0, count: 4096)
            let n = readlink("/proc/self/fd/\(entry)", &target, target.count - 1)
            guard n > 0 else { return nil }
            return String(decoding: target[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) == path ? fd : nil
        }
    }

    @Test("a file on a disk file system is opened O_DIRECT when asked, and only then")
    func diskFile() throws {
        let image = try TestImage(sectors: 1024)
        let direct = try FileBackingStore(path: image.path, readOnly: false, direct: true)
        defer { direct.close() }
        #expect(direct.direct)
        #expect(direct.directUnavailable == nil)
        #expect(Self.hasDirectFlag(direct.fileDescriptor))
        #expect(direct.logicalSectorSize == 512, "an ext4 file on a 512-byte-sector disk")
        let buffered = try FileBackingStore(path: image.path, readOnly: false)
        defer { buffered.close() }
        #expect(!buffered.direct && buffered.directUnavailable == nil)
        #expect(!Self.hasDirectFlag(buffered.fileDescriptor))
    }

    @Test("a tmpfs file takes O_DIRECT and stays buffered: the store says so and keeps the page cache")
    func tmpfsFile() throws {
        let path = "/dev/shm/xensplit-direct-\(getpid())"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        try #require(fd >= 0)
        #expect(ftruncate(fd, 1 << 20) == 0)
        close(fd)
        defer { unlink(path) }
        let store = try FileBackingStore(path: path, readOnly: false, direct: true)
        defer { store.close() }
        #expect(!store.direct)
        #expect(store.directUnavailable == "the file system does no direct I/O (statx reports no O_DIRECT alignment)")
        #expect(!Self.hasDirectFlag(store.fileDescriptor))
        #expect(store.logicalSectorSize == 512)
    }

    @Test("a loop device of 512- or 4096-byte sectors: direct, and its sector size is what the frontend is told",
          arguments: [512, 4096])
    func loopDevice(sectorSize: Int) throws {
        let image = try TestImage(sectors: 2048)
        let loop = try LoopDevice(file: image.path, sectorSize: sectorSize)
        let store = try FileBackingStore(path: loop.path, readOnly: false, direct: true)
        defer { store.close() }
        #expect(store.isBlockDevice)
        #expect(store.direct)
        #expect(Self.hasDirectFlag(store.fileDescriptor))
        #expect(store.logicalSectorSize == UInt32(sectorSize))
        #expect(store.physicalSectorSize >= UInt32(sectorSize))
        #expect(try store.currentSectors() == 2048)
        #expect(store.diskProperties(sectors512: 2048).sectorSize == UInt32(sectorSize))
    }

    /// Three disks through the daemon and io_uring: xvda (direct-io-safe, on /tmp) goes
    /// O_DIRECT, xvdb (direct-io-safe, on tmpfs) and xvdc (no direct-io-safe) stay
    /// buffered; data written through each reads back and lands in its file.
    @Test("direct-io-safe disks are served with O_DIRECT where it is done; data verified through io_uring")
    func daemonHonoursDirectIOSafe() async throws {
        let world = try VbdWorld()
        defer { world.stop() }
        let onDisk = try world.image("a.img", sectors: 4096)
        let plain = try world.image("c.img", sectors: 4096)
        let onTmpfs = "/dev/shm/xensplit-direct-daemon-\(getpid()).img"
        let fd = open(onTmpfs, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        try #require(fd >= 0)
        #expect(ftruncate(fd, 4096 * 512) == 0)
        close(fd)
        defer { unlink(onTmpfs) }
        let (id, guest) = try await world.guest("g", disks: [
            "vdev=xvda,access=rw,direct-io-safe,target=\(onDisk)",
            "vdev=xvdb,access=rw,direct-io-safe,target=\(onTmpfs)",
            "vdev=xvdc,access=rw,target=\(plain)",
        ])
        let running = try Self.uringDaemon(world)
        let expected: [(vdev: String, path: String, direct: Bool)] = [("xvda", onDisk, true), ("xvdb", onTmpfs, false),
                                                                      ("xvdc", plain, false)]
        for (index, disk) in expected.enumerated() {
            let number = try DiskSpec.VirtualDevice(disk.vdev).number
            let front = try VbdAttached.start(guest, domain: id, device: number)
            try await vbdEventually("\(disk.vdev) Connected") { front.blkif.state == .connected }
            let bytes = pattern(5 * 4096, seed: 0xD10 + UInt64(index))
            #expect(try front.blkif.write(bytes, sector: 64) == .okay, "\(disk.vdev)")
            let (status, back) = try front.blkif.read(sector: 64, count: bytes.count)
            #expect(status == .okay && back == bytes, "\(disk.vdev)")
            let held = try Self.descriptors(openOn: disk.path)
            #expect(held.count == 1, "\(disk.vdev): the backend holds the store open once")
            #expect(held.map(Self.hasDirectFlag) == [disk.direct], "\(disk.vdev)")
            try await front.close()
            let file = try FileHandle(forReadingFrom: URL(fileURLWithPath: disk.path))
            try file.seek(toOffset: 64 * 512)
            #expect(Array(try file.read(upToCount: bytes.count) ?? Data()) == bytes, "\(disk.vdev): the file holds the data")
            try file.close()
        }
        try await running.stop()
    }

    /// A block device of 4096-byte sectors served O_DIRECT: the frontend is told
    /// sector-size 4096 and `sectors` in 512-byte units (as Linux's blkback writes it),
    /// aligned requests move data, a request that splits a sector is answered with an error
    /// and the next one is served.
    @Test("a 4096-byte-sector block device through the daemon: its keys, aligned data, a split sector refused")
    func daemonServesFourKilobyteSectors() async throws {
        let world = try VbdWorld()
        defer { world.stop() }
        let image = try TestImage(sectors: 4096)
        let loop = try LoopDevice(file: image.path, sectorSize: 4096)
        let (id, guest) = try await world.guest("g", disks: ["vdev=xvda,access=rw,direct-io-safe,target=\(loop.path)"])
        let running = try Self.uringDaemon(world)
        let front = try VbdAttached.start(guest, domain: id, device: try DiskSpec.VirtualDevice("xvda").number)
        try await vbdEventually("xvda Connected") { front.blkif.state == .connected }
        let keys = front.blkif.backendKeys
        #expect(keys["sector-size"] == "4096")
        #expect(keys["sectors"] == "4096", "2 MiB in 512-byte units, not 512 sectors of 4096")
        #expect(try Self.descriptors(openOn: loop.path).map(Self.hasDirectFlag) == [true])

        let bytes = pattern(4 * 4096, seed: 0x4C)
        #expect(try front.blkif.write(bytes, sector: 8 * 10) == .okay)
        let (status, back) = try front.blkif.read(sector: 8 * 10, count: bytes.count)
        #expect(status == .okay && back == bytes)
        #expect(try front.blkif.read(sector: 8 * 20 + 1, count: 4096).0 == .error, "a read that splits 4096-byte sectors")
        #expect(try front.blkif.write(Array(bytes[0..<512]), sector: 8 * 30) == .error, "a 512-byte write to it")
        #expect(try front.blkif.write(bytes, sector: 8 * 30) == .okay, "the queue still serves")
        try await front.close()
        try await running.stop()
        let contents = try image.contents()
        #expect(Array(contents[(80 * 512)..<(80 * 512 + bytes.count)]) == bytes)
        #expect(Array(contents[(240 * 512)..<(240 * 512 + bytes.count)]) == bytes)
    }
}
