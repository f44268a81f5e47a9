import CRingReference
import Glibc
import SharedMemory
import XenRing
import XenTesting

/// `xensplit-bench ring`: our rings against Xen's C io/ring.h macros on the same shape
/// (one page, blkif entries), frontend and backend on two pinned threads, busy-poll and
/// eventfd-notify modes, queue depth 1 and 32.
struct RingBench {
    var runs = 5
    var quick = false
    /// Only this mode (poll or eventfd), for profiling one side.
    var onlyMode: String? = nil

    enum Mode: String { case poll, eventfd }

    func run() throws {
        for (mode, depth) in [(Mode.poll, UInt32(1)), (.poll, 32), (.eventfd, 1), (.eventfd, 32)]
        where onlyMode == nil || onlyMode == "\(mode.rawValue)-qd\(depth)" {
            let count = requests(mode: mode, depth: depth)
            var c = BenchComparison(name: "ring-\(mode.rawValue)-qd\(depth)", unit: "req/s")
            try alternate(&c, runs: runs,
                          ours: { try exchange(swift: true, mode: mode, depth: depth, count: count) },
                          reference: { try exchange(swift: false, mode: mode, depth: depth, count: count) })
            print(c.line)
        }
    }

    func requests(mode: Mode, depth: UInt32) -> UInt64 {
        let base: UInt64 = switch (mode, depth) {
        case (.poll, 1): 400_000
        case (.poll, _): 4_000_000
        case (.eventfd, 1): 100_000
        case (.eventfd, _): 2_000_000
        }
        return quick ? base / 10 : base
    }

    /// One timed exchange of `count` requests; returns requests per second.
    func exchange(swift: Bool, mode: Mode, depth: UInt32, count: UInt64) throws -> Double {
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
        let (f, b): (UInt64, UInt64) = runConcurrently({
            _ = cref_pin_to_cpu(0)
            if swift {
                return (try? RingExchange.blkifFrontend(ring: shared, count: count, depth: depth,
                                                       notifyFD: toBack, waitFD: toFront)) ?? 0
            }
            return UInt64(max(0, cref_blkif_front_run(view.baseAddress, pageSize, count, depth, toBack, toFront)))
        }, {
            _ = cref_pin_to_cpu(1)
            if swift {
                return (try? RingExchange.blkifBackend(ring: shared, count: count, notifyFD: toFront, waitFD: toBack)) ?? 0
            }
            return UInt64(max(0, cref_blkif_back_run(view.baseAddress, pageSize, count, toFront, toBack)))
        })
        let elapsed = now() - start
        withExtendedLifetime(region) {}
        guard f == count, b == count else {
            throw BenchFailure("ring exchange (\(swift ? "swift" : "C"), \(mode), qd\(depth)) lost requests: front \(f), back \(b) of \(count)")
        }
        return Double(count) / elapsed
    }
}

struct BenchFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
