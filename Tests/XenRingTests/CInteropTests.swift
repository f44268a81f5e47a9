import CRingReference
import Glibc
import SharedMemory
import Testing
import XenTesting
@testable import XenRing

/// The same operations on a ring driven by Xen's io/ring.h macros (CRingReference) and on
/// our Swift ring, over separate memory, must leave byte-identical pages after every step.
@Suite struct CInteropTests {
    struct Pair {
        let kind: Int32
        let c: OpaquePointer
        let cMemory: MemoryRegion
        let swiftMemory: MemoryRegion
        var front: FrontRing
        var back: BackRing
        let requestSize: Int
        let responseSize: Int
    }

    static func makePair(kind: Int32, pages: Int, start: RingIndex?, rng: inout SeededGenerator) throws -> Pair {
        let cMemory = try MemoryRegion.anonymous(pages: pages)
        let swiftMemory = try MemoryRegion.anonymous(pages: pages)
        // Identical garbage on both: neither side may write a byte the other does not.
        var garbage = [UInt8](repeating: 0, count: pages * pageSize)
        for i in garbage.indices { garbage[i] = UInt8(truncatingIfNeeded: rng.next()) }
        garbage.withUnsafeBytes {
            cMemory.view.copyBytes(from: $0, to: 0)
            swiftMemory.view.copyBytes(from: $0, to: 0)
        }
        let bytes = pages * pageSize
        let c = try #require(cref_ring_new(kind, cMemory.view.baseAddress, bytes))
        let shared = try SharedRing(memory: swiftMemory.view, pages: pages, entrySize: cref_entry_size(kind))
        #expect(shared.size == cref_size_after_init(c))
        var front = FrontRing(initializing: shared)
        var back = BackRing(shared)
        cref_front_init(c)
        cref_back_init(c)
        if let start {
            cref_attach_at(c, start)
            let m = swiftMemory.view
            m.store(start, at: SharedRing.Header.requestProducer)
            m.store(start, at: SharedRing.Header.responseProducer)
            m.store(start &+ 1, at: SharedRing.Header.requestEvent)
            m.store(start &+ 1, at: SharedRing.Header.responseEvent)
            front = FrontRing(attaching: shared, at: start)
            back = BackRing(attaching: shared, at: start)
        }
        return Pair(kind: kind, c: c, cMemory: cMemory, swiftMemory: swiftMemory, front: front, back: back,
                    requestSize: cref_request_size(kind), responseSize: cref_response_size(kind))
    }

    static func cref_size_after_init(_ c: OpaquePointer) -> UInt32 {
        cref_front_init(c)
        return UInt32(cref_size(c))
    }

    @Test(arguments: Array(0..<40))
    func randomSequencesMatchTheMacrosByteForByte(seed: Int) throws {
        var rng = SeededGenerator(seed: UInt64(seed) &* 0x1234_5678 &+ 99)
        let kind = Int32(seed % Int(CREF_KIND_COUNT.rawValue))
        let pages = [1, 2, 4, 8, 16][(seed / 5) % 5]
        let start: RingIndex? = seed % 3 == 0 ? nil : UInt32.max &- UInt32(rng.next() % 40)
        var p = try Self.makePair(kind: kind, pages: pages, start: start, rng: &rng)
        defer { cref_ring_free(p.c) }
        var awaitingResponse = 0   // consumed by the backend, not yet answered
        var scratch = [UInt8](repeating: 0, count: max(p.requestSize, p.responseSize))
        var cOut = [UInt8](repeating: 0, count: max(p.requestSize, p.responseSize))
        let steps = 1500
        for step in 0..<steps {
            let op = rng.next() % 9
            switch op {
            case 0: // produce requests
                #expect(UInt32(cref_free_requests(p.c)) == p.front.freeRequests)
                #expect((cref_full(p.c) != 0) == p.front.isFull)
                let k = Int(rng.next() % UInt64(p.front.freeRequests + 1))
                for _ in 0..<k {
                    for i in 0..<p.requestSize { scratch[i] = UInt8(truncatingIfNeeded: rng.next()) }
                    scratch.withUnsafeBytes { cref_produce_request(p.c, $0.baseAddress) }
                    scratch.withUnsafeBytes {
                        p.front.requestSlot(p.front.requestProducerPrivate).copyBytes(from: UnsafeRawBufferPointer(rebasing: $0[0..<p.requestSize]), to: 0)
                    }
                    p.front.requestProducerPrivate &+= 1
                }
            case 1:
                if rng.next() % 2 == 0 {
                    cref_push_requests(p.c)
                    p.front.pushRequests()
                } else {
                    #expect((cref_push_requests_and_check_notify(p.c) != 0) == p.front.pushRequestsAndCheckNotify(), "step \(step)")
                }
            case 2: // backend consumes
                let waiting = try p.back.unconsumedRequests()
                #expect(UInt32(cref_unconsumed_requests(p.c)) == waiting, "step \(step)")
                let j = Int(rng.next() % UInt64(waiting + 1))
                for _ in 0..<j {
                    #expect((cref_request_cons_overflow(p.c, p.back.requestConsumer) != 0) == p.back.requestConsumerOverflow(p.back.requestConsumer))
                    cOut.withUnsafeMutableBytes { cref_consume_request(p.c, $0.baseAddress) }
                    let ours = p.back.requestSlot(p.back.requestConsumer).bytes(at: 0, length: p.requestSize)
                    p.back.requestConsumer &+= 1
                    #expect(Array(cOut[0..<p.requestSize]) == ours)
                }
                awaitingResponse += j
            case 3: // backend answers
                let m = Int(rng.next() % UInt64(awaitingResponse + 1))
                for _ in 0..<m {
                    for i in 0..<p.responseSize { scratch[i] = UInt8(truncatingIfNeeded: rng.next()) }
                    scratch.withUnsafeBytes { cref_produce_response(p.c, $0.baseAddress) }
                    scratch.withUnsafeBytes {
                        p.back.responseSlot(p.back.responseProducerPrivate).copyBytes(from: UnsafeRawBufferPointer(rebasing: $0[0..<p.responseSize]), to: 0)
                    }
                    p.back.responseProducerPrivate &+= 1
                }
                awaitingResponse -= m
            case 4:
                if rng.next() % 2 == 0 {
                    cref_push_responses(p.c)
                    p.back.pushResponses()
                } else {
                    #expect((cref_push_responses_and_check_notify(p.c) != 0) == p.back.pushResponsesAndCheckNotify(), "step \(step)")
                }
            case 5: // frontend consumes responses
                let waiting = try p.front.unconsumedResponses()
                #expect(UInt32(cref_unconsumed_responses(p.c)) == waiting, "step \(step)")
                let j = Int(rng.next() % UInt64(waiting + 1))
                for _ in 0..<j {
                    cOut.withUnsafeMutableBytes { cref_consume_response(p.c, $0.baseAddress) }
                    let ours = p.front.responseSlot(p.front.responseConsumer).bytes(at: 0, length: p.responseSize)
                    p.front.responseConsumer &+= 1
                    #expect(Array(cOut[0..<p.responseSize]) == ours)
                }
            case 6:
                #expect((cref_final_check_for_requests(p.c) != 0) == (try p.back.finalCheckForRequests()), "step \(step)")
            case 7:
                #expect((cref_final_check_for_responses(p.c) != 0) == (try p.front.finalCheckForResponses()), "step \(step)")
            default:
                let probe = p.back.responseProducerPrivate &+ UInt32(rng.next() % UInt64(2 * p.front.size))
                #expect((cref_request_prod_overflow(p.c, probe) != 0) == ((probe &- p.back.responseProducerPrivate) > p.back.size))
            }
            #expect(cref_req_prod_pvt(p.c) == p.front.requestProducerPrivate)
            #expect(cref_rsp_cons(p.c) == p.front.responseConsumer)
            #expect(cref_rsp_prod_pvt(p.c) == p.back.responseProducerPrivate)
            #expect(cref_req_cons(p.c) == p.back.requestConsumer)
            let same = memcmp(p.cMemory.view.baseAddress, p.swiftMemory.view.baseAddress, pages * pageSize) == 0
            #expect(same, "pages differ after step \(step) (op \(op))")
            if !same { return }
        }
        if let start {
            // Started just below 2^32, the sequence must have carried every index across it.
            #expect(p.front.responseConsumer < start, "responses never crossed the index wrap")
        }
    }
}
