import Glibc
import Synchronization
import XenStore

/// xenstore through the kernel's xenbus device (/dev/xen/xenbus), the way a domU reaches
/// xenstored: the same xsd_sockmsg stream as the socket (io/xs_wire.h), with two rules of
/// the device.
///
/// - Each write(2) must carry exactly one message: Linux's xenbus_dev_frontend buffers a
///   write until it holds one whole message, acts on it and drops whatever followed in
///   the same write. So ``send(_:)`` splits the stream on message boundaries.
/// - A message, header included, must fit the device's XENSTORE_PAYLOAD_MAX-byte buffer;
///   a longer one is refused here, before anything is written, since the device would
///   discard it with E2BIG.
///
/// A device file cannot be shut down like a socket, so ``close()`` wakes a reader blocked
/// in ``receive(into:)`` through a pipe it polls together with the device.
public final class XenbusDeviceTransport: XenStoreTransport, @unchecked Sendable {
    // SAFETY (@unchecked): the descriptors are immutable and closed only in deinit, so a
    // reader never sees one reused; the outgoing buffer is guarded by `outgoing`.
    private let fd: Int32
    private let wakeRead: Int32
    private let wakeWrite: Int32
    private let outgoing = Mutex<Outgoing>(Outgoing())
    /// What the descriptor is, for error messages.
    public let name: String

    private struct Outgoing {
        var pending: [UInt8] = []
        var closed = false
    }

    /// The device a domU uses.
    public static let defaultPath = "/dev/xen/xenbus"

    /// Largest message, header and payload together, that the device accepts.
    public static let maxMessageBytes = XenStoreLimits.payloadMax

    /// Opens the xenbus device at `path`.
    public convenience init(path: String = XenbusDeviceTransport.defaultPath) throws(XenStoreError) {
        let r = LinuxCall.open(path, O_RDWR)
        guard !r.failed else { throw .systemCall("open(\(path))", errno: r.errno) }
        try self.init(adopting: r.value, name: path)
    }

    /// Takes ownership of `descriptor`, which behaves like the xenbus device (tests pass
    /// one end of a SOCK_SEQPACKET socket pair, which keeps write boundaries visible).
    public init(adopting descriptor: Int32, name: String) throws(XenStoreError) {
        let wake = LinuxCall.closeOnExecPipe()
        guard !wake.failed else {
            LinuxCall.close(descriptor)
            throw .systemCall("pipe(xenbus wake)", errno: wake.errno)
        }
        fd = descriptor
        (wakeRead, wakeWrite) = wake.value
        self.name = name
    }

    deinit {
        LinuxCall.close(fd)
        LinuxCall.close(wakeRead)
        LinuxCall.close(wakeWrite)
    }

    public func send(_ bytes: [UInt8]) throws(XenStoreError) {
        try outgoing.withLock { (o: inout Outgoing) throws(XenStoreError) in
            guard !o.closed else { throw .connectionClosed }
            o.pending.append(contentsOf: bytes)
            var start = 0
            defer { o.pending.removeFirst(start) }
            do throws(XenStoreError) {
                while let length = try Self.nextMessageLength(o.pending[start...]) {
                    try writeWhole(o.pending[start ..< start + length])
                    start += length
                }
            } catch {
                // The client hands over whole messages, so dropping what is buffered drops
                // exactly the refused one and the stream stays on a message boundary.
                start = o.pending.count
                throw error
            }
        }
    }

    /// The byte length of the whole message at the front of `bytes`, nil while it is
    /// incomplete; a header announcing more than the device holds is an error.
    static func nextMessageLength(_ bytes: ArraySlice<UInt8>) throws(XenStoreError) -> Int? {
        guard bytes.count >= XSDSockmsgHeader.size else { return nil }
        let b = bytes.startIndex + 12
        let payload = UInt32(bytes[b]) | UInt32(bytes[b + 1]) << 8 | UInt32(bytes[b + 2]) << 16 | UInt32(bytes[b + 3]) << 24
        let limit = maxMessageBytes - XSDSockmsgHeader.size
        guard payload <= UInt32(limit) else { throw .payloadTooLong(length: payload, limit: limit) }
        let total = XSDSockmsgHeader.size + Int(payload)
        return bytes.count >= total ? total : nil
    }

    /// Writes one message with a single write(2) when the device takes it all; a short
    /// write continues with the rest, which the device appends to the same message.
    private func writeWhole(_ message: ArraySlice<UInt8>) throws(XenStoreError) {
        var offset = message.startIndex
        while offset < message.endIndex {
            let r = message[offset...].withUnsafeBytes { LinuxCall.write(fd, $0) }
            guard !r.failed else { throw .systemCall("write(\(name))", errno: r.errno) }
            // A device that takes nothing would spin this loop forever.
            guard r.value > 0 else { throw .systemCall("write(\(name)) took 0 bytes", errno: EIO) }
            offset += r.value
        }
    }

    public func receive(into buffer: UnsafeMutableRawBufferPointer) throws(XenStoreError) -> Int {
        while true {
            var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0),
                        pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)]
            let ready = fds.withUnsafeMutableBufferPointer { LinuxCall.poll($0, timeout: -1) }
            guard !ready.failed else { throw .systemCall("poll(\(name))", errno: ready.errno) }
            if fds[1].revents != 0 { return 0 }
            guard fds[0].revents != 0 else { continue }
            let r = LinuxCall.read(fd, into: buffer)
            if !r.failed { return r.value }
            if r.errno == EAGAIN { continue }
            throw .systemCall("read(\(name))", errno: r.errno)
        }
    }

    /// Ends the stream: later sends fail with ``XenStoreError/connectionClosed`` and a
    /// blocked or later ``receive(into:)`` returns 0. Idempotent.
    public func close() {
        let first = outgoing.withLock { o -> Bool in
            defer { o.closed = true }
            return !o.closed
        }
        guard first else { return }
        let one: UInt8 = 1
        _ = withUnsafeBytes(of: one) { LinuxCall.write(wakeWrite, $0) }
    }
}
