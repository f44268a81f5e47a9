import SharedMemory
import Synchronization
import XenRing

/// The guest side of a xenstore ring (io/xs_wire.h: struct xenstore_domain_interface):
/// requests go into `req`, replies and watch events come out of `rsp`.
///
/// Event channels are outside this module, so the transport takes two functions:
/// `notify` kicks xenstored after we produced requests or consumed responses, and `wait`
/// blocks until xenstored kicks us (returning false once the channel is closed). Only the
/// reader thread calls `wait`; a sender finding the request ring full waits until the
/// reader has been woken, since xenstored kicks after consuming requests.
public final class XenStoreRingTransport: XenStoreTransport {
    private let interface: XenstoreRingInterface
    private let memoryOwner: MemoryRegion?
    private let notify: @Sendable () -> Void
    private let waitForEvent: @Sendable () -> Bool
    private let gate = Gate()
    private let sendLock = Mutex<Void>(())

    /// A transport over the guest side of `interface`; `memoryOwner`, if given, is kept
    /// mapped as long as the transport lives.
    public init(interface: XenstoreRingInterface, memoryOwner: MemoryRegion? = nil,
                notify: @escaping @Sendable () -> Void, wait: @escaping @Sendable () -> Bool) {
        self.interface = interface
        self.memoryOwner = memoryOwner
        self.notify = notify
        waitForEvent = wait
    }

    public func send(_ bytes: [UInt8]) throws(XenStoreError) {
        try sendLock.withLock { (_: inout Void) throws(XenStoreError) in
            var offset = 0
            while offset < bytes.count {
                let seen = gate.current
                guard !gate.isClosed else { throw .connectionClosed }
                let written = bytes.withUnsafeBytes { raw in
                    Result { () throws(RingError) in
                        try interface.requests.write(UnsafeRawBufferPointer(rebasing: raw[offset...]))
                    }
                }
                let n: Int
                switch written {
                case let .success(count): n = count
                case let .failure(error): throw .ring(error)
                }
                if n > 0 {
                    offset += n
                    notify()
                } else if !gate.wait(past: seen) {
                    throw .connectionClosed
                }
            }
        }
    }

    public func receive(into buffer: UnsafeMutableRawBufferPointer) throws(XenStoreError) -> Int {
        while true {
            let n: Int
            do {
                n = try interface.responses.read(into: buffer)
            } catch {
                throw .ring(error)
            }
            if n > 0 {
                notify()
                gate.advance()
                return n
            }
            if gate.isClosed || !waitForEvent() { return 0 }
            // Woken by xenstored: it may also have consumed requests a sender waits on.
            gate.advance()
        }
    }

    /// Stops the transport. The owner must also make `wait` return (close the channel).
    public func close() {
        gate.close()
    }
}
