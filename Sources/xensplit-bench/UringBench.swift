import CURing
import Foundation
import Glibc
import SystemCalls
import URing

/// `xensplit-bench uring [--quick] [--runs N] [--only NAME-PART] [--ring-flags worker|coop|none]
/// [--policy eager|batched] [--verbose]`: the io_uring engine against fio's io_uring engine on
/// the same file, in the same run, alternating, for 4 KiB random reads at QD1 and QD32 and 128 KiB
/// sequential writes, on /dev/shm (page cache) and on /tmp with O_DIRECT. Every run lasts a
/// fixed time (2 s, or 0.5 s with --quick on a 64 MiB file instead of 1 GiB); IOPS or MiB/s
/// per run, medians compared. Both sides use registered files and fixed buffers.
/// `--verbose` also prints every run's pair on a `runs` line.
func runUringBench(arguments: [String]) throws {
    var quick = false
    var runs = 5
    var only: String? = nil
    var ringFlags = IORing.SetupFlags.worker
    var policy = UringBenchPolicy.eager
    var verbose = false
    var iterator = arguments.makeIterator()
    while let argument = iterator.next() {
        switch argument {
        case "--quick": quick = true
        case "--verbose": verbose = true
        case "--runs":
            guard let value = iterator.next().flatMap(Int.init), value >= 1 else {
                throw UringBenchError.usage("--runs needs a positive number")
            }
            runs = value
        case "--only":
            only = iterator.next()
        case "--policy":
            guard let value = iterator.next().flatMap(UringBenchPolicy.init(rawValue:)) else {
                throw UringBenchError.usage("--policy takes eager or batched")
            }
            policy = value
        case "--ring-flags":
            switch iterator.next() {
            case "worker": ringFlags = .worker
            case "coop": ringFlags = [.clamp, .submitAll, .coopTaskrun]
            case "none": ringFlags = []
            default: throw UringBenchError.usage("--ring-flags takes worker, coop or none")
            }
        default: throw UringBenchError.usage("unknown argument \(argument)")
        }
    }
    let fileSize = quick ? 64 << 20 : 1 << 30
    let seconds = quick ? 0.5 : 2.0
    let locations = [
        UringBenchLocation(name: "shm", directory: "/dev/shm", direct: false),
        UringBenchLocation(name: "tmp-direct", directory: "/tmp", direct: true),
    ]
    let workloads = [
        UringBenchWorkload(name: "randread-4k-qd1", random: true, write: false, blockSize: 4096, depth: 1),
        UringBenchWorkload(name: "randread-4k-qd32", random: true, write: false, blockSize: 4096, depth: 32),
        UringBenchWorkload(name: "seqwrite-128k-qd8", random: false, write: true, blockSize: 128 << 10, depth: 8),
    ]
    for location in locations {
        let path = "\(location.directory)/xensplit-bench-uring-\(getpid())"
        try UringBenchFile.create(path: path, size: fileSize)
        defer { unlink(path) }
        for workload in workloads where only.map({ "\(workload.name)-\(location.name)".contains($0) }) ?? true {
            var comparison = BenchComparison(name: "uring-\(workload.name)-\(location.name)", unit: workload.unit)
            try alternate(&comparison, runs: runs, ours: {
                try UringBenchOurs.run(path: path, size: fileSize, direct: location.direct, workload: workload,
                                       seconds: seconds, ringFlags: ringFlags, policy: policy)
            }, reference: {
                try UringBenchFio.run(path: path, size: fileSize, direct: location.direct, workload: workload,
                                      seconds: seconds, policy: policy)
            })
            if verbose {
                let perRun = zip(comparison.ours, comparison.reference).map { String(format: "%.0f/%.0f", $0, $1) }.joined(separator: " ")
                print("runs \(comparison.name) ours/reference: \(perRun)")
            }
            print(comparison.line)
        }
    }
}

enum UringBenchError: Error, CustomStringConvertible {
    case usage(String)
    case io(String)

    var description: String {
        switch self {
        case let .usage(text):
            return "usage: xensplit-bench uring [--quick] [--runs N] [--only NAME-PART] "
                + "[--ring-flags worker|coop|none] [--policy eager|batched] [--verbose]: \(text)"
        case let .io(text): return text
        }
    }
}

/// When requests reach the kernel; both sides of a comparison use the same policy.
enum UringBenchPolicy: String {
    /// Each replacement request is submitted as soon as it is queued (fio's default,
    /// `iodepth_batch_submit=1`); a wait returns after one completion.
    case eager
    /// Replacements are queued and submitted together by the next wait
    /// (fio `iodepth_batch_submit=DEPTH`); a wait returns after one completion.
    case batched
}

struct UringBenchLocation {
    var name: String
    var directory: String
    var direct: Bool
}

struct UringBenchWorkload {
    var name: String
    var random: Bool
    var write: Bool
    var blockSize: Int
    var depth: Int

    /// Random reads count operations; sequential writes count bandwidth.
    var unit: String { write ? "MiB/s" : "IOPS" }
    /// A run's figure in `unit`.
    func figure(operations: Int, seconds: Double) -> Double {
        write ? Double(operations * blockSize) / seconds / Double(1 << 20) : Double(operations) / seconds
    }
}

enum UringBenchFile {
    /// Fills a file of `size` bytes with non-zero data, so reads hit real pages or blocks.
    static func create(path: String, size: Int) throws {
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw UringBenchError.io("open \(path): \(Errno.current)") }
        defer { close(fd) }
        let chunk = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buffer.deallocate() }
        var state: UInt64 = 0x5EED
        for i in 0..<(chunk / 8) {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            buffer.storeBytes(of: state | 1, toByteOffset: i * 8, as: UInt64.self)
        }
        var offset = 0
        while offset < size {
            let written = pwrite(fd, buffer.baseAddress, chunk, off_t(offset))
            guard written == chunk else { throw UringBenchError.io("write \(path): \(Errno.current)") }
            offset += chunk
        }
        guard fsync(fd) == 0 else { throw UringBenchError.io("fsync \(path): \(Errno.current)") }
    }
}

enum UringBenchOurs {
    /// One fixed-time run of the io_uring engine: `depth` operations always in flight,
    /// each completion immediately replaced. Returns the run's figure.
    static func run(
        path: String, size: Int, direct: Bool, workload: UringBenchWorkload, seconds: Double,
        ringFlags: IORing.SetupFlags, policy: UringBenchPolicy
    ) throws -> Double {
        let fd = open(path, O_RDWR | O_CLOEXEC | (direct ? curing_o_direct : 0))
        guard fd >= 0 else { throw UringBenchError.io("open \(path): \(Errno.current)") }
        defer { close(fd) }
        let engine = try URingEngine(configuration: .init(queueDepth: workload.depth, ringFlags: ringFlags))
        defer { engine.close() }
        return try measure(engine, fd: fd, size: size, workload: workload, seconds: seconds, policy: policy)
    }

    /// Generic over the engine, as a backend worker is, so nothing is boxed per request.
    static func measure<Engine: BlockIOEngine>(
        _ engine: Engine, fd: Int32, size: Int, workload: UringBenchWorkload, seconds: Double,
        policy: UringBenchPolicy
    ) throws -> Double {
        let blockSize = workload.blockSize
        let buffers = UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize * workload.depth, alignment: 4096)
        defer { buffers.deallocate() }
        buffers.initializeMemory(as: UInt8.self, repeating: 0xA5)
        try engine.registerFiles([fd])
        try engine.registerBuffers([buffers])
        let completions = UnsafeMutableBufferPointer<Completion>.allocate(capacity: workload.depth)
        defer { completions.deallocate() }
        let blocks = UInt64(size / blockSize)
        var random: UInt64 = 0x2545_F491_4F6C_DD1D
        var sequential: UInt64 = 0

        func nextOffset() -> UInt64 {
            if workload.random {
                random ^= random << 13
                random ^= random >> 7
                random ^= random << 17
                return (random % blocks) * UInt64(blockSize)
            }
            defer { sequential = (sequential + 1) % blocks }
            return sequential * UInt64(blockSize)
        }

        func issue(_ slot: Int) throws {
            let buffer = UnsafeMutableRawBufferPointer(rebasing: buffers[(slot * blockSize)..<((slot + 1) * blockSize)])
            let operation: BlockIOOperation = workload.write
                ? .writeFixed(.registered(0), offset: nextOffset(), from: UnsafeRawBufferPointer(buffer), bufferIndex: 0)
                : .readFixed(.registered(0), offset: nextOffset(), into: buffer, bufferIndex: 0)
            guard case .accepted = engine.enqueue(BlockRequest(operation, userData: UInt64(slot))) else {
                throw UringBenchError.io("the engine refused a request with \(engine.inFlight) in flight")
            }
        }

        for slot in 0..<workload.depth { try issue(slot) }
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = start.advanced(by: .milliseconds(Int(seconds * 1000)))
        var operations = 0
        var now = start
        var rounds = 0
        while now < deadline {
            try engine.wait(minimum: 1, timeout: nil)
            let count = engine.reap(into: completions)
            for completion in completions[0..<count] {
                guard completion.result == Int32(blockSize) else {
                    throw UringBenchError.io("operation finished with \(completion.result), not \(blockSize)")
                }
                try issue(Int(completion.userData))
                if policy == .eager { try engine.submit() }
            }
            operations += count
            // Reading the clock costs as much as a request on some VMs: look every 32 rounds.
            rounds += 1
            if rounds & 31 == 0 { now = clock.now }
        }
        now = clock.now
        let elapsed = start.duration(to: now)
        while engine.inFlight > 0 {
            try engine.wait(minimum: engine.inFlight, timeout: nil)
            _ = engine.reap(into: completions)
        }
        let (whole, fraction) = elapsed.components
        return workload.figure(operations: operations, seconds: Double(whole) + Double(fraction) / 1e18)
    }
}

enum UringBenchFio {
    /// One fixed-time run of fio's io_uring engine with registered files and fixed buffers,
    /// as ours uses. Returns the run's figure, parsed from fio's JSON.
    static func run(
        path: String, size: Int, direct: Bool, workload: UringBenchWorkload, seconds: Double,
        policy: UringBenchPolicy
    ) throws -> Double {
        let arguments = [
            "--name=reference", "--filename=\(path)", "--size=\(size)", "--ioengine=io_uring",
            "--rw=\(workload.random ? "randread" : "write")", "--bs=\(workload.blockSize)",
            "--iodepth=\(workload.depth)", "--direct=\(direct ? 1 : 0)", "--registerfiles=1", "--fixedbufs=1",
            "--time_based=1", "--runtime=\(Int(seconds * 1000))ms", "--norandommap=1", "--randrepeat=0",
            "--fallocate=none", "--output-format=json",
            // fio's default submits each request as it is queued; batched submits them together.
            "--iodepth_batch_submit=\(policy == .eager ? 1 : workload.depth)", "--iodepth_batch_complete_min=1",
        ]
        let process = try ChildProcess("/usr/bin/fio", arguments, standardOutput: .pipe, standardError: .null)
        let data = Data(try process.collectOutput().standardOutput)
        let status = process.wait()
        guard status.succeeded, let start = data.firstIndex(of: UInt8(ascii: "{")),
              let json = try JSONSerialization.jsonObject(with: data[start...]) as? [String: Any],
              let job = (json["jobs"] as? [[String: Any]])?.first,
              let side = job[workload.write ? "write" : "read"] as? [String: Any],
              let runtime = (job["job_runtime"] as? NSNumber)?.doubleValue, runtime > 0
        else {
            throw UringBenchError.io("fio failed (\(status))")
        }
        if workload.write {
            guard let bytes = (side["io_bytes"] as? NSNumber)?.doubleValue else { throw UringBenchError.io("fio: no io_bytes") }
            return bytes / (runtime / 1000) / Double(1 << 20)
        }
        guard let iops = (side["iops"] as? NSNumber)?.doubleValue else { throw UringBenchError.io("fio: no iops") }
        return iops
    }
}
