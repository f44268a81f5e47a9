import BlockFrontend
import Foundation
import Glibc
import Logging
import NBD
import Synchronization
import SystemCalls
import XenTesting

/// `xensplit-bench blkfront [--runs N] [--quick] [--only NAME-PART] [--verbose]`: the block
/// frontend, two ways, in one world (local hypervisor, our backend and one frontend, all
/// in this process, the disk a /dev/shm file):
///
/// - over NBD: fio's nbd engine (libnbd, one connection) against our NBD server exporting
///   the frontend's disk, and against `nbdkit file` serving the same file, alternating;
///   4 KiB random read and write at QD32, 1 MiB sequential read and write at QD8;
/// - as a library: the async read/write API at QD32 (32 tasks, one request each), 4 KiB
///   random read and write, against fio's io_uring engine on the backing file; the same
///   with the tasks on the frontend's own executor (`lib-executor`: each resumed on the
///   I/O thread where its request completed); and through the completion API
///   (`lib-submit`: the next request submitted from the last one's completion, no task
///   per request), the library's cost without Swift concurrency's.
func runBlkfrontBench(arguments: [String]) async throws {
    let options = try BlockBenchOptions(arguments: arguments, suite: "blkfront")
    var logger = Logger(label: "xensplit.bench.blkfront")
    logger.logLevel = .error
    let nbdWorkloads = [
        BlockBenchWorkload.randomRead4K,
        BlockBenchWorkload.randomWrite4K,
        BlockBenchWorkload(name: "seqread-1m-qd8", random: false, write: false, blockSize: 1 << 20, depth: 8),
        BlockBenchWorkload(name: "seqwrite-1m-qd8", random: false, write: true, blockSize: 1 << 20, depth: 8),
    ].filter { options.selected("blkfront-nbd-\($0.name)") }
    // The async API (a task per request), then the completion API (see BlkfrontSubmitLoad).
    let libraryWorkloads = [("lib", BlockBenchWorkload.randomRead4K), ("lib", BlockBenchWorkload.randomWrite4K),
                            ("lib-executor", BlockBenchWorkload.randomRead4K), ("lib-executor", BlockBenchWorkload.randomWrite4K),
                            ("lib-submit", BlockBenchWorkload.randomRead4K), ("lib-submit", BlockBenchWorkload.randomWrite4K)]
        .filter { options.selected("blkfront-\($0.0)-\($0.1.name)") }
    guard !nbdWorkloads.isEmpty || !libraryWorkloads.isEmpty else { return }

    try await BlockBenchWorld.with(logger: logger) { world in
        let image = try makeBenchImage("blkfront", size: options.fileSize)
        defer { BenchCleanup.removeNow(path: image) }
        let disks = try await world.attach(count: 1, image: image, configuration: BlockFrontendConfiguration())
        let frontend = world.frontends[0]
        options.log("blkfront: engine \(world.engineKind), state \(world.directory), ring order \(disks[0].ringPageOrder), "
            + "\(disks[0].segmentsPerRequest) segments per request, depth \(disks[0].depth)")

        if !nbdWorkloads.isEmpty {
            let server = NBDServer(export: try NBDBlockFrontendExport(frontend: frontend, disk: disks[0], logger: logger),
                                   logger: logger)
            let ours = try server.start(listeningOn: .unix(path: world.directory + "/blkfront.nbd"))
            defer { server.stop() }
            let nbdkit = try NBDKit(image: image, socket: world.directory + "/nbdkit.nbd")
            defer { nbdkit.stop() }
            let referenceURI = nbdkit.uri
            for workload in nbdWorkloads {
                var comparison = BenchComparison(name: "blkfront-nbd-\(workload.name)", unit: workload.unit)
                let seconds = options.seconds
                try await alternateAsync(&comparison, runs: options.runs, ours: {
                    let backendBefore = world.backendSample
                    let processBefore = ThreadCPU.processNanoseconds()
                    let figure = try await offThePool { try BlockBenchFio.nbd(uri: ours.uri, workload: workload, seconds: seconds) }
                    // fio runs a little longer than `seconds` (start-up), so these are upper bounds.
                    let operations = workload.random ? figure * seconds : figure * seconds * Double(1 << 20) / Double(workload.blockSize)
                    let backend = Double(ThreadCPU.elapsed(from: backendBefore, to: world.backendSample))
                    let process = Double(ThreadCPU.processNanoseconds() &- processBefore)
                    options.log(String(format: "blkfront-nbd-%@: CPU per I/O: backend %.2f us, rest of the process %.2f us",
                                       workload.name, backend / 1e3 / operations, (process - backend) / 1e3 / operations))
                    return figure
                }, reference: {
                    try await offThePool { try BlockBenchFio.nbd(uri: referenceURI, workload: workload, seconds: seconds) }
                })
                printComparison(comparison, options: options)
            }
        }

        let target = BlockBenchTarget(frontend: frontend, regionStart: 0, regionBytes: options.fileSize)
        for (mode, workload) in libraryWorkloads {
            let name = "blkfront-\(mode)-\(workload.name)"
            var comparison = BenchComparison(name: name, unit: workload.unit)
            try await alternateAsync(&comparison, runs: options.runs, ours: {
                let run: BlockBenchRun
                if mode == "lib" || mode == "lib-executor" {
                    run = try await BlockBenchFrontendLoad.run([target], workload: workload, seconds: options.seconds,
                                                               world: world, onFrontendExecutor: mode == "lib-executor")
                } else {
                    let backendBefore = world.backendSample
                    let processBefore = ThreadCPU.processNanoseconds()
                    let operations = try await BlkfrontSubmitLoad.run(target, workload: workload, seconds: options.seconds)
                    run = BlockBenchRun(operations: operations, seconds: options.seconds,
                                        backendNanoseconds: ThreadCPU.elapsed(from: backendBefore, to: world.backendSample),
                                        processNanoseconds: ThreadCPU.processNanoseconds() &- processBefore)
                }
                let perIO = { (nanoseconds: UInt64) in Double(nanoseconds) / 1e3 / Double(max(run.operations, 1)) }
                options.log(String(format: "%@: %d I/Os, backend threads %.0f%% of a core, process %.0f%%; "
                                   + "CPU per I/O: backend %.2f us, rest of the process %.2f us",
                                   name, run.operations, Double(run.backendNanoseconds) / 1e9 / run.seconds * 100,
                                   Double(run.processNanoseconds) / 1e9 / run.seconds * 100, perIO(run.backendNanoseconds),
                                   perIO(run.processNanoseconds &- min(run.backendNanoseconds, run.processNanoseconds))))
                return workload.figure(operations: run.operations, seconds: run.seconds)
            }, reference: { [size = options.fileSize, seconds = options.seconds] in
                try await offThePool {
                    try BlockBenchFio.ioUring(path: image, regionBytes: size, jobs: 1, workload: workload, seconds: seconds)
                }
            })
            printComparison(comparison, options: options)
        }
    }
}

/// `nbdkit file` serving the image on a Unix socket, as the NBD reference. It is stopped
/// by its PID (and exits with this process if that dies first).
final class NBDKit {
    let process: ChildProcess
    let socket: String
    var uri: String { "nbd+unix:///?socket=\(socket)" }

    init(image: String, socket: String) throws {
        self.socket = socket
        process = try ChildProcess("/usr/bin/env", benchChildSignals + ["/usr/bin/nbdkit", "--foreground", "--exit-with-parent",
                                                                        "--unix", socket, "file", image],
                                   standardInput: .null, standardOutput: .null)
        BenchCleanup.add(pid: process.pid)
        // nbdkit creates the socket once it listens.
        for _ in 0..<1000 {
            if access(socket, F_OK) == 0 { return }
            guard process.isRunning else { break }
            usleep(10_000)
        }
        stop()
        throw BlockBenchError.setup("nbdkit did not start listening on \(socket)")
    }

    func stop() {
        process.signal(SIGTERM)
        // nbdkit finishes the requests in flight first; a hung one is killed after 10 s.
        var waited = 0
        while process.isRunning, waited < 1000 {
            usleep(10_000)
            waited += 1
        }
        process.signal(SIGKILL)
        process.wait()
        BenchCleanup.remove(pid: process.pid)
        unlink(socket)
    }
}

/// The frontend's completion API at a fixed depth, as fio's engines keep theirs: each of
/// `depth` lanes submits its next request from the completion of its previous one (on
/// the frontend's I/O thread), so no task or continuation runs per request. What this
/// costs over the backend alone is the library's own overhead.
final class BlkfrontSubmitLoad: @unchecked Sendable {
    // SAFETY (@unchecked): a lane has one request at a time, and its fields are touched only
    // by whoever runs that request's completion (or its first submit), in turn.
    final class Lane: @unchecked Sendable {
        var random: UInt64
        var operations = 0
        var completion: BlockFrontendCompletion = { _ in }
        init(seed: UInt64) { random = seed | 1 }
    }

    let frontend: BlockFrontend
    let workload: BlockBenchWorkload
    let target: BlockBenchTarget
    let deadline: ContinuousClock.Instant
    let data: [UInt8]
    let lanes: [Lane]
    let running: Atomic<Int>
    let failures = Atomic<Int>(0)
    let cursor = Atomic<Int>(0)
    let done = DispatchSemaphore(value: 0)

    private init(target: BlockBenchTarget, workload: BlockBenchWorkload, deadline: ContinuousClock.Instant) {
        frontend = target.frontend
        self.workload = workload
        self.target = target
        self.deadline = deadline
        data = [UInt8](repeating: 0xA5, count: workload.write ? workload.blockSize : 0)
        lanes = (0..<workload.depth).map { Lane(seed: UInt64($0 + 1) &* 0x9E37_79B9_7F4A_7C15) }
        running = Atomic(workload.depth)
    }

    /// Runs `workload` against `target` for `seconds`; the operations finished in time.
    static func run(_ target: BlockBenchTarget, workload: BlockBenchWorkload, seconds: Double) async throws -> Int {
        let load = BlkfrontSubmitLoad(target: target, workload: workload,
                                      deadline: .now.advanced(by: .nanoseconds(Int64(seconds * 1e9))))
        return try await offThePool { try load.start() }
    }

    private func start() throws -> Int {
        for lane in lanes {
            lane.completion = { [unowned self, unowned lane] result in
                if case .failure = result { failures.add(1, ordering: .relaxed) }
                guard case .success = result, ContinuousClock.now <= deadline else {
                    if running.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 { done.signal() }
                    return
                }
                lane.operations += 1
                next(lane)
            }
        }
        for lane in lanes { next(lane) }
        done.wait()
        guard failures.load(ordering: .relaxed) == 0 else {
            throw BlockBenchError.io("\(failures.load(ordering: .relaxed)) requests failed")
        }
        return lanes.reduce(0) { $0 + $1.operations }
    }

    private func next(_ lane: Lane) {
        let blockSize = workload.blockSize
        let blocks = target.regionBytes / blockSize
        let block: Int
        if workload.random {
            lane.random ^= lane.random << 13
            lane.random ^= lane.random >> 7
            lane.random ^= lane.random << 17
            block = Int(lane.random % UInt64(blocks))
        } else {
            block = cursor.add(1, ordering: .relaxed).oldValue % blocks
        }
        let sector = UInt64(target.regionStart + block * blockSize) / 512
        if workload.write {
            frontend.submit(.write(sector: sector, data: data), completion: lane.completion)
        } else {
            frontend.submit(.read(sector: sector, count: UInt64(blockSize / 512)), completion: lane.completion)
        }
    }
}
