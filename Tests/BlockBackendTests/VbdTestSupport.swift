import Foundation
import Blkif
import Dispatch
import Glibc
import Logging
import SharedMemory
import Synchronization
import Testing
import URing
import XenBus
import XenLocal
import XenPlatform
import XenRing
import XenStore
import XenTesting
@testable import BlockBackend

/// Quiet unless something breaks: the daemon logs every state change at info.
let vbdLogger: Logger = {
    var logger = Logger(label: "blkback-device-tests")
    logger.logLevel = .critical
    return logger
}()

/// Log lines kept in memory, for tests that count or read them.
final class LogLines: Sendable {
    struct Entry: Sendable {
        let level: Logger.Level
        let message: String
        let metadata: Logger.Metadata
    }

    struct Handler: LogHandler {
        let record: LogLines
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let merged = metadata.merging(event.metadata ?? [:]) { $1 }
            record.entries.withLock { $0.append(Entry(level: event.level, message: event.message.description, metadata: merged)) }
        }
    }

    let entries = Mutex<[Entry]>([])

    /// A logger whose every line lands here.
    var logger: Logger { Logger(label: "recorded") { [self] _ in Handler(record: self) } }

    func at(_ level: Logger.Level) -> [Entry] { entries.withLock { $0.filter { $0.level == level } } }
    func count(_ message: String) -> Int { entries.withLock { $0.filter { $0.message == message }.count } }
    func metadata(of message: String) -> [Logger.Metadata] {
        entries.withLock { $0.filter { $0.message == message }.map(\.metadata) }
    }
}

/// A local hypervisor served on a thread of the test process, in its own state directory
/// (XenLocalTests' fixture, trimmed), with image files in a directory of their own.
final class VbdWorld: @unchecked Sendable {
    let directory: String
    let hypervisor: LocalHypervisor
    let dom0: LocalPlatform
    let toolstack: LocalToolstack

    init(poolPages: Int = 8192) throws {
        var template = Array("/tmp/xensplit-blkdev-test-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw PlatformError.system("mkdtemp", errno: errno) }
        directory = String(cString: made)
        var configuration = LocalHypervisor.Configuration(stateDirectory: directory)
        configuration.poolPages = poolPages
        configuration.grantEntries = 2048
        hypervisor = try LocalHypervisor(configuration: configuration, logger: vbdLogger)
        hypervisor.start()
        dom0 = try LocalPlatform(stateDirectory: directory)
        toolstack = LocalToolstack(platform: dom0)
    }

    /// An image file of `sectors` 512-byte sectors in the world's directory.
    func image(_ name: String, sectors: UInt64) throws -> String {
        let path = directory + "/" + name
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw PlatformError.system("open", errno: errno) }
        defer { close(fd) }
        guard ftruncate(fd, off_t(sectors * 512)) == 0 else { throw PlatformError.system("ftruncate", errno: errno) }
        return path
    }

    /// Creates a guest with `disks` (xl disk specs) the way `xl create` does; returns its
    /// id and a platform acting as it.
    func guest(_ name: String, disks: [String]) async throws -> (DomainID, LocalPlatform) {
        let id = try await toolstack.createDomain(name: name, disks: disks.map { try DiskSpec(parsing: $0) })
        return (id, try LocalPlatform(stateDirectory: directory, domain: name))
    }

    /// A guest "g" whose xvda is a fresh read-write image of `sectors` sectors; also
    /// returns the image's path.
    func guestWithOneDisk(sectors: UInt64, image name: String = "a.img") async throws -> (DomainID, LocalPlatform, String) {
        let path = try image(name, sectors: sectors)
        let (id, guest) = try await guest("g", disks: ["vdev=xvda,access=rw,target=\(path)"])
        return (id, guest, path)
    }

    /// A guest "g" with two 1024-sector read-write disks, xvda (a.img) and xvdb (b.img).
    func guestWithTwoDisks() async throws -> (DomainID, LocalPlatform) {
        let a = try image("a.img", sectors: 1024)
        let b = try image("b.img", sectors: 1024)
        return try await guest("g", disks: ["vdev=xvda,access=rw,target=\(a)", "vdev=xvdb,access=rw,target=\(b)"])
    }

    func daemon(workers: Int = 2, resizeInterval: Duration = .milliseconds(50)) throws -> BlkbackDaemon {
        let factory = try BlockIOEngineFactory(configuration: .init(queueDepth: 64, capacity: 1024, threads: 2),
                                               environment: [BlockIOEngineKind.environmentVariable: "threads"])
        return try BlkbackDaemon(platform: dom0, configuration: .init(workers: workers, resizeInterval: resizeInterval),
                                 factory: factory, logger: vbdLogger)
    }

    func stop() {
        hypervisor.stopAndWait()
        for entry in (try? listDirectory(directory)) ?? [] where entry.hasSuffix(".img") { unlink(directory + "/" + entry) }
        rmdirRecursive(directory)
    }
}

/// Runs a daemon's `run()` in a task, for tests.
final class RunningDaemon: Sendable {
    let daemon: BlkbackDaemon
    let task: Task<Void, any Error>

    init(_ daemon: BlkbackDaemon) {
        self.daemon = daemon
        task = Task { try await daemon.run() }
    }

    func stop() async throws {
        daemon.stop()
        try await task.value
    }
}

extension BlkifRingDriver {
    /// Publishes a req_prod a whole ring ahead of the responses (io/ring.h forbids more
    /// than RING_SIZE outstanding) and notifies: a frontend breaking the ring.
    func overrunRing(queue: Int = 0) throws {
        guard let rings else { throw VbdTestError("\(frontendPath) is not connected") }
        let ring = rings.ring(queue)
        ring.shared.storeRequestProducer(ring.shared.loadResponseProducer() &+ ring.size &+ 1)
        try rings.notify(queue: queue)
    }
}

extension MockRingPeer.Frontend {
    /// One direct request on the first pages of `data` (whole sectors), waited for;
    /// returns the response's status.
    func blkifTransfer(_ operation: BlkifDirectOperation, sector: UInt64, byteCount: Int, data: SharedPages,
                       id: UInt64, abi: BlkifABI) throws -> BlkifStatus {
        let pages = (byteCount + pageSize - 1) / pageSize
        var segments: [BlkifSegment] = []
        for page in 0..<pages {
            let bytes = min(pageSize, byteCount - page * pageSize)
            segments.append(BlkifSegment(gref: data.refs[page], firstSector: 0, lastSector: UInt8(bytes / 512 - 1)))
        }
        let request = BlkifRequest.direct(try BlkifDirectRequest(operation: operation, handle: 0, id: id, sectorNumber: sector,
                                                                 segments: BlkifSegments(segments)))
        try produceRequest { request.encode(into: $0, at: 0, abi: abi) }
        try pushRequestsAndNotify()
        var found: BlkifStatus?
        try awaitBlkifResponses(abi: abi) { response in
            if response.id == id { found = response.status }
            return found != nil
        }
        return found!
    }

    /// Consumes responses, handing each to `take`, until it returns true; sleeps on the
    /// event channel in between (30 s without an event is a failure).
    func awaitBlkifResponses(abi: BlkifABI, _ take: (BlkifResponse) -> Bool) throws {
        var done = false
        while true {
            try consumeResponses { slot in
                if let response = try? BlkifResponse.decode(from: slot, at: 0, abi: abi), take(response) { done = true }
            }
            if done { return }
            if try finalCheckForResponses() { continue }
            try Self.waitForBlkifEvent(eventChannel)
        }
    }

    static func waitForBlkifEvent(_ channel: any EventChannel) throws {
        while true {
            if let port = try channel.pending() {
                try channel.unmask(port)
                return
            }
            var p = pollfd(fd: channel.fileDescriptor, events: Int16(POLLIN), revents: 0)
            let ready = poll(&p, 1, 30_000)
            if ready == 0 { throw VbdTestError("the backend sent no event for 30 s") }
            if ready < 0, errno != EINTR { throw PlatformError.system("poll", errno: errno) }
        }
    }
}

struct VbdTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A vbd frontend driven by XenTesting's ``BlkifRingDriver``, with a xenstore connection
/// of the guest's for the test to look and write with.
struct VbdAttached {
    let blkif: BlkifRingDriver
    let store: XenStoreClient
    let frontendPath: String
    let backendPath: String

    static func start(_ platform: LocalPlatform, domain: DomainID, device: UInt32,
                      configuration: BlkifRingDriver.Configuration = .init()) throws -> VbdAttached {
        let frontendPath = LocalToolstack.frontendPath(kind: "vbd", frontend: domain, device: device)
        let blkif = try BlkifRingDriver(platform: platform, frontendPath: frontendPath, configuration: configuration,
                                        logger: vbdLogger)
        return VbdAttached(blkif: blkif, store: try platform.connectXenStore(), frontendPath: frontendPath,
                           backendPath: LocalToolstack.backendPath(kind: "vbd", frontend: domain, device: device))
    }

    /// Closes the frontend; every page it granted must come back within 20 s.
    func close() async throws {
        store.close()
        let granted = await blkif.close(grantWaitSeconds: 20)
        guard granted == 0 else { throw VbdTestError("\(frontendPath): \(granted) page sets still granted after close") }
    }
}

/// Waits (bounded: a hang becomes a failure, never a timing assertion) until `condition`:
/// XenTesting's `eventually`, whose bound counts this test's own time, so a pool kept busy
/// by other suites in a full run does not fail a condition that needed a thread meanwhile.
func vbdEventually(_ what: String, seconds: Int = 20, _ condition: @escaping @Sendable () async throws -> Bool) async throws {
    try await eventually(what, seconds: seconds, every: .milliseconds(5), condition)
}

/// The value of `path`, or nil if absent.
func readNode(_ store: XenStoreClient, _ path: String) async throws -> String? {
    do {
        return try await store.readString(path)
    } catch .daemon(.enoent) {
        return nil
    }
}

/// Seeded bytes.
func pattern(_ count: Int, seed: UInt64) -> [UInt8] {
    var generator = SeededGenerator(seed: seed)
    return (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
}

/// The names in directory `path` ("." and ".." left out). Not readdir(3) by hand: a
/// dirent is only as long as its name, and loading its fixed-size `d_name` reads past the
/// end of the directory buffer (AddressSanitizer caught that here).
func listDirectory(_ path: String) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: path)
}

func rmdirRecursive(_ path: String) {
    for name in (try? listDirectory(path)) ?? [] {
        let child = path + "/" + name
        var info = stat()
        if lstat(child, &info) == 0, info.st_mode & S_IFMT == S_IFDIR { rmdirRecursive(child) } else { unlink(child) }
    }
    rmdir(path)
}
