import CRingReference
import Glibc
import SharedMemory
import XenRing

extension RingBench {
    /// The reference for `platform-evtchn-wakeup`, shaped like ours there: a QD`depth`
    /// blkif exchange of `count` requests between a frontend in another process and a
    /// backend on the calling thread, neither pinned, timed on the backend's side from the
    /// frontend's "ready" (after its start-up) until the backend has answered the last
    /// request. Only the notification differs: plain eventfds, and Xen's C ring macros.
    ///
    /// The frontend process is forked and runs only C (`cref_blkif_front_fork`); the ring
    /// is a shared anonymous page both processes map. Returns requests per second.
    func crossProcessExchange(count: UInt64, depth: UInt32 = 1) throws -> Double {
        let region = try MemoryRegion.anonymous(pages: 1)
        let view = region.view
        cref_blkif_init(view.baseAddress, pageSize)
        let toBack = cref_eventfd()
        let toFront = cref_eventfd()
        var ready: [Int32] = [-1, -1]
        let piped = pipe(&ready) == 0
        defer {
            for fd in [toBack, toFront] + ready where fd >= 0 { close(fd) }
        }
        guard toBack >= 0, toFront >= 0, piped else { throw BenchFailure("eventfd or pipe failed: errno \(errno)") }
        let pid = cref_blkif_front_fork(view.baseAddress, pageSize, count, depth, toBack, toFront, ready[1])
        guard pid > 0 else { throw BenchFailure("fork failed: errno \(errno)") }
        var byte: UInt8 = 0
        var got = 0
        repeat { got = read(ready[0], &byte, 1) } while got < 0 && errno == EINTR
        guard got == 1 else {
            kill(pid, SIGKILL)
            _ = reap(pid)
            throw BenchFailure("the reference frontend process ended before it was ready")
        }
        let start = now()
        var tally = cref_blkif_tally()
        let answered = cref_blkif_back_serve(view.baseAddress, pageSize, count, toFront, toBack, &tally)
        let elapsed = now() - start
        let status = reap(pid)
        withExtendedLifetime(region) {}
        guard answered == Int(count), tally.refused == 0, status == 0 else {
            throw BenchFailure("cross-process eventfd exchange: backend answered \(answered) of \(count) "
                               + "(\(tally.refused) refused), frontend process wait status \(status)")
        }
        return Double(count) / elapsed
    }

    /// Waits for `pid`; its wait status.
    private func reap(_ pid: pid_t) -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return status
    }
}
