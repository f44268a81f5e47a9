import Glibc
import Logging
import Tap
import XenDevice

/// One TAP queue as a ``FrontendLoopSource``: frames the guest side's kernel transmits on
/// it are read on the I/O thread of its queue pair and put on that pair's tx ring in the
/// same pass; it asks for POLLIN only while a frame of any size fits on the ring. Made for
/// one connection's pair (a new connection wires new ones).
final class NetFrontendTapSource: FrontendLoopSource, @unchecked Sendable {
    // SAFETY (@unchecked): `buffer` and `unfinished` are used only in serve(revents:), on
    // the I/O thread.
    let datapath: NetFrontendDatapath
    let logger: Logger
    let loopDescriptor: Int32
    /// One frame with its virtio-net header; a GSO frame is at most 64 KiB.
    private var buffer = [UInt8](repeating: 0, count: VirtioNetHeader.size + 65536 + 4096)
    /// The last call stopped after a full batch: frames may wait that poll will not report
    /// before the next pass.
    private var unfinished = false
    /// Frames read per call before the ring is pushed.
    static let batch = 64

    init(datapath: NetFrontendDatapath, descriptor: Int32, logger: Logger) {
        self.datapath = datapath
        self.logger = logger
        loopDescriptor = descriptor
    }

    func loopEvents() -> Int16 {
        datapath.hasTxRoom ? Int16(POLLIN) : 0
    }

    func serve(revents: Int16) -> FrontendLoopProgress {
        // A descriptor closed under us (or a device gone) would report this at every poll.
        if revents & Int16(POLLNVAL | POLLERR | POLLHUP) != 0 {
            logger.error("netfront: TAP queue \(loopDescriptor) reported poll events 0x\(String(revents, radix: 16)); no longer reading it")
            return .done
        }
        // Read only when poll said so or a batch stopped short: a frame that arrives
        // meanwhile makes the next poll return at once.
        guard revents & Int16(POLLIN) != 0 || unfinished else { return .idle }
        unfinished = false
        var frames = 0
        while datapath.hasTxRoom {
            guard frames < Self.batch else {
                unfinished = true
                return .busy
            }
            let count = buffer.withUnsafeMutableBytes { read(loopDescriptor, $0.baseAddress, $0.count) }
            guard count > 0 else { return .idle }
            frames += 1
            buffer.withUnsafeMutableBytes { bytes in
                datapath.send(UnsafeMutableRawBufferPointer(rebasing: bytes[0 ..< count]))
            }
        }
        return .idle
    }

    func frontendClosed() {}
}
