import CURing
import Glibc
import Netif
import Synchronization
import XenPlatform

extension NetifCounters {
    /// Adds `other`'s counts to these.
    mutating func add(_ other: NetifCounters) {
        txPackets += other.txPackets
        txBytes += other.txBytes
        txDropped += other.txDropped
        txErrors += other.txErrors
        rxPackets += other.rxPackets
        rxBytes += other.rxBytes
        rxDropped += other.rxDropped
        rxErrors += other.rxErrors
    }
}

/// Where a vif's queues hand each other packets (io/netif.h, XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING):
/// the kernel picks the TAP queue a packet arrives on, the frontend's mapping table picks
/// the netif queue that delivers it, so a packet read by one queue may belong to another,
/// on another worker. Each queue owns one inbox: a few packet slots in a registered copy
/// buffer (the owner grant-copies straight out of them) and an eventfd its worker polls.
/// A full inbox drops the packet, as a full TAP queue would: memory stays bounded.
public final class NetbackInbox: @unchecked Sendable {
    // SAFETY (@unchecked): a slot's bytes are written by the one producer that took it
    // off `free` under the lock, and read by the owner only after it took the slot off
    // `ready` under the lock; the lock orders the two.
    /// Packet slots.
    public let capacity: Int
    /// Bytes per slot: a virtio-net header and the largest packet.
    public let stride: Int
    let buffer: CopyBuffer
    let mapper: any GrantMapper
    /// Readable while packets wait (EFD_NONBLOCK: the owner drains it after its poll).
    let eventFD: Int32

    struct State {
        var free: [Int]
        /// Filled slots and their lengths, oldest first.
        var ready: [(slot: Int, length: Int)] = []
        var closed = false
    }
    let state: Mutex<State>

    /// An inbox of `capacity` slots of `stride` bytes, its buffer registered with `mapper`.
    public init(mapper: any GrantMapper, capacity: Int, stride: Int) throws(NetbackError) {
        self.capacity = capacity
        self.stride = stride
        self.mapper = mapper
        let pages = (capacity * stride + 4095) / 4096
        do { buffer = try mapper.registerCopyBuffer(pages: pages) } catch { throw .platform(error) }
        // Close-on-exec and non-blocking (the owner polls, then drains it).
        let fd = curing_eventfd(0)
        guard fd >= 0 else {
            try? mapper.unregisterCopyBuffer(buffer)
            throw .platform(.system("eventfd", errno: errno))
        }
        eventFD = fd
        state = Mutex(State(free: Array((0..<capacity).reversed())))
    }

    /// The copy buffer's id, for grant copies out of a slot.
    public var bufferID: UInt32 { buffer.id }

    /// Where slot `slot` starts in the copy buffer.
    public func offset(of slot: Int) -> Int { slot * stride }

    /// The start of slot `slot`.
    func base(_ slot: Int) -> UnsafeMutableRawPointer { buffer.view.baseAddress + slot * stride }

    /// From another queue, on any thread: copies `packet` (header and frame, at most
    /// ``stride`` bytes) into a free slot and wakes the owner. False when full (dropped).
    public func put(_ packet: UnsafeRawBufferPointer) -> Bool {
        guard packet.count <= stride else { return false }
        return state.withLock { state -> Bool in
            guard !state.closed, let slot = state.free.popLast() else { return false }
            // Under the lock, so close() cannot come between: a copy of one packet and the
            // wake-up, contended only by the vif's few other queues.
            base(slot).copyMemory(from: packet.baseAddress!, byteCount: packet.count)
            state.ready.append((slot, packet.count))
            var one: UInt64 = 1
            _ = write(eventFD, &one, 8)
            return true
        }
    }

    /// On the owner's worker: clears the wake-up and hands over every filled slot, oldest
    /// first; each stays the owner's until ``release(_:)``.
    func take(_ body: (_ slot: Int, _ length: Int) -> Void) {
        var count: UInt64 = 0
        _ = read(eventFD, &count, 8)
        let ready = state.withLock { state -> [(slot: Int, length: Int)] in
            defer { state.ready.removeAll(keepingCapacity: true) }
            return state.ready
        }
        for (slot, length) in ready { body(slot, length) }
    }

    /// Gives a slot back once its packet is delivered or dropped.
    func release(_ slot: Int) {
        state.withLock { $0.free.append(slot) }
    }

    /// Packets waiting now.
    public var waiting: Int { state.withLock { $0.ready.count } }

    /// Releases the buffer and the eventfd; only once no queue uses the inbox.
    public func close() {
        let first = state.withLock { state -> Bool in
            defer { state.closed = true }
            return !state.closed
        }
        guard first else { return }
        try? mapper.unregisterCopyBuffer(buffer)
        Glibc.close(eventFD)
    }
}
