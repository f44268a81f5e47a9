import BlockFrontend
import Foundation
import Glibc
import Logging
import NBD

/// `xensplit-bench blkfront [--runs N] [--quick] [--only NAME-PART] [--verbose]`: the block
/// frontend, two ways, in one world (local hypervisor, our backend and one frontend, all
/// in this process, the disk a /dev/shm file):
///
/// - over NBD: fio's nbd engine (libnbd, one connection) against our NBD server exporting
///   the frontend's disk, and against `nbdkit file` serving the same file, alternating;
///   4 KiB random read and write at QD32, 1 MiB sequential read and write at QD8;
/// - as a library: the async read/write API at QD32 (32 tasks, one request each), 4 KiB
///   random read and write, against fio's io_uring engine on the backing file.
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
    let libraryWorkloads = [BlockBenchWorkload.randomRead4K, BlockBenchWorkload.randomWrite4K]
        .filter { options.selected("blkfront-lib-\($0.name)") }
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
                    try await offPool { try BlockBenchFio.nbd(uri: ours.uri, workload: workload, seconds: seconds) }
                }, reference: {
                    try await offPool { try BlockBenchFio.nbd(uri: referenceURI, workload: workload, seconds: seconds) }
                })
                printComparison(comparison, options: options)
            }
        }

        let target = BlockBenchTarget(frontend: frontend, regionStart: 0, regionBytes: options.fileSize)
        for workload in libraryWorkloads {
            var comparison = BenchComparison(name: "blkfront-lib-\(workload.name)", unit: workload.unit)
            try await alternateAsync(&comparison, runs: options.runs, ours: {
                let run = try await BlockBenchFrontendLoad.run([target], workload: workload, seconds: options.seconds,
                                                               world: world)
                options.log(String(format: "blkfront-lib-%@: %d I/Os, backend threads %.0f%% of a core, process %.0f%%",
                                   workload.name, run.operations, Double(run.backendNanoseconds) / 1e9 / run.seconds * 100,
                                   Double(run.processNanoseconds) / 1e9 / run.seconds * 100))
                return workload.figure(operations: run.operations, seconds: run.seconds)
            }, reference: { [size = options.fileSize, seconds = options.seconds] in
                try await offPool {
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
    let process = Process()
    let socket: String
    var uri: String { "nbd+unix:///?socket=\(socket)" }

    init(image: String, socket: String) throws {
        self.socket = socket
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = benchChildSignals + ["/usr/bin/nbdkit", "--foreground", "--exit-with-parent",
                                                 "--unix", socket, "file", image]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        BenchCleanup.add(pid: process.processIdentifier)
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
        if process.isRunning { kill(process.processIdentifier, SIGTERM) }
        // nbdkit finishes the requests in flight first; a hung one is killed after 10 s.
        var waited = 0
        while process.isRunning, waited < 1000 {
            usleep(10_000)
            waited += 1
        }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        BenchCleanup.remove(pid: process.processIdentifier)
        unlink(socket)
    }
}
