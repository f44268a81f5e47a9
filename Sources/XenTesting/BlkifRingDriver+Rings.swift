import Blkif
import Glibc
import SharedMemory
import XenPlatform
import XenRing

extension BlkifRingDriver {
    /// One connection's rings and event channel: the data path of a ``BlkifRingDriver``.
    /// Slot `n` carries request id `n` and the slot's data pages; a request goes on ring
    /// `slot % queues` unless the caller names one. Used by one thread at a time, between
    /// ``BlkifRingDriver/connected(timeout:)`` and the connection's end.
    public final class Rings: @unchecked Sendable {
        // SAFETY (@unchecked): made by the handshake task and published to the one data
        // path thread through the driver's mutex (connected(timeout:) and `rings` take it).
        struct Ring {
            let pages: SharedPages
            var ring: FrontRing
            let port: EventPort
            var unpushed = false
        }

        let platform: any Platform
        let channel: any EventChannel
        var rings: [Ring] = []
        /// The ring each slot's request is on; -1 while the slot is free.
        var slotRing: [Int]
        let slots: Slots
        let slotPages: Int
        /// The grefs of every slot's data pages, slot after slot (`slotPages` each).
        let slotGrefs: [GrantRef]
        let abi: BlkifABI
        /// Ring count.
        public let queues: Int
        /// Request slots.
        public let depth: Int

        /// Grants `configuration.queues` rings to `backend` and allocates their ports.
        init(platform: any Platform, backend: DomainID, configuration: Configuration, slots: Slots) throws(XenTestingError) {
            self.platform = platform
            self.slots = slots
            slotPages = configuration.slotPages
            slotGrefs = slots.data.flatMap(\.refs)
            abi = configuration.abi
            queues = configuration.queues
            depth = configuration.depth
            slotRing = [Int](repeating: -1, count: configuration.depth)
            do { channel = try platform.openEventChannel() } catch { throw .platform(error) }
            let pagesPerRing = 1 << Int(min(configuration.ringPageOrder, 4))
            do throws(XenTestingError) {
                for _ in 0 ..< configuration.queues {
                    let pages: SharedPages
                    do { pages = try platform.grantTable.share(pages: pagesPerRing, with: backend, writable: true) } catch {
                        throw .platform(error)
                    }
                    let shared: SharedRing
                    do { shared = try SharedRing(memory: pages.view, pages: pagesPerRing, entrySize: abi.slotSize) } catch {
                        try? platform.grantTable.endAccess(pages)
                        throw .ring(error)
                    }
                    let port: EventPort
                    do { port = try channel.allocateUnbound(remote: backend) } catch {
                        try? platform.grantTable.endAccess(pages)
                        throw .platform(error)
                    }
                    rings.append(Ring(pages: pages, ring: FrontRing(initializing: shared), port: port))
                }
                let capacity = rings.reduce(0) { $0 + Int($1.ring.size) }
                guard depth <= capacity else {
                    throw .configuration("depth \(depth) does not fit \(queues) rings of \(capacity / queues) slots")
                }
            } catch {
                _ = release()
                throw error
            }
        }

        /// Closes the channel and ends access to the ring pages; returns those the
        /// backend still maps.
        func release() -> [SharedPages] {
            channel.close()
            defer { rings = [] }
            return rings.map(\.pages).filter { (try? platform.grantTable.endAccess($0)) == nil }
        }

        /// The descriptor that polls readable when the backend notified a port.
        public var eventDescriptor: Int32 { channel.fileDescriptor }

        /// Slot `slot`'s data pages: what a write sends, where a read lands.
        public func data(slot: Int) -> SharedView { slots.data[slot].view }

        /// Ring `queue`'s private indices and shared page, for a test that breaks it on purpose.
        public func ring(_ queue: Int) -> FrontRing { rings[queue].ring }

        /// Notifies ring `queue`'s port, whatever the ring holds.
        public func notify(queue: Int) throws(XenTestingError) {
            do { try channel.notify(rings[queue].port) } catch { throw .platform(error) }
        }

        func checkLength(_ bytes: Int) throws(XenTestingError) {
            guard bytes > 0, bytes % 512 == 0, bytes <= slotPages * pageSize else {
                throw .transferSize(bytes: bytes, limit: slotPages * pageSize)
            }
        }

        /// Writes a request of `sectors` 512-byte sectors from `sector` for `slot`, on its
        /// data pages from their start, into ring `queue` (default `slot % queues`), without
        /// publishing it. Direct up to 11 pages (any operation with segments); beyond,
        /// `BLKIF_OP_INDIRECT` over whole pages, reading unless `operation` is `.write`.
        public func submit(_ operation: BlkifDirectOperation, slot: Int, sector: UInt64, sectors: Int,
                           queue: Int? = nil) throws(XenTestingError) {
            let r = queue ?? slot % queues
            guard slot >= 0, slot < depth, slotRing[slot] < 0, r >= 0, r < queues else {
                throw .slotUnavailable(slot: slot, queue: r)
            }
            guard !rings[r].ring.isFull else { throw .ringFull(size: rings[r].ring.size) }
            let pages = (sectors + 7) / 8
            let indirect = pages > BlkifSegments.capacity
            // Indirect tables hold whole pages, written once.
            guard sectors > 0, pages <= (slots.indirectGrefs.isEmpty ? BlkifSegments.capacity : slotPages),
                  !indirect || sectors % 8 == 0 else {
                throw .transferSize(bytes: sectors * 512, limit: (indirect ? slotPages : BlkifSegments.capacity) * pageSize)
            }
            let request: BlkifRequest
            do throws(BlkifError) {
                if !indirect {
                    let first = slot * slotPages
                    let segments: BlkifSegments
                    if pages == 1 {
                        segments = try BlkifSegments(CollectionOfOne(BlkifSegment(
                            gref: slotGrefs[first], firstSector: 0, lastSector: UInt8(sectors - 1))))
                    } else {
                        segments = try BlkifSegments((0 ..< pages).lazy.map { [slotGrefs] page in
                            BlkifSegment(gref: slotGrefs[first + page], firstSector: 0,
                                         lastSector: UInt8(min(8, sectors - page * 8) - 1))
                        })
                    }
                    request = .direct(try BlkifDirectRequest(operation: operation, handle: 0, id: UInt64(slot),
                                                             sectorNumber: sector, segments: segments))
                } else {
                    request = .indirect(try BlkifIndirectRequest(
                        operation: operation == .write ? .write : .read, segmentCount: pages, handle: 0, id: UInt64(slot),
                        sectorNumber: sector, indirectGrefs: slots.indirectGrefs[slot], maxSegments: slotPages))
                }
            } catch {
                throw .request(error)
            }
            let producer = rings[r].ring.requestProducerPrivate
            request.encode(into: rings[r].ring.requestSlot(producer), at: 0, abi: abi)
            rings[r].ring.requestProducerPrivate = producer &+ 1
            rings[r].unpushed = true
            slotRing[slot] = r
        }

        /// Publishes the requests written to each ring, notifying where
        /// `pushRequestsAndCheckNotify` says so (`io/ring.h: RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`).
        public func pushRequests() throws(XenTestingError) {
            for r in rings.indices where rings[r].unpushed {
                rings[r].unpushed = false
                if rings[r].ring.pushRequestsAndCheckNotify() {
                    do { try channel.notify(rings[r].port) } catch { throw .platform(error) }
                }
            }
        }

        /// Consumes every response published on each ring, handing `body` the slot it
        /// frees and the backend's status, in ring order; returns how many. A response
        /// that answers no request in flight on its ring is an error (`io/blkif.h`: the
        /// id is the request's).
        @discardableResult
        public func consumeResponses(_ body: (_ slot: Int, _ status: BlkifStatus) throws -> Void) throws -> Int {
            var count = 0
            for r in rings.indices {
                let producer: RingIndex
                do { producer = try rings[r].ring.checkedResponseProducer() } catch { throw XenTestingError.ring(error) }
                while rings[r].ring.responseConsumer != producer {
                    let consumer = rings[r].ring.responseConsumer
                    let response: BlkifResponse
                    do { response = try BlkifResponse.decode(from: rings[r].ring.responseSlot(consumer), at: 0, abi: abi) } catch {
                        throw XenTestingError.response(ring: r, reason: "\(error)")
                    }
                    rings[r].ring.responseConsumer = consumer &+ 1
                    guard response.id < UInt64(depth), slotRing[Int(response.id)] == r else {
                        throw XenTestingError.response(ring: r, reason: "id \(response.id) answers no request in flight on it")
                    }
                    slotRing[Int(response.id)] = -1
                    count += 1
                    try body(Int(response.id), response.status)
                }
            }
            return count
        }

        /// Whether any ring has responses; each ring without asks to be notified of the
        /// next (`io/ring.h: RING_FINAL_CHECK_FOR_RESPONSES`, on every ring).
        public func finalCheckForResponses() throws(XenTestingError) -> Bool {
            var any = false
            for r in rings.indices {
                do { if try rings[r].ring.finalCheckForResponses() { any = true } } catch { throw .ring(error) }
            }
            return any
        }

        /// Takes the events pending on the channel (one per port at most) and unmasks them,
        /// after its descriptor polled readable.
        public func takeEvents() throws(XenTestingError) {
            do {
                try channel.takePending(atMost: queues) { [channel] port throws(PlatformError) in try channel.unmask(port) }
            } catch {
                throw .platform(error)
            }
        }

        /// Sleeps until the backend notifies (30 s without an event is an error).
        public func waitForEvent() throws(XenTestingError) {
            var fd = pollfd(fd: eventDescriptor, events: Int16(POLLIN), revents: 0)
            while true {
                let ready = poll(&fd, 1, 30_000)
                if ready > 0 { return try takeEvents() }
                if ready == 0 { throw .noEvent(seconds: 30) }
                if errno != EINTR { throw .wait(errno: errno) }
            }
        }

        /// One request on `slot`, waited for on this thread; its status. Responses to
        /// other slots that arrive meanwhile are consumed and dropped.
        public func transfer(_ operation: BlkifDirectOperation, slot: Int, sector: UInt64, sectors: Int,
                             queue: Int? = nil) throws(XenTestingError) -> BlkifStatus {
            try submit(operation, slot: slot, sector: sector, sectors: sectors, queue: queue)
            try pushRequests()
            var found: BlkifStatus?
            while true {
                do {
                    try consumeResponses { answered, status in if answered == slot { found = status } }
                } catch let error as XenTestingError {
                    throw error
                } catch {
                    preconditionFailure("the body does not throw")
                }
                if let found { return found }
                if try finalCheckForResponses() { continue }
                try waitForEvent()
            }
        }
    }
}
