import ArgumentParser
import BlockBackend
import BlockFrontend
import Dispatch
import Foundation
import Logging
import Synchronization
import URing
import XenLocal
import XenPlatform

/// `xensplit demo`: the whole block path on the local hypervisor, end to end, in one go.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run a guest with two disks on the local hypervisor; write, verify and time them.",
        discussion: """
        In a fresh temporary directory: starts the local hypervisor and the block backend \
        (both in this process, on their own threads), creates two raw images and a domain \
        'guest' with them as xvda and xvdb (as `xl create` would), attaches a userspace \
        blkfront to each as the guest, writes a seeded pattern over each whole disk, flushes, \
        reads it back and compares checksums (and the image files' bytes), printing the \
        throughput. Then the net step (as root; --net-mib 0 skips it): a network namespace for \
        dom0 with a bridge, the net backend making its TAP devices there, a vif for the guest \
        put on the bridge by scripts/hotplug/vif-bridge, a userspace netfront as TAP device \
        eth0 in a namespace for the guest; ping both ways and a checksummed TCP transfer both \
        ways. Then closes the frontends, destroys the domain, stops the backends and the \
        hypervisor and removes the directory and the namespaces. Prints one line per step; exits non-zero \
        naming the step that failed.
        """
    )

    @Option(help: "Size of xvda in MiB.")
    var xvdaMib = 64

    @Option(help: "Size of xvdb in MiB.")
    var xvdbMib = 32

    @Option(help: "Rings per disk (multi-queue-num-queues).")
    var queues: UInt32 = 1

    @OptionGroup var engine: EngineOptions

    @Option(help: "MiB sent each way over TCP in the net step (0 skips the net step).")
    var netMib = 8

    @Option(help: "Pattern seed.")
    var seed: UInt64 = 0x5eed

    @Option(help: "Parent of the temporary directory.")
    var tmpdir = ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"

    @Flag(help: ArgumentHelp("Stop after attaching the disks until SIGINT or SIGTERM (for testing teardown).",
                             visibility: .hidden))
    var pauseAfterAttach = false

    @Flag(help: "Log the components at debug level.")
    var verbose = false

    func validate() throws {
        guard (1...4096).contains(xvdaMib), (1...4096).contains(xvdbMib) else {
            throw ValidationError("disk sizes must be 1...4096 MiB")
        }
        guard (1...4).contains(queues) else { throw ValidationError("--queues must be 1...4") }
        guard (0...1024).contains(netMib) else { throw ValidationError("--net-mib must be 0...1024") }
    }

    func run() async throws {
        var logger = Logger(label: "xensplit.demo")
        logger.logLevel = verbose ? .debug : .warning
        let demo = DemoRun(logger: logger, engine: engine, queues: queues, seed: seed, netMib: netMib,
                           pauseAfterAttach: pauseAfterAttach)
        // A signal ends the run through the normal failure path, so teardown still happens.
        let sources = onStopSignals { sig in demo.abort("interrupted by signal \(sig)") }
        defer { withExtendedLifetime(sources) {} }
        do {
            try await demo.run(parent: tmpdir, disks: [("xvda", xvdaMib), ("xvdb", xvdbMib)])
            if let reason = demo.abortReason { throw CommandFailure(reason) }
        } catch {
            let reason = demo.abortReason.map { "\($0) (\(error))" } ?? "\(error)"
            demo.say("FAILED while \(demo.step): \(reason)", toStandardError: true)
            await demo.tearDown()
            throw ExitCode(1)
        }
        await demo.tearDown()
        if demo.tearDownFailed { throw ExitCode(1) }
        demo.say("done")
    }
}

/// The demo's state, so that teardown after a failure undoes exactly what was set up.
final class DemoRun: @unchecked Sendable {
    // @unchecked: the plain vars are used from one task at a time (run, then tearDown);
    // what `abort` touches from other threads is in `shared`.
    let logger: Logger
    let engine: EngineOptions
    let queues: UInt32
    let seed: UInt64
    private(set) var step = "starting"
    private(set) var tearDownFailed = false
    private var directory: String?
    private var hypervisor: LocalHypervisor?
    private var daemon: BlkbackDaemon?
    private var daemonTask: Task<Void, any Error>?
    private var toolstack: LocalToolstack?
    private var domainCreated = false
    private var domainID: DomainID?
    private var net: DemoNet?
    let netMib: Int
    private let shared = Mutex<(frontends: [BlockFrontend], abortReason: String?)>(([], nil))

    /// How long a frontend may wait for the backend to connect.
    static let connectTimeout: Duration = .seconds(30)

    static let domainName = "guest"
    static let chunk = 1 << 20
    static let concurrentChunks = 4

    let pauseAfterAttach: Bool

    init(logger: Logger, engine: EngineOptions, queues: UInt32, seed: UInt64, netMib: Int = 0, pauseAfterAttach: Bool) {
        self.netMib = netMib
        self.pauseAfterAttach = pauseAfterAttach
        self.logger = logger
        self.engine = engine
        self.queues = queues
        self.seed = seed
    }

    func say(_ line: String, toStandardError: Bool = false) {
        let text = "demo: " + line + "\n"
        if toStandardError {
            FileHandle.standardError.write(Data(text.utf8))
        } else {
            FileHandle.standardOutput.write(Data(text.utf8))
        }
    }

    func run(parent: String, disks: [(vdev: String, mib: Int)]) async throws {
        step = "making the temporary directory"
        var template = Array((parent + "/xensplit-demo-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { throw PlatformError.system("mkdtemp", errno: errno) }
        let directory = String(cString: made)
        self.directory = directory

        step = "starting the local hypervisor"
        var configuration = LocalHypervisor.Configuration(stateDirectory: directory)
        configuration.poolPages = 16384
        configuration.grantEntries = 8192
        let hypervisor = try LocalHypervisor(configuration: configuration, logger: logger)
        self.hypervisor = hypervisor
        hypervisor.start()
        let dom0 = try LocalPlatform(stateDirectory: directory)
        say("hypervisor started (state dir \(directory))")

        step = "starting the block backend"
        let factory = try engine.factory(logger: logger)
        let daemon = try BlkbackDaemon(platform: dom0, factory: factory, logger: logger)
        self.daemon = daemon
        daemonTask = Task { try await daemon.run() }
        say("block backend started (\(daemon.queuesPerWorker.count) workers, \(factory.kind.rawValue) engine)")

        step = "creating the disk images"
        var specs: [DiskSpec] = []
        for disk in disks {
            let path = directory + "/\(disk.vdev).img"
            let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw PlatformError.system("open \(path)", errno: errno) }
            defer { close(fd) }
            guard ftruncate(fd, off_t(disk.mib) << 20) == 0 else { throw PlatformError.system("ftruncate", errno: errno) }
            specs.append(try DiskSpec(parsing: "format=raw, vdev=\(disk.vdev), access=rw, target=\(path)"))
        }

        step = "creating domain \(Self.domainName)"
        let toolstack = LocalToolstack(platform: dom0, logger: logger)
        self.toolstack = toolstack
        domainID = try await toolstack.createDomain(name: Self.domainName, disks: specs)
        domainCreated = true
        say("domain \(Self.domainName) created with "
            + disks.map { "\($0.vdev) (\($0.mib) MiB)" }.joined(separator: " and "))

        step = "joining domain \(Self.domainName)"
        let guest = try LocalPlatform(stateDirectory: directory, domain: Self.domainName)
        var connected: [(String, BlockFrontend, BlockFrontendDisk)] = []
        for (disk, spec) in zip(disks, specs) {
            step = "attaching the frontend of \(disk.vdev)"
            let frontend = try BlockFrontend(platform: guest, devid: "\(spec.vdev.number)",
                                             configuration: BlockFrontendConfiguration(queues: queues), logger: logger)
            let aborted = shared.withLock { s -> Bool in
                s.frontends.append(frontend)
                return s.abortReason != nil
            }
            if aborted { await frontend.close() }
            let watchdog = Task { [weak self] in
                try await Task.sleep(for: Self.connectTimeout)
                self?.abort("the backend did not connect \(disk.vdev) within \(Self.connectTimeout)")
            }
            defer { watchdog.cancel() }
            let info = try await frontend.connected()
            let pages = 1 << info.ringPageOrder
            say("\(disk.vdev) connected: ring \(pages) page\(pages == 1 ? "" : "s"), \(info.queues) queue\(info.queues == 1 ? "" : "s"), "
                + (info.segmentsPerRequest > 11 ? "indirect \(info.segmentsPerRequest) segments" : "\(info.segmentsPerRequest) segments")
                + ", \((info.sectors512 * 512) >> 20) MiB, sector \(info.properties.sectorSize)")
            connected.append((disk.vdev, frontend, info))
        }

        if pauseAfterAttach {
            step = "paused after attaching the disks"
            say("paused until SIGINT or SIGTERM")
            while abortReason == nil { try await Task.sleep(for: .milliseconds(10)) }
            throw CommandFailure("stopped while paused")
        }
        for (index, (vdev, frontend, info)) in connected.enumerated() {
            step = "writing and verifying \(vdev)"
            try await exercise(vdev: vdev, frontend: frontend, disk: info,
                               image: directory + "/\(vdev).img", seed: seed &+ UInt64(index))
        }
        if netMib > 0 {
            if geteuid() == 0 {
                try await runNet(dom0: dom0, guest: guest)
            } else {
                say("net step skipped: network namespaces and TAP devices need root")
            }
        }
    }

    /// The net step: see ``DemoNet``.
    private func runNet(dom0: LocalPlatform, guest: LocalPlatform) async throws {
        guard let domainID, let toolstack else { return }
        let net = DemoNet(logger: logger) { [weak self] in self?.say($0) }
        self.net = net
        step = "starting the net backend"
        self.toolstack = try net.startBackend(dom0: dom0, toolstack: toolstack, factory: try engine.factory(logger: logger))
        step = "attaching a vif to \(Self.domainName)"
        let nic = try VifSpec(parsing: "bridge=\(DemoNet.bridge)")
        try await self.toolstack!.attachNic(nic, to: domainID)
        try net.checkBridged("vif\(domainID).0")
        say("vif 0 of \(Self.domainName) attached; vif-bridge put vif\(domainID).0 on \(DemoNet.bridge)")
        step = "attaching the netfront"
        let watchdog = Task { [weak self] in
            try await Task.sleep(for: Self.connectTimeout)
            self?.abort("the net backend did not connect the vif within \(Self.connectTimeout)")
        }
        try await net.startFrontend(guest: guest, devid: 0)
        watchdog.cancel()
        step = "passing traffic over the vif"
        try await net.exercise(bytes: netMib << 20, seed: seed &+ 0x6e6574)
    }

    /// Writes a seeded pattern over the whole disk, flushes, reads it back, compares.
    private func exercise(vdev: String, frontend: BlockFrontend, disk: BlockFrontendDisk,
                          image: String, seed: UInt64) async throws {
        let bytes = Int(disk.sectors512 * 512)
        let chunks = (bytes + Self.chunk - 1) / Self.chunk
        var generator = SplitMix64(seed: seed)
        var pattern = [UInt8](repeating: 0, count: bytes)
        pattern.withUnsafeMutableBytes { raw in
            for i in stride(from: 0, to: bytes - 7, by: 8) { raw.storeBytes(of: generator.next(), toByteOffset: i, as: UInt64.self) }
        }
        let expected = (0..<chunks).map { fnv1a(pattern[range(of: $0, bytes: bytes)]) }

        let writeStart = ContinuousClock.now
        _ = try await forEachChunk(chunks) { [pattern] index in
            let r = Self.rangeOf(index, bytes: bytes)
            try await frontend.write(sector: UInt64(r.lowerBound / 512), data: Array(pattern[r]))
            return []
        }
        if disk.backend.flushCache || disk.backend.barrier { try await frontend.flush() }
        let writeTime = ContinuousClock.now - writeStart

        let readStart = ContinuousClock.now
        let readBack = try await forEachChunk(chunks) { index in
            let r = Self.rangeOf(index, bytes: bytes)
            return try await frontend.read(sector: UInt64(r.lowerBound / 512), count: UInt64(r.count / 512))
        }
        let readTime = ContinuousClock.now - readStart

        for index in 0..<chunks where fnv1a(readBack[index][...]) != expected[index] {
            throw CommandFailure("\(vdev): chunk \(index) (bytes \(index * Self.chunk)...) read back with a different checksum")
        }
        let file = [UInt8](try Data(contentsOf: URL(fileURLWithPath: image)))
        guard file.count == bytes, fnv1a(file[...]) == fnv1a(pattern[...]) else {
            throw CommandFailure("\(vdev): the image file \(image) does not hold what was written")
        }
        let mib = Double(bytes) / Double(1 << 20)
        let size = mib.rounded() == mib ? "\(Int(mib))" : String(format: "%.2f", mib)
        let rates = String(format: "%.0f MiB/s write, %.0f MiB/s read", mib / writeTime.seconds, mib / readTime.seconds)
        say("\(vdev): wrote \(size) MiB, flushed, read it back: checksums match, image file matches (\(rates))")
    }

    private func range(of index: Int, bytes: Int) -> Range<Int> { Self.rangeOf(index, bytes: bytes) }

    static func rangeOf(_ index: Int, bytes: Int) -> Range<Int> {
        (index * chunk)..<min(bytes, (index + 1) * chunk)
    }

    /// Runs `body` for every chunk index with `concurrentChunks` in flight; results by index.
    private func forEachChunk(_ chunks: Int, _ body: @escaping @Sendable (Int) async throws -> [UInt8]) async throws -> [[UInt8]] {
        try await withThrowingTaskGroup(of: (Int, [UInt8]).self) { group in
            var results = [[UInt8]](repeating: [], count: chunks)
            var next = 0
            while next < min(chunks, Self.concurrentChunks) {
                let index = next
                group.addTask { (index, try await body(index)) }
                next += 1
            }
            while let (index, data) = try await group.next() {
                if let reason = abortReason { throw CommandFailure(reason) }
                results[index] = data
                if next < chunks {
                    let index = next
                    group.addTask { (index, try await body(index)) }
                    next += 1
                }
            }
            return results
        }
    }

    /// Undoes whatever was set up, newest first; says what it could not undo.
    func tearDown() async {
        step = "tearing down"
        let frontends = shared.withLock { s in
            defer { s.frontends = [] }
            return s.frontends
        }
        for frontend in frontends {
            let left = await frontend.close()
            if left > 0 { fail("a frontend left \(left) granted page sets mapped") }
        }
        await net?.closeFrontend(fail: fail)
        if domainCreated, let toolstack {
            do { try await toolstack.destroy(name: Self.domainName) } catch { fail("destroying \(Self.domainName): \(error)") }
        }
        if let daemon, let daemonTask {
            daemon.stop()
            do { try await daemonTask.value } catch { fail("the block backend stopped with: \(error)") }
        }
        daemon = nil
        daemonTask = nil
        if let net, await net.stop(fail: fail), !tearDownFailed {
            say("net torn down: netfront closed, vif removed, net backend stopped, namespaces removed")
        }
        net = nil
        toolstack = nil
        if let hypervisor {
            hypervisor.stopAndWait()
        }
        hypervisor = nil
        guard let directory else { return }
        do { try FileManager.default.removeItem(atPath: directory) } catch { fail("removing \(directory): \(error)") }
        if FileManager.default.fileExists(atPath: directory) {
            fail("\(directory) is still there")
        } else if !tearDownFailed {
            say("torn down: frontends closed, domain destroyed, backend and hypervisor stopped, \(directory) removed")
        }
        self.directory = nil
    }

    /// Why the run was stopped early, if it was.
    var abortReason: String? { shared.withLock { $0.abortReason } }

    /// Stops the run early: closing the frontends fails every wait and request on them.
    func abort(_ reason: String) {
        let frontends = shared.withLock { s -> [BlockFrontend] in
            guard s.abortReason == nil else { return [] }
            s.abortReason = reason
            return s.frontends
        }
        for frontend in frontends { Task { await frontend.close() } }
    }

    private func fail(_ message: String) {
        tearDownFailed = true
        say("teardown: \(message)", toStandardError: true)
    }
}

/// FNV-1a, 64-bit: a cheap checksum to compare what was written with what came back.
func fnv1a(_ bytes: ArraySlice<UInt8>) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in bytes {
        hash ^= UInt64(byte)
        hash &*= 0x0000_0100_0000_01b3
    }
    return hash
}

/// SplitMix64, for a seeded pattern.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

extension Duration {
    /// The duration in seconds, as a Double.
    var seconds: Double {
        let (s, attoseconds) = components
        return Double(s) + Double(attoseconds) / 1e18
    }
}
