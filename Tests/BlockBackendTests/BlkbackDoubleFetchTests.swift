import Blkif
import Glibc
import Synchronization
import Testing
import URing
import XenPlatform
import XenTesting
@testable import BlockBackend

/// A frontend rewriting a request while the backend reads it (the XSA-155 class): every
/// field is read once into a value, so the backend acts on one consistent request or
/// refuses it, whatever the timing.
@Suite("BlkbackQueue against requests rewritten under it")
struct BlkbackDoubleFetchTests {
    @Test("sector, gref and last_sect flipping between valid and invalid values while the queue reads the slot")
    func flippingRequest() throws {
        let rig = try DirectQueue(abi: .native, slots: 4)
        let (f, queue, engine, image) = (rig.frontend, rig.queue, rig.engine, rig.image)
        let page = [PlannedSegment(page: 0, first: 0, last: 7)]
        let bytes = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        f.fill(page, with: bytes[...])

        let shared = f.front.shared
        let layout = BlkifABI.native.layout
        let stop = Atomic<Bool>(false)
        let flips = Atomic<Int>(0)
        // Flips sector_number (0 <-> past the end), the first segment's gref (granted <->
        // not) and last_sect (7 <-> 8) in every slot, as fast as it can. Only bytes past a
        // response's 16: the backend writes responses into the same slots.
        let gref = f.data.refs[0]
        let flipper = Thread {
            var toggle: UInt8 = 0
            while !stop.load(ordering: .relaxed) {
                toggle ^= 1
                for index in 0..<shared.size {
                    let slot = shared.slot(index)
                    slot.store(toggle == 0 ? UInt64(0) : 100_000, at: layout.sectorNumberOffset)
                    slot.store(toggle == 0 ? gref : 4000, at: layout.segmentsOffset + BlkifSegment.grefOffset)
                    slot.store(toggle == 0 ? UInt8(7) : 8, at: layout.segmentsOffset + BlkifSegment.lastSectorOffset)
                }
                flips.add(1, ordering: .relaxed)
            }
        }
        var statuses: [BlkifStatus: Int] = [:]
        for round in 0..<1000 {
            let id = try f.produce(f.request(.write, sector: 0, page))
            try f.push()
            // Let the flipper at the slot before the backend reads it (any state it left).
            let seen = flips.load(ordering: .relaxed)
            while flips.load(ordering: .relaxed) < seen + 1 + round % 2 { sched_yield() }
            queue.service(engine: engine)
            rig.drain()
            let response = try f.await([id])[id]
            statuses[response?.status ?? .error, default: 0] += 1
        }
        stop.store(true, ordering: .relaxed)
        flipper.join()

        #expect(queue.disconnectReason == nil, "a rewritten request is refused, not a ring violation")
        #expect(Set(statuses.keys).isSubset(of: [.okay, .error]), "\(statuses)")
        #expect((statuses[.okay] ?? 0) > 0 && (statuses[.error] ?? 0) > 0, "both states were met: \(statuses)")
        #expect((statuses[.okay] ?? 0) + (statuses[.error] ?? 0) == 1000)
        // Whatever was accepted was one consistent valid request: the page at sector 0,
        // nothing anywhere else, and the file never grew.
        let disk = try image.contents()
        #expect(disk.count == 2048 * 512, "the image grew: a write past the end got through")
        #expect(Array(disk[0..<4096]) == bytes)
        #expect(disk[4096...].allSatisfy { $0 == 0 }, "bytes written outside the one valid request")
        try rig.close()
    }
}
