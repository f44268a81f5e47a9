import Blkif
import CRingReference
import SharedMemory
import XenRing
import XenTesting

/// The Swift side of `xensplit-bench ring`: a blkif frontend and backend doing the same
/// work as the C reference's (`cref_blkif_front_run`, `cref_blkif_back_serve`), through
/// the Blkif wire module as our backend and frontends use it.
///
/// The frontend writes every benchmark request whole (all 11 segments, see
/// `CREF_BENCH_FIRST_GREF`); the backend decodes each request once, every field read once
/// and validated as `BlkifRequest.decode` does for the block backend (the C side copies
/// the slot out with RING_COPY_REQUEST and validates the copy), and writes each response
/// whole; the frontend decodes each response (the C side copies it out with
/// RING_COPY_RESPONSE) and checks id, status and operation. Both backends tally what they
/// read, so a run of each can be checked to have done the same work.
enum RingBenchExchange {
    /// Why a side stopped.
    enum Failure: Error, CustomStringConvertible {
        /// The peer broke the ring's index rules.
        case ring(RingError)
        /// A response slot did not decode.
        case response(BlkifError)
        /// A response carried an id not outstanding, or was not OKAY to a READ.
        case unexpectedResponse(id: UInt64, operation: UInt8, status: BlkifStatus)

        var description: String {
            switch self {
            case let .ring(error): return "ring: \(error)"
            case let .response(error): return "undecodable response: \(error)"
            case let .unexpectedResponse(id, operation, status):
                return "unexpected response id \(id) operation \(operation) status \(status)"
            }
        }
    }

    /// What a backend did: the same three figures as the C reference's `cref_blkif_tally`.
    struct Tally: Equatable {
        var answered: UInt64 = 0
        var refused: UInt64 = 0
        var digest: UInt64 = 0

        init() {}
        init(_ c: cref_blkif_tally) {
            answered = c.answered
            refused = c.refused
            digest = c.digest
        }
    }

    static let abi = BlkifABI.native

    /// The benchmark request with id and sector 0.
    static func benchRequest() -> BlkifDirectRequest {
        let segments = (0..<BlkifSegments.capacity).map {
            BlkifSegment(gref: CREF_BENCH_FIRST_GREF + UInt32($0), firstSector: 0, lastSector: 7)
        }
        // Eleven valid segments for a read: neither initialiser can throw.
        return try! BlkifDirectRequest(operation: .read, handle: 0, id: 0, sectorNumber: 0,
                                       segments: BlkifSegments(segments))
    }

    /// Issues `count` benchmark requests with at most `depth` in flight and checks every
    /// response. Returns the responses seen.
    static func frontend<S: RingSignal>(ring shared: SharedRing, count: UInt64, depth: UInt32,
                                        signal: S) throws(Failure) -> UInt64 {
        var front = FrontRing(attaching: shared, at: 0)
        let outstanding = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: Int(count / 8) + 1)
        outstanding.initialize(repeating: 0)
        defer { outstanding.deallocate() }
        var request = benchRequest()
        var issued: UInt64 = 0
        var completed: UInt64 = 0
        while completed < count {
            var produced = false
            while issued < count, issued &- completed < UInt64(depth), !front.isFull {
                request.id = issued
                request.sectorNumber = issued
                BlkifRequest.direct(request).encode(into: front.requestSlot(front.requestProducerPrivate), at: 0, abi: abi)
                outstanding[Int(issued >> 3)] |= UInt8(1) << UInt8(issued & 7)
                front.requestProducerPrivate &+= 1
                issued &+= 1
                produced = true
            }
            if produced, front.pushRequestsAndCheckNotify() { signal.notify() }
            let producer: RingIndex
            do { producer = try front.checkedResponseProducer() } catch { throw .ring(error) }
            var consumed = false
            while front.responseConsumer != producer {
                let response: BlkifResponse
                do {
                    response = try BlkifResponse.decode(from: front.responseSlot(front.responseConsumer), at: 0, abi: abi)
                } catch {
                    throw .response(error)
                }
                front.responseConsumer &+= 1
                let id = response.id
                let bit = UInt8(1) << UInt8(id & 7)
                guard id < count, outstanding[Int(id >> 3)] & bit != 0, response.status == .okay,
                      response.operation == BlkifOperation.read.rawValue else {
                    throw .unexpectedResponse(id: id, operation: response.operation, status: response.status)
                }
                outstanding[Int(id >> 3)] &= ~bit
                completed &+= 1
                consumed = true
            }
            if !consumed, !produced, S.sleeps {
                let more: Bool
                do { more = try front.finalCheckForResponses() } catch { throw .ring(error) }
                if !more { signal.wait() }
            }
        }
        return completed
    }

    /// Answers `count` requests in arrival order: OKAY to a valid direct request, ERROR
    /// (id and operation echoed) to anything else.
    static func backend<S: RingSignal>(ring shared: SharedRing, count: UInt64, signal: S) throws(Failure) -> Tally {
        var back = BackRing(attaching: shared, at: 0)
        var tally = Tally()
        while tally.answered < count {
            let producer: RingIndex
            do { producer = try back.checkedRequestProducer() } catch { throw .ring(error) }
            var answered = false
            while back.requestConsumer != producer, !back.requestConsumerOverflow(back.requestConsumer) {
                let slot = back.requestSlot(back.requestConsumer)
                back.requestConsumer &+= 1
                let response: BlkifResponse
                do {
                    let request = try BlkifRequest.decode(from: slot, at: 0, abi: abi)
                    if case let .direct(r) = request {
                        var digest = r.sectorNumber
                        for segment in r.segments {
                            digest &+= UInt64(segment.gref) &+ UInt64(segment.firstSector) &+ UInt64(segment.lastSector)
                        }
                        tally.digest &+= digest
                        response = BlkifResponse(id: r.id, operation: r.operation.rawValue, status: .okay)
                    } else {
                        tally.refused &+= 1
                        response = BlkifResponse(id: request.id, operation: request.operation.rawValue, status: .error)
                    }
                } catch let .invalidRequest(id, operation, _) {
                    tally.refused &+= 1
                    response = BlkifResponse(id: id, operation: operation, status: .error)
                } catch {
                    // Only a slot outside the view, which the ring's arithmetic rules out.
                    preconditionFailure("blkif slot outside its ring: \(error)")
                }
                response.encode(into: back.responseSlot(back.responseProducerPrivate), at: 0, abi: abi)
                back.responseProducerPrivate &+= 1
                tally.answered &+= 1
                answered = true
            }
            if answered {
                if back.pushResponsesAndCheckNotify() { signal.notify() }
            } else if S.sleeps {
                let more: Bool
                do { more = try back.finalCheckForRequests() } catch { throw .ring(error) }
                if !more { signal.wait() }
            }
        }
        return tally
    }

    /// FNV-1a over the page's producers and slots, leaving out the two event indices
    /// (which depend on when each side went to sleep): two runs of the same requests
    /// leave the same value.
    static func ringDigest(_ view: SharedView) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for offset in 0..<view.count where !(4..<8).contains(offset) && !(12..<16).contains(offset) {
            hash = (hash ^ UInt64(view.load(UInt8.self, at: offset))) &* 0x100_0000_01b3
        }
        return hash
    }
}
