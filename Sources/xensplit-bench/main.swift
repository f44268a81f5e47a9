import Glibc

/// Writes a line to standard error.
func warn(_ message: String) {
    var m = message + "\n"
    m.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

// xensplit-bench SUITE [--runs N] [--quick]: each suite prints DESIGN.md's `bench` lines.
let usage = """
usage: xensplit-bench SUITE [--runs N] [--quick] [--requests N] [--only X] [--verbose]

Suites (each compares against a reference measured in the same run):
  ring      Swift rings vs Xen's C io/ring.h macros: blkif ring, two pinned threads,
            busy-poll and eventfd notification, queue depth 1 and 32; both sides write,
            read and check whole requests and responses, and must leave the same ring
  platform  local hypervisor: grant map+unmap/s and 4 KiB grant copies/s (no reference);
            event-channel notify-to-wakeup between two processes vs the C ring's eventfd
  uring     our io_uring engine vs fio's io_uring engine on the same file: 4 KiB random
            read QD1/QD32, 128 KiB sequential write, in /dev/shm and O_DIRECT under /tmp
            (its own options: xensplit-bench uring --help)
  blkback   our block backend driven by a lean in-process ring frontend on the local
            hypervisor vs fio's io_uring engine on the same /dev/shm file: 4 KiB random
            read/write QD32, 128 KiB sequential read/write QD8; 1 and 16 frontends
            (domains), 1 and 4 rings each, persistent grants (and, suffix -copy, grant
            copies for one frontend); backend CPU per I/O (backend and hypervisor
            threads); their CPU while 64 BlockFrontend frontends idle
            (own options: --runs N --quick --only NAME-PART --verbose)
  blkfront  the block frontend: fio's nbd engine against our NBD export of it vs against
            `nbdkit file` on the same file (4 KiB random read/write QD32, 1 MiB
            sequential read/write QD8), and the async library API at QD32 vs fio's
            io_uring engine on the backing file (same options as blkback)
  net       our netback and netfront (guest namespace, TAP, vif on a bridge in dom0's
            namespace) vs a veth pair between two namespaces, iperf3 on both: TCP 1 and
            4 streams, 64-byte UDP packets/s, each way, and TCP 4 streams over a 4-queue
            vif vs a 4-queue veth (-4q-); backend CPU per MiB and per
            packet; CPU with 64 idle vifs; resident memory per vif
            (own options: --runs N --quick --only NAME-PART --verbose)
  xenstore  our xenstored on a Unix socket: Swift client vs Xen's libxenstore, reads/s,
            writes/s (1 and 16 clients), watch latency p99 (1 and 16 watchers)
Options:
  --runs N  alternating runs of ours and the reference (default 5, at least 1)
  --quick   fewer requests per run, for smoke tests
  --requests N
            ring: N requests per run in every comparison (a check of equal work, not a timing)
  --only X  run one comparison of the suite (ring: poll-qd1, poll-qd32, eventfd-qd1, eventfd-qd32)
  --verbose ring: each run's work on standard error (check NAME run=N side=S answered=...
            refused=... digest=... ring=...)

Output: bench NAME ours=V reference=V unit=U ratio=OURS/REF spread=PCT
"""

var args = Array(CommandLine.arguments.dropFirst())
if args.first == "uring" {
    do {
        try runUringBench(arguments: Array(args.dropFirst()))
        exit(0)
    } catch {
        warn("xensplit-bench uring: \(error)")
        exit(1)
    }
}
if args.first == "xenstore" {
    do {
        try await runXenStoreBench(arguments: Array(args.dropFirst()))
        exit(0)
    } catch {
        warn("xensplit-bench xenstore: \(error)")
        exit(1)
    }
}
for (name, suite) in [("blkback", runBlkbackBench), ("blkfront", runBlkfrontBench), ("net", runNetBench)] where args.first == name {
    do {
        try await suite(Array(args.dropFirst()))
        BenchCleanup.runAll()
        exit(0)
    } catch {
        BenchCleanup.runAll()
        warn("xensplit-bench \(name): \(error)")
        exit(1)
    }
}
guard let suite = args.first, !["-h", "--help", "help"].contains(suite) else {
    print(usage)
    exit(args.isEmpty ? 2 : 0)
}
args.removeFirst()
var runs = 5
var quick = false
var only: String? = nil
var verbose = false
var requests: UInt64? = nil
var i = 0
while i < args.count {
    switch args[i] {
    case "--runs":
        guard i + 1 < args.count, let n = Int(args[i + 1]), n >= 1 else {
            warn("xensplit-bench: --runs takes a whole number >= 1")
            exit(2)
        }
        runs = n
        i += 1
    case "--quick":
        quick = true
    case "--requests":
        guard suite == "ring", i + 1 < args.count, let n = UInt64(args[i + 1]), n >= 1 else {
            warn("xensplit-bench: --requests takes a whole number >= 1, and only the ring suite has it")
            exit(2)
        }
        requests = n
        i += 1
    case "--verbose":
        verbose = true
    case "--only":
        guard i + 1 < args.count else {
            warn("xensplit-bench: --only takes a comparison name, e.g. poll-qd32")
            exit(2)
        }
        only = args[i + 1]
        i += 1
    default:
        warn("xensplit-bench: unknown option '\(args[i])'\n\(usage)")
        exit(2)
    }
    i += 1
}

do {
    switch suite {
    case "ring":
        try RingBench(runs: runs, quick: quick, requests: requests, onlyMode: only, verbose: verbose).run()
    case "platform":
        try PlatformBench(runs: runs, quick: quick).run()
    default:
        warn("xensplit-bench: unknown suite '\(suite)'\n\(usage)")
        exit(2)
    }
} catch {
    warn("xensplit-bench \(suite): \(error)")
    exit(1)
}
