import BlockFrontend
import Foundation
import Glibc
import Logging

/// `xensplit-bench blkback [--runs N] [--quick] [--only NAME-PART] [--verbose]`: our block
/// backend driven by in-process frontends (the BlockFrontend library) on the local
/// hypervisor, against fio's io_uring engine on the same /dev/shm file, same block size,
/// depth and pattern, alternating. Frontend counts 1 and 16 (one domain each, the file
/// split into equal regions, one per frontend and one per fio job) and 1 or 4 rings per
/// frontend. Depth is per frontend (and per fio job).
///
/// Also prints, with no reference, the backend's CPU time per I/O (its worker threads'
/// on-CPU time, from /proc/self/task/TID/schedstat, plus their io_uring kernel workers,
/// divided by the I/Os of the run), and the CPU time its threads use in 5 s while 64
/// frontends are connected and idle.
func runBlkbackBench(arguments: [String]) async throws {
    let options = try BlockBenchOptions(arguments: arguments, suite: "blkback")
    var logger = Logger(label: "xensplit.bench.blkback")
    logger.logLevel = .error
    let workloads = [
        BlockBenchWorkload.randomRead4K,
        BlockBenchWorkload.randomWrite4K,
        BlockBenchWorkload(name: "seqread-128k-qd8", random: false, write: false, blockSize: 128 << 10, depth: 8),
        BlockBenchWorkload(name: "seqwrite-128k-qd8", random: false, write: true, blockSize: 128 << 10, depth: 8),
    ]
    let layouts: [(frontends: Int, queues: UInt32)] = [(1, 1), (1, 4), (16, 1), (16, 4)]
    let idleName = "blkback-idle-cpu-64-frontends"
    func comparisonName(_ workload: BlockBenchWorkload, frontends: Int, queues: UInt32) -> String {
        "blkback-\(workload.name)-f\(frontends)-q\(queues)"
    }

    try await BlockBenchWorld.with(logger: logger) { world in
        options.log("blkback: backend threads \(world.backendThreads.sorted()), engine \(world.engineKind), state \(world.directory)")
        let image = try makeBenchImage("blkback", size: options.fileSize)
        defer { BenchCleanup.removeNow(path: image) }
        for layout in layouts {
            let chosen = workloads.filter { (workload: BlockBenchWorkload) -> Bool in
                options.selected(comparisonName(workload, frontends: layout.frontends, queues: layout.queues))
            }
            guard !chosen.isEmpty else { continue }
            _ = try await world.attach(count: layout.frontends, image: image,
                                       configuration: BlockFrontendConfiguration(queues: layout.queues))
            let region = options.fileSize / layout.frontends
            let targets = world.frontends.enumerated().map {
                BlockBenchTarget(frontend: $1, regionStart: $0 * region, regionBytes: region)
            }
            for workload in chosen {
                let title = comparisonName(workload, frontends: layout.frontends, queues: layout.queues)
                var comparison = BenchComparison(name: title, unit: workload.unit)
                var cpu = BenchComparison(name: title.replacingOccurrences(of: "blkback-", with: "blkback-cpu-per-io-"),
                                          unit: "us")
                var busy: [Double] = []
                try await alternateAsync(&comparison, runs: options.runs, ours: {
                    let run = try await BlockBenchFrontendLoad.run(targets, workload: workload, seconds: options.seconds,
                                                                   world: world)
                    cpu.ours.append(Double(run.backendNanoseconds) / 1000 / Double(max(run.operations, 1)))
                    busy.append(Double(run.backendNanoseconds) / 1e9 / run.seconds * 100)
                    options.log(String(format: "%@: %d I/Os, backend threads %.0f%% of a core, process %.0f%%", title,
                                       run.operations, Double(run.backendNanoseconds) / 1e9 / run.seconds * 100,
                                       Double(run.processNanoseconds) / 1e9 / run.seconds * 100))
                    return workload.figure(operations: run.operations, seconds: run.seconds)
                }, reference: { [jobs = layout.frontends, seconds = options.seconds] in
                    try await offPool {
                        try BlockBenchFio.ioUring(path: image, regionBytes: region, jobs: jobs, workload: workload,
                                                  seconds: seconds)
                    }
                })
                printComparison(comparison, options: options)
                printComparison(cpu, options: options)
                options.log(String(format: "%@: backend threads busy %.0f%% of a core (median)", title,
                                   BenchComparison.median(busy)))
            }
            try await world.detach()
        }
        if options.selected(idleName) {
            _ = try await world.attach(count: 64, image: image, configuration: BlockFrontendConfiguration())
            // Let connection-time work (xenstore writes, first polls) finish first.
            try await Task.sleep(for: .milliseconds(500))
            let window = options.quick ? 0.5 : 5.0
            var idle = BenchComparison(name: idleName, unit: String(format: "cpu-s-per-%.1fs", window))
            for _ in 0..<options.runs {
                let before = world.backendNanoseconds
                let processBefore = ThreadCPU.processNanoseconds()
                try await Task.sleep(for: .milliseconds(Int(window * 1000)))
                idle.ours.append(Double(world.backendNanoseconds &- before) / 1e9)
                options.log(String(format: "%@: whole process %.4f cpu-s", idleName,
                                   Double(ThreadCPU.processNanoseconds() &- processBefore) / 1e9))
            }
            printComparison(idle, options: options)
            try await world.detach()
        }
    }
}
