import Blkif
import SharedMemory
import Testing
import XenPlatform
import XenRing
import XenTesting
@testable import BlockBackend

/// The persistent state's protocol (Protocols/blkback-restart.md) against a crash at every
/// store: a model backend drives the state exactly as BlkbackQueue does (take, answer,
/// write the response, publish, push, free) while a frontend produces and collects; the
/// run is cut at one store, a new state object recovers from what is in memory, a fresh
/// backend answers the rest, and the frontend must have received every request's
/// response exactly once.
@Suite("BlkbackRestartState: recovery at every crash point")
struct BlkbackRestartStateTests {
    static let abi = BlkifABI.native
    static let identity = BlkbackRestartState.Identity(frontendDomain: 7, abi: abi, ringPageOrder: 0,
                                                       eventChannel: 12, ringRefs: [42])

    /// The ring page, the state, the frontend and the backend's private view.
    final class World {
        let ringMemory: MemoryRegion
        let stateMemory: MemoryRegion
        let shared: SharedRing
        var front: FrontRing
        var back: BackRing
        var state: BlkbackRestartState
        /// Backend (dies with the process): records in flight and answered, unpublished.
        var inFlight: [Int32] = []
        var unpublished: [Int32] = []
        /// Frontend (survives): ids produced, and how often each was answered.
        var produced: UInt64 = 0
        var answers: [UInt64: Int] = [:]

        init() throws {
            ringMemory = try MemoryRegion.anonymous(pages: 1)
            shared = try SharedRing(memory: ringMemory.view, pages: 1, entrySize: abi.slotSize)
            front = FrontRing(initializing: shared)
            back = BackRing(shared)
            let size = BlkbackRestartState.fileSize(ringSize: shared.size, slotSize: abi.slotSize)
            stateMemory = try MemoryRegion.anonymous(pages: size / pageSize)
            state = try BlkbackRestartState.create(in: stateMemory, identity: identity, ringSize: shared.size, at: 0)
        }

        func produce() throws {
            produced += 1
            let request = BlkifRequest.direct(try BlkifDirectRequest(
                operation: .flushDiskCache, handle: 0, id: produced, sectorNumber: 0, segments: BlkifSegments()))
            request.encode(into: front.requestSlot(front.requestProducerPrivate), at: 0, abi: abi)
            front.requestProducerPrivate &+= 1
            front.pushRequests()
        }

        func collect() throws {
            while try front.unconsumedResponses() > 0 {
                let response = try BlkifResponse.decode(from: front.responseSlot(front.responseConsumer), at: 0, abi: abi)
                front.responseConsumer &+= 1
                answers[response.id, default: 0] += 1
            }
        }

        /// The backend operations, with the byte ranges each writes, in the order it
        /// writes them (the protocol's steps).
        func take() throws -> [Range<Int>] {
            let index = back.requestConsumer
            let record = state.take(back.requestSlot(index), at: index)
            back.requestConsumer &+= 1
            inFlight.append(record)
            let r = state.offset(record)
            typealias R = BlkbackRestartState.Record
            return [r + R.requestIndex..<r + R.requestIndex + 4, r + R.request..<r + R.request + abi.slotSize,
                    r + R.state..<r + R.state + 4, stateRange(BlkbackRestartState.Header.consumed)]
        }

        func answer(_ pick: Int) throws -> [Range<Int>] {
            let record = inFlight.remove(at: pick % inFlight.count)
            let request = try BlkifRequest.decode(from: state.request(record), at: 0, abi: abi, maxIndirectSegments: 0)
            let index = back.responseProducerPrivate
            state.answer(record, id: request.id, operation: BlkifOperation.flushDiskCache.rawValue, status: .okay, at: index)
            BlkifResponse(id: request.id, operation: BlkifOperation.flushDiskCache.rawValue, status: .okay)
                .encode(into: back.responseSlot(index), at: 0, abi: abi)
            back.responseProducerPrivate &+= 1
            unpublished.append(record)
            let r = state.offset(record)
            typealias R = BlkbackRestartState.Record
            return [r + R.responseIndex..<r + R.responseIndex + 4, r + R.status..<r + R.id + 8,
                    r + R.state..<r + R.state + 4, stateRange(BlkbackRestartState.Header.answered),
                    ringRange(shared.slotOffset(index)..<shared.slotOffset(index) + abi.layout.responseSize)]
        }

        func push() -> [Range<Int>] {
            state.publish(upTo: back.responseProducerPrivate)
            _ = back.pushResponsesAndCheckNotify()
            state.freePublished()
            let freed = unpublished.map { state.offset($0) + BlkbackRestartState.Record.state }
            unpublished = []
            return [stateRange(BlkbackRestartState.Header.published),
                    ringRange(SharedRing.Header.responseProducer..<SharedRing.Header.responseProducer + 4)]
                + freed.map { $0..<$0 + 4 }
        }

        /// Ranges in one address space: the state's bytes first, then the ring's.
        func stateRange(_ offset: Int) -> Range<Int> { offset..<offset + 4 }
        func ringRange(_ r: Range<Int>) -> Range<Int> { stateMemory.length + r.lowerBound..<stateMemory.length + r.upperBound }

        var bytes: [UInt8] { stateMemory.view.bytes() + ringMemory.view.bytes() }

        /// Puts `image` back into the state and the ring, as a crash left them.
        func restore(_ image: [UInt8]) {
            image[0..<stateMemory.length].withUnsafeBytes { stateMemory.view.copyBytes(from: $0, to: 0) }
            image[stateMemory.length...].withUnsafeBytes { ringMemory.view.copyBytes(from: $0, to: 0) }
        }

        /// A new process: the state read afresh from memory and recovered.
        func restart() throws -> BlkbackRecovery {
            state = try BlkbackRestartState.open(stateMemory, identity: identity, ringSize: shared.size)
            let recovery = try state.recover(ring: shared)
            back = BackRing(attaching: shared, at: recovery.answered)
            back.requestConsumer = recovery.consumed
            inFlight = recovery.replay
            unpublished = []
            return recovery
        }
    }

    enum Step { case produce, take, answer(Int), push, collect }

    /// A seeded mix of frontend and backend steps (each skipped when it cannot happen: a
    /// full ring, nothing to take, 24 requests in flight as a queue with 24 slots).
    static func script(seed: UInt64, requests: Int) -> [Step] {
        var rng = SeededGenerator(seed: seed)
        return (0..<requests * 6).map { _ in
            switch Int.random(in: 0..<5, using: &rng) {
            case 0: return .produce
            case 1: return .take
            case 2: return .answer(Int.random(in: 0..<1000, using: &rng))
            case 3: return .push
            default: return .collect
            }
        }
    }

    /// Runs `steps`, cutting the run after `cut` stores (nil: never), then recovers and
    /// finishes; returns the world and what recovery did.
    static func run(_ steps: [Step], cut: Int?) throws -> (World, BlkbackRecovery?, stores: Int) {
        let w = try World()
        var stores = 0
        var recovery: BlkbackRecovery?
        stepping: for step in steps {
            // Stores the operation makes: known before it runs, so only the run that is
            // cut, and the uncut run (which checks every operation), copy memory.
            let count: Int
            switch step {
            case .produce:
                if w.front.freeRequests > 0, w.produced < 80 { try w.produce() }
                continue
            case .collect:
                try w.collect()
                continue
            case .take:
                guard try w.back.unconsumedRequests() > 0, w.inFlight.count < 24 else { continue }
                count = 4
            case .answer:
                guard !w.inFlight.isEmpty else { continue }
                count = 5
            case .push:
                guard w.back.responseProducerPrivate != w.shared.loadResponseProducer() else { continue }
                count = 2 + w.unpublished.count
            }
            let cutHere = cut.map { $0 < stores + count } ?? false
            let before = cut == nil || cutHere ? w.bytes : []
            let written: [Range<Int>]
            switch step {
            case .take: written = try w.take()
            case let .answer(pick): written = try w.answer(pick)
            default: written = w.push()
            }
            #expect(written.count == count)
            if cut == nil {
                // The operation wrote nothing but its ranges.
                let after = w.bytes
                var covered = [Bool](repeating: false, count: after.count)
                for r in written { for i in r { covered[i] = true } }
                let stray = (0..<after.count).first { before[$0] != after[$0] && !covered[$0] }
                #expect(stray == nil, "\(step) wrote byte \(stray ?? -1) outside its steps")
            }
            if let cut, cutHere {
                // Killed after `cut - stores` of this operation's stores, in order.
                let after = w.bytes
                var image = before
                for r in written.prefix(cut - stores) { for i in r { image[i] = after[i] } }
                w.restore(image)
                recovery = try w.restart()
                stores = cut
                break stepping
            }
            stores += count
        }
        // The (new) backend answers everything still owed, the frontend collects it all.
        while true {
            if try w.back.unconsumedRequests() > 0 { _ = try w.take(); continue }
            if !w.inFlight.isEmpty { _ = try w.answer(0); continue }
            if w.back.responseProducerPrivate != w.shared.loadResponseProducer() { _ = w.push(); continue }
            break
        }
        try w.collect()
        return (w, recovery, stores)
    }

    @Test("every request is answered exactly once, whatever store the backend was killed after",
          arguments: [UInt64(1), 2, 3])
    func everyCrashPoint(seed: UInt64) throws {
        let steps = Self.script(seed: seed, requests: 80)
        let (clean, _, total) = try Self.run(steps, cut: nil)
        try #require(clean.produced > 40)
        #expect(clean.answers.count == Int(clean.produced) && clean.answers.values.allSatisfy { $0 == 1 })
        var tookOver = 0
        var reexecuted = 0
        for cut in 0..<total {
            let (w, recovery, _) = try Self.run(steps, cut: cut)
            let recovered = try #require(recovery, "seed \(seed) cut \(cut): no crash happened")
            tookOver += recovered.tookOver
            reexecuted += recovered.replay.count
            let missing = (1...w.produced).filter { w.answers[$0] == nil }
            let twice = w.answers.filter { $0.value > 1 }.map(\.key)
            #expect(missing.isEmpty && twice.isEmpty,
                    "seed \(seed) cut \(cut) of \(total): missing \(missing), answered twice \(twice)")
            #expect(w.state.consumed == w.state.published && w.state.freeCount == w.state.recordCount)
        }
        // The cuts landed with work owed, many times.
        #expect(tookOver > total / 4 && reexecuted > 0, "took over \(tookOver), re-executed \(reexecuted)")
    }

    @Test("a state for another ring, a torn header or contradicting indices is refused")
    func refusals() throws {
        let w = try World()
        let size = w.shared.size
        var other = Self.identity
        other.ringRefs = [43]
        #expect(throws: BlkbackRestartError.otherRing(field: "ring ref 0", found: "42", expected: "43")) {
            _ = try BlkbackRestartState.open(w.stateMemory, identity: other, ringSize: size)
        }
        other = Self.identity
        other.eventChannel = 13
        #expect(throws: BlkbackRestartError.otherRing(field: "event channel", found: "12", expected: "13")) {
            _ = try BlkbackRestartState.open(w.stateMemory, identity: other, ringSize: size)
        }
        // The guest claims responses this backend never published.
        w.shared.storeResponseProducer(5)
        #expect(throws: BlkbackRestartError.self) { _ = try w.restart() }
        w.shared.storeResponseProducer(0)
        #expect(try w.restart().tookOver == 0)
        // A file whose creation was cut short (no magic) is no state at all.
        w.stateMemory.view.store(UInt64(0), at: BlkbackRestartState.Header.magic)
        #expect(throws: BlkbackRestartError.badMagic) {
            _ = try BlkbackRestartState.open(w.stateMemory, identity: Self.identity, ringSize: size)
        }
    }
}
