import CRingReference
import Glibc
import SharedMemory
import Testing
import XenTesting
import XenRing

/// A frontend written with Xen's C macros and our Swift backend, and the reverse, exchange
/// a million requests on two threads; every id must come back exactly once.
@Suite(.serialized) struct CrossThreadExchangeTests {
    static let count: UInt64 = 1_000_000

    enum Mode: String, CaseIterable, Sendable { case poll, eventfd }

    struct Channels: Sendable {
        let toBack: Int32
        let toFront: Int32
        init(_ mode: Mode) throws {
            if mode == .poll {
                toBack = -1
                toFront = -1
            } else {
                toBack = cref_eventfd()
                toFront = cref_eventfd()
                try #require(toBack >= 0 && toFront >= 0)
            }
        }
        func close() {
            if toBack >= 0 { Glibc.close(toBack) }
            if toFront >= 0 { Glibc.close(toFront) }
        }
    }

    @Test(arguments: Mode.allCases, [UInt32(1), 32])
    func cFrontendSwiftBackend(mode: Mode, depth: UInt32) throws {
        let count = depth == 1 ? Self.count / 20 : Self.count
        let region = try MemoryRegion.anonymous(pages: 1)
        let view = region.view
        cref_blkif_init(view.baseAddress, pageSize)
        let shared = try SharedRing(memory: view, entrySize: RingExchange.blkifEntrySize)
        #expect(shared.size == 32)
        let ch = try Channels(mode)
        defer { ch.close() }
        let (front, back) = runConcurrently({
            cref_blkif_front_run(view.baseAddress, pageSize, count, depth, ch.toBack, ch.toFront)
        }, {
            Result { () throws(RingExchange.Failure) -> UInt64 in
                // Out-of-order completion: the C frontend tracks ids, not positions.
                try RingExchange.blkifBackend(ring: shared, count: count, notifyFD: ch.toFront,
                                              waitFD: ch.toBack, reverseBatches: true)
            }
        })
        #expect(front == Int(count))
        #expect(try back.get() == count)
        withExtendedLifetime(region) {}
    }

    @Test(arguments: Mode.allCases, [UInt32(1), 32])
    func swiftFrontendCBackend(mode: Mode, depth: UInt32) throws {
        let count = depth == 1 ? Self.count / 20 : Self.count
        let region = try MemoryRegion.anonymous(pages: 1)
        let view = region.view
        let shared = try SharedRing(memory: view, entrySize: RingExchange.blkifEntrySize)
        _ = FrontRing(initializing: shared)
        let ch = try Channels(mode)
        defer { ch.close() }
        let (front, back) = runConcurrently({
            Result { () throws(RingExchange.Failure) -> UInt64 in
                try RingExchange.blkifFrontend(ring: shared, count: count, depth: depth,
                                               notifyFD: ch.toBack, waitFD: ch.toFront)
            }
        }, {
            cref_blkif_back_run(view.baseAddress, pageSize, count, ch.toFront, ch.toBack)
        })
        #expect(try front.get() == count)
        #expect(back == Int(count))
        withExtendedLifetime(region) {}
    }

    @Test func duplicateResponseIsCaught() throws {
        let region = try MemoryRegion.anonymous(pages: 1)
        let shared = try SharedRing(memory: region.view, entrySize: RingExchange.blkifEntrySize)
        _ = FrontRing(initializing: shared)
        // A backend that published two responses both carrying id 0 (a replayed response).
        // The slots are zero, and the frontend's two requests leave bytes 0..7 zero too.
        region.view.store(UInt32(2), at: SharedRing.Header.responseProducer)
        #expect(throws: RingExchange.Failure.unexpectedResponseID(0)) {
            _ = try RingExchange.blkifFrontend(ring: shared, count: 2, depth: 2)
        }
        // A backend that answers more than was asked is refused before any slot is read.
        var front = FrontRing(attaching: shared, at: 0)
        front.requestProducerPrivate = 1
        #expect(throws: RingError.responseProducerOverrun(producer: 2, consumer: 0, outstanding: 1)) {
            _ = try front.unconsumedResponses()
        }
    }
}
