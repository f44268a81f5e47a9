import Blkif
import CRingReference
import Glibc
import SharedMemory
import XenRing
import XenTesting

/// `xensplit-bench ring`: our rings against Xen's C io/ring.h macros on the same shape
/// (one page, blkif entries), frontend and backend on two pinned threads, busy-poll and
/// eventfd-notify modes, queue depth 1 and 32.
///
/// Both sides do the same work per request (``RingBenchExchange``): the frontend writes
/// the whole request, the backend reads all of it once and validates it, writes the whole
/// response, and the frontend reads all of that once and checks it. After each pair of
/// runs the two backends' tallies and the two rings' bytes are compared, and the suite
/// fails if they differ.
struct RingBench {
    var runs = 5
    var quick = false
    /// Requests per run for every comparison, instead of the defaults (a smoke test of the
    /// two sides' equal work, not a timing).
    var requests: UInt64? = nil
    /// Only this mode (poll or eventfd), for profiling one side.
    var onlyMode: String? = nil
    /// Each run's work on standard error (`check` lines).
    var verbose = false

    enum Mode: String { case poll, eventfd }

    /// One timed exchange.
    struct Run {
        /// Requests per second.
        var rate: Double
        /// What the backend read.
        var tally: RingBenchExchange.Tally
        /// ``RingBenchExchange/ringDigest(_:)`` of the page afterwards.
        var ring: UInt64
    }

    func run() throws {
        for (mode, depth) in [(Mode.poll, UInt32(1)), (.poll, 32), (.eventfd, 1), (.eventfd, 32)]
        where onlyMode == nil || onlyMode == "\(mode.rawValue)-qd\(depth)" {
            let count = requests(mode: mode, depth: depth)
            var c = BenchComparison(name: "ring-\(mode.rawValue)-qd\(depth)", unit: "req/s")
            var ours: [Run] = []
            var reference: [Run] = []
            try alternate(&c, runs: runs, ours: {
                let run = try measure(swift: true, mode: mode, depth: depth, count: count)
                ours.append(run)
                return run.rate
            }, reference: {
                let run = try measure(swift: false, mode: mode, depth: depth, count: count)
                reference.append(run)
                return run.rate
            })
            for (index, (o, r)) in zip(ours, reference).enumerated() {
                if verbose {
                    for (side, run) in [("ours", o), ("reference", r)] {
                        warn("check \(c.name) run=\(index + 1) side=\(side) answered=\(run.tally.answered) "
                             + "refused=\(run.tally.refused) digest=\(hex(run.tally.digest)) ring=\(hex(run.ring))")
                    }
                }
                guard o.tally == r.tally, o.tally.refused == 0, o.ring == r.ring else {
                    throw BenchFailure("\(c.name) run \(index + 1): the sides did different work: ours \(o.tally) "
                                       + "ring \(hex(o.ring)), reference \(r.tally) ring \(hex(r.ring))")
                }
            }
            print(c.line)
        }
    }

    func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }

    func requests(mode: Mode, depth: UInt32) -> UInt64 {
        if let requests { return requests }
        let base: UInt64 = switch (mode, depth) {
        case (.poll, 1): 400_000
        case (.poll, _): 4_000_000
        case (.eventfd, 1): 100_000
        case (.eventfd, _): 2_000_000
        }
        return quick ? base / 10 : base
    }

    /// One timed exchange of `count` requests.
    func measure(swift: Bool, mode: Mode, depth: UInt32, count: UInt64) throws -> Run {
        let region = try MemoryRegion.anonymous(pages: 1)
        let view = region.view
        let shared = try SharedRing(memory: view, entrySize: RingExchange.blkifEntrySize)
        let toBack = mode == .eventfd ? cref_eventfd() : -1
        let toFront = mode == .eventfd ? cref_eventfd() : -1
        defer {
            if toBack >= 0 { close(toBack) }
            if toFront >= 0 { close(toFront) }
        }
        if swift { _ = FrontRing(initializing: shared) } else { cref_blkif_init(view.baseAddress, pageSize) }
        let start = now()
        let (f, b): (UInt64, RingBenchExchange.Tally) = runConcurrently({
            _ = cref_pin_to_cpu(0)
            if swift {
                let sent = mode == .eventfd
                    ? try? RingBenchExchange.frontend(ring: shared, count: count, depth: depth,
                                                      signal: EventFDSignal(notifyFD: toBack, waitFD: toFront))
                    : try? RingBenchExchange.frontend(ring: shared, count: count, depth: depth, signal: BusyPoll())
                return sent ?? 0
            }
            return UInt64(max(0, cref_blkif_front_run(view.baseAddress, pageSize, count, depth, toBack, toFront)))
        }, {
            _ = cref_pin_to_cpu(1)
            if swift {
                let tally = mode == .eventfd
                    ? try? RingBenchExchange.backend(ring: shared, count: count,
                                                     signal: EventFDSignal(notifyFD: toFront, waitFD: toBack))
                    : try? RingBenchExchange.backend(ring: shared, count: count, signal: BusyPoll())
                return tally ?? RingBenchExchange.Tally()
            }
            var tally = cref_blkif_tally()
            _ = cref_blkif_back_serve(view.baseAddress, pageSize, count, toFront, toBack, &tally)
            return RingBenchExchange.Tally(tally)
        })
        let elapsed = now() - start
        let ring = RingBenchExchange.ringDigest(view)
        withExtendedLifetime(region) {}
        guard f == count, b.answered == count else {
            throw BenchFailure("ring exchange (\(swift ? "swift" : "C"), \(mode), qd\(depth)) lost requests: front \(f), "
                               + "back \(b.answered) of \(count)")
        }
        return Run(rate: Double(count) / elapsed, tally: b, ring: ring)
    }
}

struct BenchFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
