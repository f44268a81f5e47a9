import BlockBackend
import BlockFrontend
import Dispatch
import Foundation
import Glibc
import Logging
import SystemCalls
import Synchronization
import URing
import XenLocal
import XenPlatform

// What the `blkback` and `blkfront` suites share: their options, workloads, the
// in-process world (local hypervisor, block backend, frontends), the frontend-library
// load generator, fio as the reference, and per-thread CPU accounting.

/// Why a block suite stopped.
enum BlockBenchError: Error, CustomStringConvertible {
    /// A bad argument or an impossible workload.
    case usage(String)
    /// The world, a frontend or a reference server could not be set up.
    case setup(String)
    /// An I/O failed or a reference tool failed or printed something unreadable.
    case io(String)

    var description: String {
        switch self {
        case let .usage(text): return "usage: \(text)"
        case let .setup(text): return "setup: \(text)"
        case let .io(text): return text
        }
    }
}

/// `[--runs N] [--quick] [--only NAME-PART] [--verbose]`, as the other suites take them.
struct BlockBenchOptions {
    var runs = 5
    var quick = false
    var only: String?
    var verbose = false

    init(arguments: [String], suite: String) throws {
        var iterator = arguments.makeIterator()
        while let argument = iterator.next() {
            switch argument {
            case "-h", "--help":
                print("""
                usage: xensplit-bench \(suite) [--runs N] [--quick] [--only NAME-PART] [--verbose]
                  --runs N          alternating runs of ours and the reference (default 5)
                  --quick           short runs on a 64 MiB file (smoke tests)
                  --only NAME-PART  only the comparisons whose name contains NAME-PART (e.g. randread, f16, -copy);
                                    a trailing $ anchors it at the end of the name (f1-q1$ leaves out f1-q1-copy)
                  --verbose         progress on standard error
                Prints: bench NAME ours=V reference=V unit=U ratio=OURS/REF spread=PCT
                """)
                exit(0)
            case "--quick": quick = true
            case "--verbose": verbose = true
            case "--runs":
                guard let value = iterator.next().flatMap(Int.init), value >= 1 else {
                    throw BlockBenchError.usage("xensplit-bench \(suite): --runs takes a whole number >= 1")
                }
                runs = value
            case "--only":
                guard let value = iterator.next() else {
                    throw BlockBenchError.usage("xensplit-bench \(suite): --only takes part of a comparison name")
                }
                only = value
            default:
                throw BlockBenchError.usage("xensplit-bench \(suite) [--runs N] [--quick] [--only NAME-PART] [--verbose]: "
                    + "unknown argument \(argument)")
            }
        }
    }

    /// Length of one run of either side.
    var seconds: Double { quick ? 0.3 : 2 }
    /// The backing file: 1 GiB, or 64 MiB with --quick.
    var fileSize: Int { quick ? 64 << 20 : 1 << 30 }

    func selected(_ name: String) -> Bool {
        guard let only else { return true }
        return only.hasSuffix("$") ? name.hasSuffix(only.dropLast()) : name.contains(only)
    }

    func log(_ text: String) { if verbose { warn(text) } }
}

/// One load pattern, the same for ours and the reference.
struct BlockBenchWorkload {
    var name: String
    var random: Bool
    var write: Bool
    var blockSize: Int
    var depth: Int

    /// Small random I/O counts operations; large sequential I/O counts bandwidth.
    var unit: String { random ? "IOPS" : "MiB/s" }

    func figure(operations: Int, seconds: Double) -> Double {
        random ? Double(operations) / seconds : Double(operations * blockSize) / seconds / Double(1 << 20)
    }

    /// fio's `rw=`.
    var fioPattern: String { random ? (write ? "randwrite" : "randread") : (write ? "write" : "read") }

    static let randomRead4K = BlockBenchWorkload(name: "randread-4k-qd32", random: true, write: false, blockSize: 4096, depth: 32)
    static let randomWrite4K = BlockBenchWorkload(name: "randwrite-4k-qd32", random: true, write: true, blockSize: 4096, depth: 32)
}

// MARK: Cleanup, also on SIGINT and SIGTERM

/// Files, directories and child processes to remove or stop however the bench ends.
enum BenchCleanup {
    private static let state = Mutex<(paths: [String], pids: [Int32], installed: Bool)>(([], [], false))
    nonisolated(unsafe) private static var sources: [any DispatchSourceSignal] = []

    /// Removes `path` (file or directory tree) at the end, or on a signal.
    static func add(path: String) {
        installSignalHandlers()
        state.withLock { $0.paths.append(path) }
    }

    /// Sends SIGTERM to `pid` on a signal (the owner stops it itself otherwise).
    static func add(pid: Int32) {
        installSignalHandlers()
        state.withLock { $0.pids.append(pid) }
    }

    static func remove(pid: Int32) {
        state.withLock { $0.pids.removeAll { $0 == pid } }
    }

    /// Removes `path` now and forgets it.
    static func removeNow(path: String) {
        state.withLock { $0.paths.removeAll { $0 == path } }
        try? FileManager.default.removeItem(atPath: path)
    }

    /// Undoes everything registered: stops the children, removes the paths.
    static func runAll() {
        let (paths, pids) = state.withLock { s in
            defer { s.paths = []; s.pids = [] }
            return (s.paths, s.pids)
        }
        for pid in pids { kill(pid, SIGTERM) }
        for path in paths.reversed() { try? FileManager.default.removeItem(atPath: path) }
    }

    private static func installSignalHandlers() {
        let first = state.withLock { s -> Bool in
            defer { s.installed = true }
            return !s.installed
        }
        guard first else { return }
        sources = [SIGINT, SIGTERM].map { sig in
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                warn("xensplit-bench: signal \(sig): cleaning up")
                runAll()
                _exit(128 + sig)
            }
            source.resume()
            return source
        }
    }
}

/// `env` arguments that give a child the default SIGINT and SIGTERM handling: this
/// process ignores both (its dispatch sources catch them for the cleanup), and an ignored
/// signal stays ignored across exec, so without this a child could not be stopped with
/// them (nor would nbdkit's --exit-with-parent, which sends SIGTERM, work).
let benchChildSignals = ["--default-signal=INT,TERM"]

/// A backing file of `size` bytes in /dev/shm, filled with non-zero data; removed by
/// ``BenchCleanup`` if the bench dies before its owner removes it.
func makeBenchImage(_ label: String, size: Int) throws -> String {
    let path = "/dev/shm/xensplit-bench-\(label)-\(getpid()).img"
    BenchCleanup.add(path: path)
    do {
        try UringBenchFile.create(path: path, size: size)
    } catch {
        BenchCleanup.removeNow(path: path)
        throw error
    }
    return path
}

// MARK: Per-thread CPU

/// CPU time of this process's threads, from /proc/self/task (schedstat: nanoseconds on CPU).
enum ThreadCPU {
    static func threads() -> Set<Int32> {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        return Set(names.compactMap(Int32.init))
    }

    static func name(_ tid: Int32) -> String {
        guard let text = try? String(contentsOfFile: "/proc/self/task/\(tid)/comm", encoding: .utf8) else { return "" }
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Nanoseconds `tid` has run (0 once it exited).
    static func nanoseconds(_ tid: Int32) -> UInt64 {
        guard let text = try? String(contentsOfFile: "/proc/self/task/\(tid)/schedstat", encoding: .utf8),
              let first = text.split(separator: " ").first, let value = UInt64(first) else { return 0 }
        return value
    }

    /// Nanoseconds run so far by each of `owners` and of the io_uring kernel threads they
    /// started (`iou-wrk-TID` for punted work, `iou-sqp-TID` for submission polling),
    /// which the kernel lists among the process's tasks.
    static func sample(_ owners: Set<Int32>) -> [Int32: UInt64] {
        let helpers = Set(owners.flatMap { ["iou-wrk-\($0)", "iou-sqp-\($0)"] })
        var times: [Int32: UInt64] = [:]
        for tid in threads() where owners.contains(tid) || helpers.contains(name(tid)) {
            times[tid] = nanoseconds(tid)
        }
        return times
    }

    /// Nanoseconds run between two samples by the threads alive at the second (an
    /// io_uring worker that exited in between takes its time with it).
    static func elapsed(from before: [Int32: UInt64], to after: [Int32: UInt64]) -> UInt64 {
        after.reduce(0) { total, entry in
            let start = before[entry.key] ?? 0
            return total + (entry.value >= start ? entry.value - start : 0)
        }
    }

    /// Nanoseconds run by the whole process so far (user + system).
    static func processNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

// MARK: The in-process world

/// The local hypervisor (on its thread), the block backend (its workers and a control
/// task) and the frontends attached to it, all in this process, in a state directory of
/// their own under /tmp. The backend's threads are told apart from the rest of the
/// process by which threads appeared while it was made, so its CPU time can be read alone.
final class BlockBenchWorld: @unchecked Sendable {
    // @unchecked: used from the suite's one task at a time.
    let directory: String
    let hypervisor: LocalHypervisor
    let dom0: LocalPlatform
    let toolstack: LocalToolstack
    let daemon: BlkbackDaemon
    let daemonTask: Task<Void, any Error>
    /// The backend's threads: its workers (and its xenstore client's, if any).
    let backendThreads: Set<Int32>
    /// The local hypervisor's thread. A grant copy is a request to it over its socket,
    /// which it serves on this thread, so its CPU time is the backend's too (on Xen the
    /// copy hypercall runs on the backend's vCPU).
    let hypervisorThreads: Set<Int32>
    let engineKind: String
    private(set) var domains: [String] = []
    private(set) var frontends: [BlockFrontend] = []
    private var closers: [() async -> Void] = []
    let logger: Logger

    /// Frontends wait this long at most for the backend to connect them.
    static let connectTimeout: Duration = .seconds(60)

    init(logger: Logger) throws {
        self.logger = logger
        var template = Array("/tmp/xensplit-bench-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw BlockBenchError.setup("mkdtemp: errno \(errno)") }
        directory = String(cString: made)
        BenchCleanup.add(path: directory)
        var configuration = LocalHypervisor.Configuration(stateDirectory: directory)
        // Every domain, dom0 included, gets a pool this large (memfd pages are only
        // allocated when touched): dom0's holds the backend's copy buffers, one per slot
        // per queue, 64 queues of 32 slots x 33 pages for the idle test.
        configuration.poolPages = 131072
        configuration.grantEntries = 8192
        do {
            hypervisor = try LocalHypervisor(configuration: configuration, logger: logger)
        } catch {
            BenchCleanup.removeNow(path: directory)
            throw error
        }
        let beforeHypervisor = ThreadCPU.threads()
        hypervisor.start()
        hypervisorThreads = ThreadCPU.threads().subtracting(beforeHypervisor)
        do {
            dom0 = try LocalPlatform(stateDirectory: directory)
            toolstack = LocalToolstack(platform: dom0)
            // Each queue reserves its slots + 2 entries in its worker's engine, and the
            // default capacity (128) holds only three queues: room for 32 per worker.
            let factory = try BlockIOEngineFactory(configuration: .init(queueDepth: 64, capacity: 2048), logger: logger)
            engineKind = factory.kind.rawValue
            let before = ThreadCPU.threads()
            // XENSPLIT_BENCH_RESTART_STATE=on measures the cost of the backend's restart
            // state (Protocols/blkback-restart.md); off (the default) runs without it.
            var backend = BlkbackDaemon.Configuration()
            if ProcessInfo.processInfo.environment["XENSPLIT_BENCH_RESTART_STATE"] == "on" {
                backend.restartStateDirectory = directory + "/blkback"
            }
            daemon = try BlkbackDaemon(platform: dom0, configuration: backend, factory: factory, logger: logger)
            backendThreads = ThreadCPU.threads().subtracting(before)
        } catch {
            hypervisor.stopAndWait()
            BenchCleanup.removeNow(path: directory)
            throw error
        }
        let daemon = self.daemon
        daemonTask = Task { try await daemon.run() }
    }

    /// Creates `count` domains `bench-0`... each with `image` as its xvda (vdev 51712), and
    /// joins each as a guest.
    func createDomains(count: Int, image: String) async throws -> [LocalPlatform] {
        let spec = try DiskSpec(parsing: "format=raw, vdev=xvda, access=rw, target=\(image)")
        var platforms: [LocalPlatform] = []
        for index in 0..<count {
            let name = "bench-\(index)"
            _ = try await toolstack.createDomain(name: name, disks: [spec])
            domains.append(name)
            platforms.append(try LocalPlatform(stateDirectory: directory, domain: name))
        }
        return platforms
    }

    /// Creates `count` domains and attaches a BlockFrontend to each; returns once every
    /// one is connected.
    func attach(count: Int, image: String, configuration: BlockFrontendConfiguration) async throws -> [BlockFrontendDisk] {
        for platform in try await createDomains(count: count, image: image) {
            frontends.append(try BlockFrontend(platform: platform, devid: "51712", configuration: configuration,
                                               logger: logger))
        }
        let frontends = self.frontends
        let watchdog = Task {
            try await Task.sleep(for: Self.connectTimeout)
            for frontend in frontends { await frontend.close() }
        }
        defer { watchdog.cancel() }
        var disks: [BlockFrontendDisk] = []
        for frontend in frontends {
            do {
                disks.append(try await frontend.connected())
            } catch {
                throw BlockBenchError.setup("a frontend did not connect within \(Self.connectTimeout): \(error)")
            }
        }
        return disks
    }

    /// Runs `close` at the next ``detach()``, before the domains are destroyed.
    func onDetach(_ close: @escaping () async -> Void) { closers.append(close) }

    /// Closes every frontend and destroys their domains.
    func detach() async throws {
        var failure: (any Error)?
        for frontend in frontends {
            let left = await frontend.close()
            if left > 0 { failure = failure ?? BlockBenchError.io("a frontend left \(left) granted page sets mapped") }
        }
        frontends = []
        for close in closers { await close() }
        closers = []
        for name in domains {
            do { try await toolstack.destroy(name: name) } catch { failure = failure ?? error }
        }
        domains = []
        if let failure { throw failure }
    }

    /// Detaches, stops the backend and the hypervisor, removes the state directory.
    func stop() async {
        do { try await detach() } catch { warn("xensplit-bench: teardown: \(error)") }
        daemon.stop()
        do { try await daemonTask.value } catch { warn("xensplit-bench: the block backend stopped with: \(error)") }
        hypervisor.stopAndWait()
        BenchCleanup.removeNow(path: directory)
    }

    /// Runs `body` in a fresh world and always tears it down.
    static func with<T>(logger: Logger, _ body: (BlockBenchWorld) async throws -> T) async throws -> T {
        let world = try BlockBenchWorld(logger: logger)
        let result: T
        do {
            result = try await body(world)
        } catch {
            await world.stop()
            throw error
        }
        await world.stop()
        return result
    }

    /// CPU time so far of the backend's threads and their io_uring workers, per thread.
    var backendSample: [Int32: UInt64] { ThreadCPU.sample(backendThreads) }
    /// CPU time so far of the hypervisor's thread.
    var hypervisorSample: [Int32: UInt64] { ThreadCPU.sample(hypervisorThreads) }
}

// MARK: Load through the frontend library

/// Where one frontend's share of the load goes: `regionBytes` from `regionStart`.
struct BlockBenchTarget: Sendable {
    let frontend: BlockFrontend
    let regionStart: Int
    let regionBytes: Int
}

/// A sequential stream shared by the tasks of one frontend.
final class BlockBenchCursor: Sendable {
    let next = Atomic<Int>(0)
}

/// What one fixed-time run did.
struct BlockBenchRun {
    var operations: Int
    var seconds: Double
    var backendNanoseconds: UInt64
    var processNanoseconds: UInt64
}

/// `depth` tasks per frontend, each with one request in flight through the async API:
/// the whole frontend library, as an application uses it.
enum BlockBenchFrontendLoad {
    /// With `onFrontendExecutor`, each task prefers its frontend's executor, so it runs
    /// on the frontend's I/O thread (``FrontendExecutor``).
    static func run(_ targets: [BlockBenchTarget], workload: BlockBenchWorkload, seconds: Double,
                    world: BlockBenchWorld, onFrontendExecutor: Bool = false) async throws -> BlockBenchRun {
        let clock = ContinuousClock()
        let cursors = targets.map { _ in BlockBenchCursor() }
        let backendBefore = world.backendSample
        let processBefore = ThreadCPU.processNanoseconds()
        let start = clock.now
        let deadline = start.advanced(by: .nanoseconds(Int64(seconds * 1e9)))
        let operations = try await withThrowingTaskGroup(of: Int.self) { group in
            for (index, target) in targets.enumerated() {
                for task in 0..<workload.depth {
                    let cursor = cursors[index]
                    let seed = UInt64(index * 1000 + task + 1) &* 0x9E37_79B9_7F4A_7C15
                    group.addTask(executorPreference: onFrontendExecutor ? target.frontend.executor : nil) {
                        try await loop(target, cursor: cursor, seed: seed, workload: workload, deadline: deadline, clock: clock)
                    }
                }
            }
            return try await group.reduce(0, +)
        }
        let backend = ThreadCPU.elapsed(from: backendBefore, to: world.backendSample)
        let processAfter = ThreadCPU.processNanoseconds()
        return BlockBenchRun(operations: operations, seconds: seconds, backendNanoseconds: backend,
                             processNanoseconds: processAfter &- processBefore)
    }

    /// One task's requests until the deadline; counts those finished before it.
    private static func loop(_ target: BlockBenchTarget, cursor: BlockBenchCursor, seed: UInt64,
                             workload: BlockBenchWorkload, deadline: ContinuousClock.Instant,
                             clock: ContinuousClock) async throws -> Int {
        let blockSize = workload.blockSize
        let blocks = target.regionBytes / blockSize
        let sectors = UInt64(blockSize / 512)
        let data = [UInt8](repeating: 0xA5, count: workload.write ? blockSize : 0)
        var random = seed | 1
        var operations = 0
        while true {
            let block: Int
            if workload.random {
                random ^= random << 13
                random ^= random >> 7
                random ^= random << 17
                block = Int(random % UInt64(blocks))
            } else {
                block = cursor.next.add(1, ordering: .relaxed).oldValue % blocks
            }
            let sector = UInt64(target.regionStart + block * blockSize) / 512
            if workload.write {
                try await target.frontend.write(sector: sector, data: data)
            } else {
                let bytes = try await target.frontend.read(sector: sector, count: sectors)
                guard bytes.count == blockSize else {
                    throw BlockBenchError.io("read of \(blockSize) bytes returned \(bytes.count)")
                }
            }
            guard clock.now <= deadline else { return operations }
            operations += 1
        }
    }
}

// MARK: fio, the reference

enum BlockBenchFio {
    /// fio's io_uring engine on `path` with registered files and fixed buffers: `jobs`
    /// jobs, job N on the `regionBytes` from N x `regionBytes`, as our frontends split it.
    static func ioUring(path: String, regionBytes: Int, jobs: Int, workload: BlockBenchWorkload,
                        seconds: Double) throws -> Double {
        try ioUringRun(path: path, regionBytes: regionBytes, jobs: jobs, workload: workload, seconds: seconds)
            .figure(workload)
    }

    /// ``ioUring(path:regionBytes:jobs:workload:seconds:)`` with what fio counted and timed.
    static func ioUringRun(path: String, regionBytes: Int, jobs: Int, workload: BlockBenchWorkload,
                           seconds: Double) throws -> BlockBenchFioRun {
        try run([
            "--filename=\(path)", "--ioengine=io_uring", "--registerfiles=1", "--fixedbufs=1", "--direct=0",
            "--size=\(regionBytes)", "--offset_increment=\(regionBytes)", "--numjobs=\(jobs)", "--group_reporting=1",
            "--fallocate=none",
        ], workload: workload, seconds: seconds)
    }

    /// fio's nbd engine (libnbd) against the export at `uri`.
    static func nbd(uri: String, workload: BlockBenchWorkload, seconds: Double) throws -> Double {
        try run(["--ioengine=nbd", "--uri=\(uri)"], workload: workload, seconds: seconds).figure(workload)
    }

    /// One time-based fio run: the I/Os and bytes fio completed and the run time it
    /// measured, from its JSON (`total_ios`, `io_bytes`, `runtime`; with
    /// `group_reporting`, summed over the jobs and the longest job's time).
    private static func run(_ engine: [String], workload: BlockBenchWorkload, seconds: Double) throws -> BlockBenchFioRun {
        let arguments = benchChildSignals + ["/usr/bin/fio", "--name=reference"] + engine + [
            "--rw=\(workload.fioPattern)", "--bs=\(workload.blockSize)", "--iodepth=\(workload.depth)",
            "--time_based=1", "--runtime=\(Int(seconds * 1000))ms", "--norandommap=1", "--randrepeat=0",
            "--output-format=json",
        ]
        // fio's messages go to a file read only on failure, so fio never blocks on a pipe.
        let errorPath = "/tmp/xensplit-bench-fio-\(getpid()).log"
        guard FileManager.default.createFile(atPath: errorPath, contents: nil) else {
            throw BlockBenchError.io("cannot create \(errorPath)")
        }
        defer { unlink(errorPath) }
        let process = try ChildProcess("/usr/bin/env", arguments, standardInput: .null, standardOutput: .pipe,
                                       standardError: .file(errorPath))
        BenchCleanup.add(pid: process.pid)
        defer { BenchCleanup.remove(pid: process.pid) }
        let data = Data(try process.collectOutput().standardOutput)
        let status = process.wait()
        let stderrText = (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? ""
        guard status.succeeded, let start = data.firstIndex(of: UInt8(ascii: "{")),
              let json = try JSONSerialization.jsonObject(with: data[start...]) as? [String: Any],
              let job = (json["jobs"] as? [[String: Any]])?.first,
              let side = job[workload.write ? "write" : "read"] as? [String: Any]
        else {
            throw BlockBenchError.io("fio \(engine.joined(separator: " ")) failed (\(status)): "
                + stderrText.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        guard let operations = (side["total_ios"] as? NSNumber)?.doubleValue,
              let bytes = (side["io_bytes"] as? NSNumber)?.doubleValue,
              let milliseconds = (side["runtime"] as? NSNumber)?.doubleValue, milliseconds > 0 else {
            throw BlockBenchError.io("fio: no total_ios, io_bytes or runtime")
        }
        return BlockBenchFioRun(operations: operations, bytes: bytes, seconds: milliseconds / 1000)
    }
}

/// What one fio run did, as fio counted and timed it: its clock starts before its first
/// I/O and its I/Os are all it completed, the in-flight ones at the end included.
struct BlockBenchFioRun: Sendable {
    var operations: Double
    var bytes: Double
    var seconds: Double

    /// The figure in the workload's unit, as fio's own `iops` and `bw_bytes` are reckoned.
    func figure(_ workload: BlockBenchWorkload) -> Double {
        workload.random ? operations / seconds : bytes / seconds / Double(1 << 20)
    }
}

/// ``alternate(_:runs:ours:reference:)`` for async sides: `runs` rounds, each side going
/// first in turn (``oursFirst(round:)``).
func alternateAsync(_ comparison: inout BenchComparison, runs: Int,
                    ours: () async throws -> Double, reference: () async throws -> Double) async rethrows {
    for round in 0..<runs {
        if oursFirst(round: round) {
            comparison.ours.append(try await ours())
            comparison.reference.append(try await reference())
        } else {
            comparison.reference.append(try await reference())
            comparison.ours.append(try await ours())
        }
    }
}

/// Prints a comparison's line, and each run's pair with --verbose.
func printComparison(_ comparison: BenchComparison, options: BlockBenchOptions) {
    if options.verbose, !comparison.reference.isEmpty {
        let pairs = zip(comparison.ours, comparison.reference).map { String(format: "%.0f/%.0f", $0, $1) }
        warn("runs \(comparison.name) ours/reference: \(pairs.joined(separator: " "))")
    }
    print(comparison.line)
    fflush(nil)
}
