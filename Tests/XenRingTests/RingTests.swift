import Testing
import SharedMemory
@testable import XenRing

@Suite struct RingTests {
    @Test(arguments: [1, 2, 4, 8, 16])
    func geometryMatchesRingSizeRule(pages: Int) throws {
        let region = try MemoryRegion.anonymous(pages: pages)
        for entry in [8, 12, 16, 64, 108, 112, 200, 4032] {
            let ring = try SharedRing(memory: region.view, pages: pages, entrySize: entry)
            let fit = (pages * 4096 - 64) / entry
            #expect(ring.size.nonzeroBitCount == 1)
            #expect(Int(ring.size) <= fit && Int(ring.size) * 2 > fit)
        }
        // blkif: 32 entries in one page, 512 in 16 (io/blkif.h sizing)
        #expect(SharedRing.entryCount(bytes: pages * 4096, entrySize: 112) == UInt32(32 * pages))
    }

    @Test func badGeometryIsTyped() throws {
        let region = try MemoryRegion.anonymous(pages: 1)
        #expect(throws: RingError.badPageCount(17)) { _ = try SharedRing(memory: region.view, pages: 17, entrySize: 64) }
        #expect(throws: RingError.badPageCount(0)) { _ = try SharedRing(memory: region.view, pages: 0, entrySize: 64) }
        #expect(throws: RingError.memoryTooSmall(bytes: 4096, needed: 8192)) { _ = try SharedRing(memory: region.view, pages: 2, entrySize: 64) }
        #expect(throws: RingError.badEntrySize(0)) { _ = try SharedRing(memory: region.view, entrySize: 0) }
        #expect(throws: RingError.memoryTooSmall(bytes: 4096, needed: 64 + 5000)) { _ = try SharedRing(memory: region.view, entrySize: 5000) }
    }

    @Test func requestResponseRoundTripWithEventSuppression() throws {
        let region = try MemoryRegion.anonymous(pages: 1)
        let shared = try SharedRing(memory: region.view, entrySize: 112)
        var front = FrontRing(initializing: shared)
        var back = BackRing(shared)
        #expect(front.freeRequests == 32)

        // First request: the backend's req_event is 1, so it wants a notification.
        front.requestSlot(front.requestProducerPrivate).store(UInt64(42), at: 8)
        front.requestProducerPrivate &+= 1
        #expect(front.pushRequestsAndCheckNotify())
        // A second push before the backend re-arms needs no notification.
        front.requestSlot(front.requestProducerPrivate).store(UInt64(43), at: 8)
        front.requestProducerPrivate &+= 1
        #expect(!front.pushRequestsAndCheckNotify())

        #expect(try back.unconsumedRequests() == 2)
        var ids: [UInt64] = []
        let end = try back.checkedRequestProducer()
        while back.requestConsumer != end, !back.requestConsumerOverflow(back.requestConsumer) {
            ids.append(back.requestSlot(back.requestConsumer).load(UInt64.self, at: 8))
            back.requestConsumer &+= 1
        }
        #expect(ids == [42, 43])
        #expect(try !back.finalCheckForRequests())
        #expect(region.view.load(UInt32.self, at: SharedRing.Header.requestEvent) == 3)

        for id in ids {
            back.responseSlot(back.responseProducerPrivate).store(id, at: 0)
            back.responseProducerPrivate &+= 1
        }
        // The frontend never armed rsp_event past 1, so this push crosses it: notify.
        #expect(back.pushResponsesAndCheckNotify())
        #expect(try front.unconsumedResponses() == 2)
        front.responseConsumer &+= 2
        #expect(try !front.finalCheckForResponses())
        #expect(front.freeRequests == 32)
    }

    @Test func lyingFrontendOverrunsAreTyped() throws {
        let region = try MemoryRegion.anonymous(pages: 1)
        let shared = try SharedRing(memory: region.view, entrySize: 112)
        _ = FrontRing(initializing: shared)
        let back = BackRing(shared)
        region.view.store(UInt32(33), at: SharedRing.Header.requestProducer)
        #expect(throws: RingError.requestProducerOverrun(producer: 33, responsePrivate: 0, size: 32)) {
            _ = try back.unconsumedRequests()
        }
        // Exactly a ring's worth is legal.
        region.view.store(UInt32(32), at: SharedRing.Header.requestProducer)
        #expect(try back.unconsumedRequests() == 32)
        // Behind us is a huge claim through wrapping arithmetic.
        region.view.store(UInt32.max, at: SharedRing.Header.requestProducer)
        #expect(throws: RingError.self) { _ = try back.finalCheckForRequests() }
    }

    @Test func lyingBackendOverrunsAreTyped() throws {
        let region = try MemoryRegion.anonymous(pages: 1)
        let shared = try SharedRing(memory: region.view, entrySize: 112)
        var front = FrontRing(initializing: shared)
        front.requestProducerPrivate = 3
        front.pushRequests()
        region.view.store(UInt32(4), at: SharedRing.Header.responseProducer)
        #expect(throws: RingError.responseProducerOverrun(producer: 4, consumer: 0, outstanding: 3)) {
            _ = try front.unconsumedResponses()
        }
        region.view.store(UInt32(3), at: SharedRing.Header.responseProducer)
        #expect(try front.unconsumedResponses() == 3)
    }

    @Test func backendStopsAtResponseRoomNotAtProducer() throws {
        let region = try MemoryRegion.anonymous(pages: 1)
        let shared = try SharedRing(memory: region.view, entrySize: 1000)
        var front = FrontRing(initializing: shared)
        var back = BackRing(shared)
        #expect(shared.size == 4)
        front.requestProducerPrivate = 4
        front.pushRequests()
        back.requestConsumer = 4
        // All four consumed, none answered: nothing more may be consumed.
        #expect(try back.unconsumedRequests() == 0)
        #expect(back.requestConsumerOverflow(4))
        back.responseProducerPrivate = 1
        #expect(!back.requestConsumerOverflow(4))
    }
}
