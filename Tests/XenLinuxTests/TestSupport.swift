import Foundation
import XenTesting
import Glibc
import Testing

/// Whether this machine has Xen's devices. Evaluated once; when absent it prints the
/// reason the real-Xen tests are skipped, so a test log says why they did not run.
let xenPresent: Bool = {
    let present = access("/dev/xen", F_OK) == 0
    if !present { print("skipped: /dev/xen absent (no Xen here)") }
    return present
}()

/// A thread for the fake peer of a test, joined by the test.
final class PeerThread: @unchecked Sendable {
    // SAFETY: `handle` is written once by pthread_create before any join.
    private var handle = pthread_t()

    private final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    init(_ body: @escaping @Sendable () -> Void) {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        let r = pthread_create(&handle, nil, { arg in
            Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue().body()
            return nil
        }, box)
        precondition(r == 0, "pthread_create failed: \(r)")
    }

    func join() { pthread_join(handle, nil) }
}

/// A SOCK_SEQPACKET socket pair: each write on one end arrives as one packet on the other,
/// so a test sees the write boundaries a xenbus device would see.
func seqpacketPair() -> (Int32, Int32) {
    var fds: [Int32] = [-1, -1]
    let r = socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds)
    precondition(r == 0, "socketpair failed: \(errno)")
    return (fds[0], fds[1])
}

/// The next packet on `fd` (blocking), or nil at end of stream.
func receivePacket(_ fd: Int32) -> [UInt8]? {
    var buffer = [UInt8](repeating: 0, count: 8192)
    let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
    guard n > 0 else { return nil }
    return Array(buffer[..<n])
}

/// A packet already queued on `fd`, or nil when none is (never blocks).
func pollPacket(_ fd: Int32) -> [UInt8]? {
    var buffer = [UInt8](repeating: 0, count: 8192)
    let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
    guard n > 0 else { return nil }
    return Array(buffer[..<n])
}

/// An xsd_sockmsg with the given fields and payload, little-endian (io/xs_wire.h).
func xsMessage(type: UInt32, requestID: UInt32, transactionID: UInt32 = 0, payload: [UInt8]) -> [UInt8] {
    var out: [UInt8] = []
    for word in [type, requestID, transactionID, UInt32(payload.count)] {
        withUnsafeBytes(of: word.littleEndian) { out.append(contentsOf: $0) }
    }
    return out + payload
}

