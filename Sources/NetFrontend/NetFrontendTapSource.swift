import Glibc
import Tap
import XenDevice

/// The TAP device's queue as a ``FrontendLoopSource``: frames the guest side's kernel
/// transmits are read on the frontend's I/O thread and put on the tx ring in the same
/// pass; it asks for POLLIN only while a frame of any size fits on the ring.
final class NetFrontendTapSource: FrontendLoopSource, @unchecked Sendable {
    // SAFETY (@unchecked): `buffer` is used only in serve(revents:), on the I/O thread.
    let core: NetFrontendCore
    let loopDescriptor: Int32
    /// One frame with its virtio-net header; a GSO frame is at most 64 KiB.
    private var buffer = [UInt8](repeating: 0, count: VirtioNetHeader.size + 65536 + 4096)
    /// Frames read per call before the ring is pushed.
    static let batch = 64

    init(core: NetFrontendCore, descriptor: Int32) {
        self.core = core
        loopDescriptor = descriptor
    }

    func loopEvents() -> Int16 {
        (core.activeDatapath?.hasTxRoom ?? false) ? Int16(POLLIN) : 0
    }

    func serve(revents: Int16) -> FrontendLoopProgress {
        guard let datapath = core.activeDatapath else { return .idle }
        var frames = 0
        while datapath.hasTxRoom {
            guard frames < Self.batch else { return .busy }
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
