import Blkif
import BlockFrontend
import Foundation
import Glibc
import Logging
import SharedMemory
import XenLocal
import XenPlatform
import XenTesting

/// `xensplit-bench blkback [--runs N] [--quick] [--only NAME-PART] [--verbose]`: our block
/// backend driven by in-process frontends on the local hypervisor, against fio's io_uring
/// engine on the same /dev/shm file, same block size, depth and pattern, alternating.
/// Frontend counts 1 and 16 (one domain each, the file split into equal regions, one per
/// frontend and one per fio job) and 1 or 4 rings per frontend, with persistent grants
/// (the default on both sides) and, for one frontend, with grant copies (names ending
/// `-copy`). Depth is per frontend (and per fio job). Before timing, every slot of every
/// frontend sends one request, so persistent mappings are made outside the runs.
///
/// Both sides are timed alike: a clock started before the first request is issued,
/// requests issued until the run's length has passed, then the ones in flight finished,
/// and the figure is every I/O completed over the time measured (fio's `total_ios` and
/// `runtime`). The rounds take turns at which side goes first. With `--verbose` each run
/// of each side logs its I/Os, block size, depth x frontends (or jobs) and seconds.
///
/// The frontends are XenTesting's ``BlkifRingDriver``s (the tests' minimal blkif
/// frontend), one thread driving them all (``BlkbackBenchLoad``), not the BlockFrontend
/// library: the library's per-request cost (a task, a continuation, an array, a pipe
/// write) is larger than the backend's, so it would measure itself (`xensplit-bench
/// blkfront` measures it).
///
/// Also prints, with no reference, the backend's CPU time per I/O: the on-CPU time of
/// its threads (those that appeared while the daemon was made: its workers), of their
/// io_uring kernel workers (`iou-wrk-TID`) and of the local hypervisor's thread, which
/// serves every grant copy, from /proc/self/task/TID/schedstat, over the run's I/Os; with
/// fio as the reference, the whole process's CPU time per I/O (frontends, backend and
/// their io_uring workers: `blkback-process-cpu-per-io-*`, lower is better, so the ratio
/// is fio's over ours) against fio's (its process and io_uring workers); and
/// the CPU milliseconds the backend's threads and the hypervisor's use in 5 s (a window
/// per run) while 64 BlockFrontend frontends are connected and idle, and what the whole
/// process uses meanwhile.
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
    // Persistent grants (both ends advertise feature-persistent, the default) for every
    // layout; grant copies (the frontend does not advertise it) for one frontend.
    let layouts: [(frontends: Int, queues: UInt32, persistent: Bool)] = [
        (1, 1, true), (1, 4, true), (16, 1, true), (16, 4, true), (1, 1, false), (1, 4, false),
    ]
    let idleName = "blkback-idle-cpu-64-frontends"
    func comparisonName(_ workload: BlockBenchWorkload, frontends: Int, queues: UInt32, persistent: Bool) -> String {
        "blkback-\(workload.name)-f\(frontends)-q\(queues)" + (persistent ? "" : "-copy")
    }

    try await BlockBenchWorld.with(logger: logger) { world in
        options.log("blkback: backend threads \(world.backendThreads.sorted()), engine \(world.engineKind), state \(world.directory)")
        let image = try makeBenchImage("blkback", size: options.fileSize)
        defer { BenchCleanup.removeNow(path: image) }
        for layout in layouts {
            let chosen = workloads.filter { (workload: BlockBenchWorkload) -> Bool in
                options.selected(comparisonName(workload, frontends: layout.frontends, queues: layout.queues,
                                                persistent: layout.persistent))
            }
            guard !chosen.isEmpty else { continue }
            var drivers: [BlkifRingDriver] = []
            world.onDetach {
                for driver in drivers where await driver.close() > 0 {
                    warn("xensplit-bench: \(driver.frontendPath): page sets still granted after 5 s")
                }
            }
            for platform in try await world.createDomains(count: layout.frontends, image: image) {
                drivers.append(try BlkifRingDriver(
                    platform: platform, frontendPath: "/local/domain/\(platform.domainID)/device/vbd/51712",
                    configuration: BlkbackBenchLoad.configuration(queues: Int(layout.queues), depth: 32,
                                                                  persistent: layout.persistent),
                    logger: logger))
            }
            var frontends: [BlkifRingDriver.Rings] = []
            for driver in drivers {
                do { frontends.append(try await driver.connected(timeout: BlockBenchWorld.connectTimeout)) } catch {
                    throw BlockBenchError.setup("\(error)")
                }
            }
            let region = options.fileSize / layout.frontends
            // One 128 KiB read per slot first (a run of length 0 sends each slot once), so
            // with persistent grants every page is mapped before anything is timed.
            let warmUp = BlockBenchWorkload(name: "warm-up", random: false, write: false, blockSize: 128 << 10, depth: 32)
            _ = try await offThePool { [frontends] in
                try BlkbackBenchLoad.drive(frontends, workload: warmUp, regionBytes: region, seconds: 0)
            }
            for workload in chosen {
                let title = comparisonName(workload, frontends: layout.frontends, queues: layout.queues,
                                           persistent: layout.persistent)
                var comparison = BenchComparison(name: title, unit: workload.unit)
                var cpu = BenchComparison(name: title.replacingOccurrences(of: "blkback-", with: "blkback-cpu-per-io-"),
                                          unit: "us")
                // Everything the I/O costs, frontend included, against fio's whole process
                // (its io_uring workers included): lower is better.
                var total = BenchComparison(name: title.replacingOccurrences(of: "blkback-", with: "blkback-process-cpu-per-io-"),
                                            unit: "us", lowerIsBetter: true)
                var busy: [Double] = []
                try await alternateAsync(&comparison, runs: options.runs, ours: {
                    let backendBefore = world.backendSample
                    let hypervisorBefore = world.hypervisorSample
                    let processBefore = ThreadCPU.processNanoseconds()
                    let run = try await offThePool { [frontends] in
                        try BlkbackBenchLoad.drive(frontends, workload: workload, regionBytes: region,
                                                           seconds: options.seconds)
                    }
                    let backendAfter = world.backendSample
                    let backend = Double(ThreadCPU.elapsed(from: backendBefore, to: backendAfter))
                    // The workers alone, without the io_uring kernel workers they started.
                    let workers = Double(ThreadCPU.elapsed(
                        from: backendBefore.filter { world.backendThreads.contains($0.key) },
                        to: backendAfter.filter { world.backendThreads.contains($0.key) }))
                    let hypervisor = Double(ThreadCPU.elapsed(from: hypervisorBefore, to: world.hypervisorSample))
                    let process = Double(ThreadCPU.processNanoseconds() &- processBefore)
                    let operations = Double(max(run.operations, 1))
                    cpu.ours.append((backend + hypervisor) / 1000 / operations)
                    total.ours.append(process / 1000 / operations)
                    busy.append(backend / 1e9 / run.seconds * 100)
                    options.log(String(format: "%@: ours %ld I/Os of %ld bytes at depth %ld x %ld in %.3f s; %% of a core: "
                                       + "backend threads %.0f, hypervisor %.0f, process %.0f; CPU per I/O: backend %.2f us, "
                                       + "of which workers %.2f us", title, run.operations, workload.blockSize,
                                       workload.depth, layout.frontends, run.seconds,
                                       backend / 1e9 / run.seconds * 100, hypervisor / 1e9 / run.seconds * 100,
                                       process / 1e9 / run.seconds * 100, backend / 1000 / operations,
                                       workers / 1000 / operations))
                    return workload.figure(operations: run.operations, seconds: run.seconds)
                }, reference: { [jobs = layout.frontends, seconds = options.seconds] in
                    let before = ThreadCPU.childrenNanoseconds()
                    let run = try await offThePool {
                        try BlockBenchFio.ioUringRun(path: image, regionBytes: region, jobs: jobs, workload: workload,
                                                     seconds: seconds)
                    }
                    // fio is this process's only child here.
                    total.reference.append(Double(ThreadCPU.childrenNanoseconds() &- before) / 1000
                                           / max(run.operations, 1))
                    options.log(String(format: "%@: reference %.0f I/Os of %ld bytes at depth %ld x %ld in %.3f s", title,
                                       run.operations, workload.blockSize, workload.depth, jobs, run.seconds))
                    return run.figure(workload)
                })
                printComparison(comparison, options: options)
                printComparison(cpu, options: options)
                printComparison(total, options: options)
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
            var idle = BenchComparison(name: idleName, unit: String(format: "cpu-ms-per-%gs", window))
            // Everything else in the process too (the daemon's control tasks, such as its
            // once-a-second resize check, run on the concurrency pool, not its workers).
            var whole = BenchComparison(name: idleName + "-whole-process", unit: idle.unit)
            for _ in 0..<options.runs {
                let backendBefore = world.backendSample
                let hypervisorBefore = world.hypervisorSample
                let processBefore = ThreadCPU.processNanoseconds()
                try await Task.sleep(for: .milliseconds(Int(window * 1000)))
                let backend = ThreadCPU.elapsed(from: backendBefore, to: world.backendSample)
                let hypervisor = ThreadCPU.elapsed(from: hypervisorBefore, to: world.hypervisorSample)
                let process = ThreadCPU.processNanoseconds() &- processBefore
                idle.ours.append(Double(backend + hypervisor) / 1e6)
                whole.ours.append(Double(process) / 1e6)
                options.log(String(format: "%@: backend %.3f ms, hypervisor %.3f ms, whole process %.3f ms", idleName,
                                   Double(backend) / 1e6, Double(hypervisor) / 1e6, Double(process) / 1e6))
            }
            printComparison(idle, options: options)
            printComparison(whole, options: options)
            try await world.detach()
        }
    }
}

/// The bench's load on the backend: one thread drives every frontend's rings
/// (``BlkifRingDriver/Rings``, slot n carrying request id n on ring n % queues): it
/// refills each slot as soon as its response is consumed, pushes, notifies when
/// `pushRequestsAndCheckNotify` says so and sleeps in poll(2) on the event channels only
/// when `finalCheckForResponses` finds nothing. It checks that every response answers a
/// request in flight with BLKIF_RSP_OKAY; it does not look at the data.
enum BlkbackBenchLoad {
    /// Segments per slot: 32 pages, so a slot carries up to 128 KiB in one indirect request.
    static let segments = 32

    /// The configuration of every bench frontend: one-page rings, `depth` slots of
    /// ``segments`` pages, `feature-persistent` as `persistent` says.
    static func configuration(queues: Int, depth: Int, persistent: Bool) -> BlkifRingDriver.Configuration {
        BlkifRingDriver.Configuration(queues: queues, depth: depth, indirectSegments: segments, persistent: persistent)
    }

    /// Drives every frontend in `frontends` with `workload` (its depth per frontend) on
    /// the calling thread, issuing requests for `seconds` and then letting those in flight
    /// finish; each frontend uses the `regionBytes` of the disk from index x `regionBytes`.
    /// Returns every request answered and the time from just before the first was issued
    /// until the last was answered, as fio counts and times a time-based run.
    static func drive(_ frontends: [BlkifRingDriver.Rings], workload: BlockBenchWorkload, regionBytes: Int,
                      seconds: Double) throws -> BlkbackBenchRun {
        let blockSize = workload.blockSize
        let pages = blockSize / pageSize
        guard blockSize % pageSize == 0, (1...pages).contains(pages), pages <= segments else {
            throw BlockBenchError.usage("block size \(blockSize) is not 1...\(segments) pages")
        }
        guard frontends.allSatisfy({ workload.depth <= $0.depth }) else {
            throw BlockBenchError.usage("depth \(workload.depth) is more than the frontends' slots")
        }
        let operation: BlkifDirectOperation = workload.write ? .write : .read
        let sectors = blockSize / 512
        let blocks = UInt64(regionBytes / blockSize)
        var random = [UInt64](repeating: 0, count: frontends.count)
        var sequential = [UInt64](repeating: 0, count: frontends.count)
        for index in random.indices { random[index] = UInt64(index + 1) &* 0x9E37_79B9_7F4A_7C15 }
        var inFlight = 0
        var operations = 0

        func issue(_ f: Int, slot: Int) throws {
            let block: UInt64
            if workload.random {
                random[f] ^= random[f] << 13
                random[f] ^= random[f] >> 7
                random[f] ^= random[f] << 17
                block = random[f] % blocks
            } else {
                block = sequential[f]
                sequential[f] = (sequential[f] + 1) % blocks
            }
            let sector = (UInt64(f * regionBytes) + block * UInt64(blockSize)) / 512
            try frontends[f].submit(operation, slot: slot, sector: sector, sectors: sectors)
            inFlight += 1
        }

        func push() throws {
            for frontend in frontends { try frontend.pushRequests() }
        }

        var fds = frontends.map { pollfd(fd: $0.eventDescriptor, events: Int16(POLLIN), revents: 0) }
        // The clock starts before the first request is issued, as fio's does, and the
        // figure is what completed over the time measured, not over `seconds`.
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = start.advanced(by: .nanoseconds(Int64(seconds * 1e9)))
        for f in frontends.indices {
            for slot in 0..<workload.depth { try issue(f, slot: slot) }
        }
        try push()
        var open = true
        while inFlight > 0 {
            // Once per pass over the rings (a vDSO read): fio looks at its clock once per
            // pass of its submit loop too (through a cache refreshed every few passes).
            if open, clock.now > deadline { open = false }
            var answered = false
            for f in frontends.indices {
                let count = try frontends[f].consumeResponses { slot, status in
                    guard status == .okay else {
                        throw BlockBenchError.io("backend answered slot \(slot) of frontend \(f) with \(status)")
                    }
                    if open { try issue(f, slot: slot) }
                }
                if count > 0 {
                    inFlight -= count
                    operations += count
                    answered = true
                }
            }
            try push()
            if answered { continue }
            var waiting = false
            for frontend in frontends where try frontend.finalCheckForResponses() { waiting = true }
            if waiting { continue }
            _ = poll(&fds, nfds_t(fds.count), 100)
            for frontend in frontends { try frontend.takeEvents() }
        }
        let elapsed = start.duration(to: clock.now)
        return BlkbackBenchRun(operations: operations,
                               seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
    }
}

/// What one run of ``BlkbackBenchLoad/drive(_:workload:regionBytes:seconds:)`` did.
struct BlkbackBenchRun: Sendable {
    /// Requests answered.
    var operations: Int
    /// Measured: from just before the first request was issued until the last answer.
    var seconds: Double
}

extension ThreadCPU {
    /// CPU nanoseconds (user + system) of this process's children that were waited for,
    /// threads included (for fio, its io_uring workers too). Counts from fio's start, so
    /// its setup is charged to it as well.
    static func childrenNanoseconds() -> UInt64 {
        var usage = rusage()
        getrusage(RUSAGE_CHILDREN.rawValue, &usage)
        func nanoseconds(_ t: timeval) -> UInt64 { UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_usec) * 1000 }
        return nanoseconds(usage.ru_utime) + nanoseconds(usage.ru_stime)
    }
}
