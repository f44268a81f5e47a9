import Blkif
import Dispatch
import Glibc
import SharedMemory
import Synchronization
import Testing
import URing
import XenPlatform
import XenRing
import XenTesting
@testable import BlockBackend

/// A GrantMapper that forwards to dom0's and counts live copy buffers, so tests can see
/// that every queue released its own.
final class CountingMapper: GrantMapper, Sendable {
    let inner: any GrantMapper
    let liveBuffers = Mutex(0)

    init(_ inner: any GrantMapper) { self.inner = inner }

    func map(_ refs: [GrantRef], from domain: DomainID, writable: Bool) throws(PlatformError) -> GrantMapping {
        try inner.map(refs, from: domain, writable: writable)
    }
    func unmap(_ mapping: GrantMapping) throws(PlatformError) { try inner.unmap(mapping) }
    func registerCopyBuffer(pages: Int) throws(PlatformError) -> CopyBuffer {
        let buffer = try inner.registerCopyBuffer(pages: pages)
        liveBuffers.withLock { $0 += 1 }
        return buffer
    }
    func unregisterCopyBuffer(_ buffer: CopyBuffer) throws(PlatformError) {
        try inner.unregisterCopyBuffer(buffer)
        liveBuffers.withLock { $0 -= 1 }
    }
    func copy(_ segments: UnsafeMutableBufferPointer<GrantCopySegment>) throws(PlatformError) {
        try inner.copy(segments)
    }
}

/// The engines data tests run on: both, always. io_uring is required on the machines
/// this runs on (DESIGN.md, Tests), so where it cannot be set up the io_uring cases fail,
/// naming why, in ``makeFactory(_:capacity:)``.
let availableEngines: [BlockIOEngineKind] = BlockIOEngineKind.allCases

/// A factory of `kind` engines, asked for by name (no fallback from one to the other).
func makeFactory(_ kind: BlockIOEngineKind, capacity: Int = 1024) throws -> BlockIOEngineFactory {
    try BlockIOEngineFactory(kind: kind, configuration: .init(queueDepth: 64, capacity: capacity, threads: 2))
}

/// One segment of a planned request: a data page of the frontend and the sectors in it.
struct PlannedSegment {
    var page: Int
    var first: UInt8
    var last: UInt8
    var bytes: Int { (Int(last) - Int(first) + 1) * 512 }
}

/// A blkif frontend for tests: a ring (MockRingPeer) plus granted data pages and indirect
/// segment pages, writing real requests with Blkif's encoders. The backend half of the
/// MockRingPeer (ring mapped in dom0, port bound) is what the queue under test is given.
final class TestFrontend {
    let hypervisor: InProcessHypervisor
    let domain: DomainID
    let abi: BlkifABI
    let front: MockRingPeer.Frontend
    /// The backend half: the ring mapped in dom0, the port bound through `backChannel`.
    let backRing: BackRing
    let backMapping: GrantMapping
    let backChannel: any EventChannel
    let backPort: EventPort
    /// Whether `backChannel` is this frontend's own (closed with it) or shared.
    let ownsBackChannel: Bool
    let data: SharedPages
    let indirect: SharedPages
    var nextID: UInt64 = 1000
    var received: [UInt64: BlkifResponse] = [:]
    /// Response ids in the order they were read from the ring.
    var order: [UInt64] = []

    static let dataPages = 96

    /// A new domain `name` with a ring of `ringPages` pages; dom0 maps it and binds the
    /// port through `sharedChannel`, or through a handle of its own when nil.
    init(hypervisor: InProcessHypervisor, name: String, abi: BlkifABI, ringPages: Int,
         sharedChannel: (any EventChannel)? = nil) throws {
        self.hypervisor = hypervisor
        self.abi = abi
        domain = try hypervisor.createDomain(name: name)
        let guest = try hypervisor.platform(for: domain)
        let dom0 = try hypervisor.platform(for: .dom0)
        front = try MockRingPeer.Frontend(platform: guest, backendDomain: .dom0, pages: ringPages, entrySize: abi.slotSize)
        backMapping = try dom0.map(front.pages.refs, from: domain, writable: true)
        backRing = BackRing(try SharedRing(memory: backMapping.view, pages: ringPages, entrySize: abi.slotSize))
        ownsBackChannel = sharedChannel == nil
        backChannel = try sharedChannel ?? dom0.openEventChannel()
        backPort = try backChannel.bindInterdomain(remote: domain, remotePort: front.port)
        data = try guest.share(pages: Self.dataPages, with: .dom0, writable: true)
        indirect = try guest.share(pages: BlkifIndirectGrefs.capacity, with: .dom0, writable: true)
    }

    /// Builds a queue for this frontend's ring, in the frontend's ABI.
    func makeQueue(store: any BlockBackingStore, mapper: any GrantMapper,
                   configuration: BlkbackQueueConfiguration) throws -> BlkbackQueue {
        var configuration = configuration
        configuration.abi = abi
        return try BlkbackQueue(name: "d\(domain)/q0", ring: backRing, frontendDomain: domain,
                                eventChannel: backChannel, port: backPort, mapper: mapper, store: store,
                                configuration: configuration)
    }

    func takeID() -> UInt64 {
        nextID += 1
        return nextID
    }

    /// Places `request` in the next slot (not yet pushed); returns its id.
    @discardableResult
    func produce(_ request: BlkifRequest) throws -> UInt64 {
        try front.produceRequest { request.encode(into: $0, at: 0, abi: self.abi) }
        return request.id
    }

    /// Places raw request bytes: `request` encoded, then `patch` applied to the slot.
    @discardableResult
    func produce(_ request: BlkifRequest, patch: (SharedView, BlkifLayout) -> Void) throws -> UInt64 {
        try front.produceRequest { slot in
            request.encode(into: slot, at: 0, abi: self.abi)
            patch(slot, self.abi.layout)
        }
        return request.id
    }

    func push() throws { try front.pushRequestsAndNotify() }

    /// A read or write of `segments` at `sector`, in the slot or through indirect page
    /// `indirectPage`.
    func request(_ operation: BlkifDirectOperation, sector: UInt64, _ segments: [PlannedSegment],
                 indirectPage: Int? = nil) throws -> BlkifRequest {
        let id = takeID()
        let encoded = segments.map { BlkifSegment(gref: data.refs[$0.page], firstSector: $0.first, lastSector: $0.last) }
        if let indirectPage {
            for (k, segment) in encoded.enumerated() {
                let page = try indirect.view.slice(offset: (indirectPage + k / BlkifIndirectPage.segmentsPerPage) * pageSize,
                                                   length: pageSize)
                BlkifIndirectPage.encodeSegment(segment, index: k % BlkifIndirectPage.segmentsPerPage, into: page)
            }
            let pages = BlkifIndirectPage.pageCount(forSegments: encoded.count)
            return .indirect(try BlkifIndirectRequest(
                operation: operation == .read ? .read : .write, segmentCount: encoded.count, handle: 0, id: id,
                sectorNumber: sector,
                indirectGrefs: BlkifIndirectGrefs(indirect.refs[indirectPage..<(indirectPage + pages)])))
        }
        return .direct(try BlkifDirectRequest(operation: operation, handle: 0, id: id, sectorNumber: sector,
                                              segments: BlkifSegments(encoded)))
    }

    /// Sends one direct request of `segments` at `sector`, waits for it and returns its status.
    func send(_ operation: BlkifDirectOperation, sector: UInt64, _ segments: BlkifSegments) throws -> BlkifStatus? {
        let id = try produce(.direct(BlkifDirectRequest(operation: operation, handle: 0, id: takeID(),
                                                        sectorNumber: sector, segments: segments)))
        try push()
        return try self.await([id])[id]?.status
    }

    /// Writes `bytes` into the data pages the segments name, in order.
    func fill(_ segments: [PlannedSegment], with bytes: ArraySlice<UInt8>) {
        var at = bytes.startIndex
        for s in segments {
            bytes[at..<(at + s.bytes)].withUnsafeBytes {
                data.view.copyBytes(from: $0, to: s.page * pageSize + Int(s.first) * 512)
            }
            at += s.bytes
        }
    }

    /// The bytes the segments name in the data pages, concatenated.
    func gather(_ segments: [PlannedSegment]) -> [UInt8] {
        var out: [UInt8] = []
        for s in segments { out += data.view.bytes(at: s.page * pageSize + Int(s.first) * 512, length: s.bytes) }
        return out
    }

    /// Reads every response now on the ring.
    func collect() throws {
        try front.consumeResponses { slot in
            if let response = try? BlkifResponse.decode(from: slot, at: 0, abi: abi) {
                received[response.id] = response
                order.append(response.id)
            }
        }
    }

    /// Waits until responses to all of `ids` arrived; returns them by id. Fails (rather
    /// than hanging) if the backend stays silent for 30 s.
    func await(_ ids: [UInt64]) throws -> [UInt64: BlkifResponse] {
        while true {
            try collect()
            if ids.allSatisfy({ received[$0] != nil }) {
                var out: [UInt64: BlkifResponse] = [:]
                for id in ids { out[id] = received.removeValue(forKey: id) }
                return out
            }
            if try front.finalCheckForResponses() { continue }
            try waitForEvent()
        }
    }

    func waitForEvent() throws {
        while true {
            if let port = try front.eventChannel.pending() {
                try front.eventChannel.unmask(port)
                return
            }
            var p = pollfd(fd: front.eventChannel.fileDescriptor, events: Int16(POLLIN), revents: 0)
            let ready = poll(&p, 1, 30_000)
            if ready == 0 { throw TestFailure("the backend sent no event for 30 s") }
            if ready < 0, errno != EINTR { throw Errno(code: errno) }
        }
    }

    /// Unmaps the ring in dom0, closes both ports, ends access to every page.
    func close() throws {
        if ownsBackChannel { backChannel.close() } else { try backChannel.unbind(backPort) }
        try hypervisor.platform(for: .dom0).unmap(backMapping)
        try front.close()
        try hypervisor.platform(for: domain).endAccess(data)
        try hypervisor.platform(for: domain).endAccess(indirect)
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Random segments covering whole and partial pages, starting at data page `firstPage`.
func randomSegments(count: Int, firstPage: Int, using generator: inout SeededGenerator) -> [PlannedSegment] {
    (0..<count).map { k in
        let first = UInt8.random(in: 0...7, using: &generator)
        let last = Bool.random(using: &generator) ? 7 : UInt8.random(in: first...7, using: &generator)
        return PlannedSegment(page: firstPage + k, first: first, last: last)
    }
}

func hypervisorForTests() throws -> InProcessHypervisor {
    var configuration = InProcessHypervisor.Configuration()
    configuration.poolPages = 16384
    configuration.grantEntries = 4096
    // As Linux's evtchn device: a port handed out stays masked until unmasked.
    configuration.masksDeliveredPorts = true
    return try InProcessHypervisor(configuration: configuration)
}

/// A joinable thread running `body` (pthread; the tests avoid Foundation).
final class Thread: @unchecked Sendable {
    // SAFETY (@unchecked): `handle` is written before any other thread can see the object
    // and read only by join().
    var handle = pthread_t()

    final class Box {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }

    init(_ body: @escaping @Sendable () -> Void) {
        let context = Unmanaged.passRetained(Box(body)).toOpaque()
        let result = pthread_create(&handle, nil, { context in
            guard let context else { return nil }
            Unmanaged<Box>.fromOpaque(context).takeRetainedValue().body()
            return nil
        }, context)
        precondition(result == 0, "pthread_create failed: \(result)")
    }

    func join() { pthread_join(handle, nil) }
}
