import Testing
import XenTesting
import SharedMemory
@testable import Blkif

/// Decoding hostile slots: every rule of io/blkif.h has a failing case.
@Suite struct BlkifRequestTests {
    let region: MemoryRegion
    var view: SharedView { region.view }

    init() throws { region = try MemoryRegion.anonymous(pages: 1) }

    /// Writes a raw blkif_request header (x86_64 layout) with `count` segments.
    func writeDirect(op: UInt8, count: UInt8, id: UInt64 = 99, sector: UInt64 = 0,
                     segment: (first: UInt8, last: UInt8) = (0, 7), abi: BlkifABI = .x86_64) {
        let layout = abi.layout
        view.fill(0, at: 0, length: 256)
        view.store(op, at: 0)
        view.store(count, at: 1)
        view.store(id, at: layout.idOffset)
        view.store(sector, at: layout.sectorNumberOffset)
        for i in 0..<min(Int(count), 11) {
            view.store(UInt32(i + 1), at: layout.segmentsOffset + i * 8)
            view.store(segment.first, at: layout.segmentsOffset + i * 8 + 4)
            view.store(segment.last, at: layout.segmentsOffset + i * 8 + 5)
        }
    }

    func decode(_ abi: BlkifABI = .x86_64, max: Int = 0, at offset: Int = 0) throws(BlkifError) -> BlkifRequest {
        try BlkifRequest.decode(from: view, at: offset, abi: abi, maxIndirectSegments: max)
    }

    @Test func unknownOperationsCarryIDAndCode() {
        for op: UInt8 in [4, 7, 0x80, 0xff] {
            writeDirect(op: op, count: 1, id: 0x55)
            #expect(throws: BlkifError.invalidRequest(id: 0x55, operation: op, reason: .unknownOperation(op))) {
                try decode()
            }
        }
    }

    @Test func directSegmentCounts() throws {
        writeDirect(op: 0, count: 0)
        #expect(throws: BlkifError.invalidRequest(id: 99, operation: 0, reason: .segmentCount(value: 0, limit: 1...11))) {
            try decode()
        }
        writeDirect(op: 1, count: 12)
        #expect(throws: BlkifError.invalidRequest(id: 99, operation: 1, reason: .segmentCount(value: 12, limit: 1...11))) {
            try decode()
        }
        writeDirect(op: 3, count: 12)
        #expect(throws: BlkifError.invalidRequest(id: 99, operation: 3, reason: .segmentCount(value: 12, limit: 0...11))) {
            try decode()
        }
        writeDirect(op: 2, count: 255)
        #expect(throws: BlkifError.invalidRequest(id: 99, operation: 2, reason: .segmentCount(value: 255, limit: 0...11))) {
            try decode()
        }
        // A flush or barrier may carry no segments, or up to 11.
        for op: UInt8 in [2, 3] {
            for count: UInt8 in [0, 11] {
                writeDirect(op: op, count: count)
                guard case let .direct(r) = try decode() else { Issue.record("not direct"); return }
                #expect(r.segments.count == Int(count))
            }
        }
    }

    @Test func segmentSectorRules() {
        writeDirect(op: 0, count: 2, segment: (5, 4))
        #expect(throws: BlkifError.invalidRequest(id: 99, operation: 0,
                                                  reason: .segmentSectors(index: 0, first: 5, last: 4, limit: 7))) {
            try decode()
        }
        writeDirect(op: 1, count: 1, segment: (0, 8))
        #expect(throws: BlkifError.invalidRequest(id: 99, operation: 1,
                                                  reason: .segmentSectors(index: 0, first: 0, last: 8, limit: 7))) {
            try decode()
        }
        // A bad second segment is named by its index.
        writeDirect(op: 1, count: 2)
        view.store(UInt8(200), at: BlkifLayout.x86_64.segmentsOffset + 8 + 5)
        #expect(throws: BlkifError.invalidRequest(id: 99, operation: 1,
                                                  reason: .segmentSectors(index: 1, first: 0, last: 200, limit: 7))) {
            try decode()
        }
        #expect(throws: Never.self) { try BlkifSegment.validateSectors(first: 7, last: 7, index: 0) }
    }

    @Test func onlyAnnouncedSegmentsAreRead() throws {
        writeDirect(op: 0, count: 2)
        // Garbage in the unused entries must not matter.
        for i in 2..<11 { view.store(UInt8(0xff), at: BlkifLayout.x86_64.segmentsOffset + i * 8 + 4) }
        guard case let .direct(r) = try decode() else { Issue.record("not direct"); return }
        #expect(r.segments.count == 2)
        #expect(r.segments.map(\.gref) == [1, 2])
        #expect(r.segments.sectorCount == 16)
    }

    @Test func discardFlag() throws {
        let layout = BlkifLayout.x86_32
        view.fill(0, at: 0, length: 256)
        view.store(UInt8(5), at: 0)
        view.store(UInt8(2), at: 1)
        view.store(UInt64(8), at: layout.idOffset)
        #expect(throws: BlkifError.invalidRequest(id: 8, operation: 5, reason: .discardFlag(2))) {
            try decode(.x86_32)
        }
        view.store(UInt8(1), at: 1)
        view.store(UInt64(10), at: layout.discardSectorCountOffset)
        guard case let .discard(d) = try decode(.x86_32) else { Issue.record("not discard"); return }
        #expect(d.secure && d.sectorCount == 10 && d.id == 8)
    }

    func writeIndirect(indirectOp: UInt8 = 0, count: UInt16, abi: BlkifABI = .x86_64) {
        let layout = abi.layout
        view.fill(0, at: 0, length: 256)
        view.store(UInt8(6), at: 0)
        view.store(indirectOp, at: 1)
        view.store(count, at: 2)
        view.store(UInt64(7), at: layout.idOffset)
        for page in 0..<8 { view.store(UInt32(0x900 + page), at: layout.indirectGrefsOffset + page * 4) }
    }

    @Test func indirectRules() throws {
        writeIndirect(count: 10)
        #expect(throws: BlkifError.invalidRequest(id: 7, operation: 6, reason: .indirectNotAdvertised)) {
            try decode(max: 0)
        }
        writeIndirect(count: 0)
        #expect(throws: BlkifError.invalidRequest(id: 7, operation: 6, reason: .segmentCount(value: 0, limit: 1...32))) {
            try decode(max: 32)
        }
        writeIndirect(count: 33)
        #expect(throws: BlkifError.invalidRequest(id: 7, operation: 6, reason: .segmentCount(value: 33, limit: 1...32))) {
            try decode(max: 32)
        }
        // An advertised maximum above 8 pages of 512 is capped.
        writeIndirect(count: 4097)
        #expect(throws: BlkifError.invalidRequest(id: 7, operation: 6, reason: .segmentCount(value: 4097, limit: 1...4096))) {
            try decode(max: 65535)
        }
        writeIndirect(indirectOp: 3, count: 10)
        #expect(throws: BlkifError.invalidRequest(id: 7, operation: 6, reason: .unknownIndirectOperation(3))) {
            try decode(max: 32)
        }
        // Only the pages nr_segments needs are read.
        for (count, pages) in [(1, 1), (512, 1), (513, 2), (4096, 8)] {
            writeIndirect(indirectOp: 1, count: UInt16(count), abi: .x86_32)
            guard case let .indirect(r) = try decode(.x86_32, max: 4096) else { Issue.record("not indirect"); return }
            #expect(r.indirectGrefs.count == pages)
            #expect(Array(r.indirectGrefs) == (0..<pages).map { UInt32(0x900 + $0) })
            #expect(r.operation == .write && r.segmentCount == count)
        }
    }

    @Test func indirectConstructorRules() {
        #expect(throws: BlkifError.segmentCount(value: 513, limit: 1...512)) {
            _ = try BlkifIndirectRequest(operation: .read, segmentCount: 513, handle: 0, id: 0, sectorNumber: 0,
                                         indirectGrefs: BlkifIndirectGrefs([1]))
        }
        #expect(throws: BlkifError.segmentCount(value: 9 * 512, limit: 1...4096)) {
            _ = try BlkifIndirectGrefs(Array(repeating: UInt32(1), count: 9))
        }
        #expect(throws: BlkifError.segmentCount(value: 12, limit: 0...11)) {
            _ = try BlkifSegments(Array(repeating: BlkifSegment(gref: 1, firstSector: 0, lastSector: 7), count: 12))
        }
        #expect(throws: BlkifError.segmentCount(value: 0, limit: 1...11)) {
            _ = try BlkifDirectRequest(operation: .read, handle: 0, id: 0, sectorNumber: 0, segments: BlkifSegments())
        }
    }

    @Test func indirectPageLayout() throws {
        #expect(BlkifIndirectPage.segmentsPerPage == 512)
        #expect(BlkifIndirectPage.maxSegments == 4096)
        #expect(BlkifIndirectPage.pageCount(forSegments: 1) == 1)
        #expect(BlkifIndirectPage.pageCount(forSegments: 512) == 1)
        #expect(BlkifIndirectPage.pageCount(forSegments: 513) == 2)
        #expect(BlkifIndirectPage.location(ofSegment: 513) == (1, 8))
        #expect(BlkifIndirectPage.location(ofSegment: 511) == (0, 4088))
        let segment = BlkifSegment(gref: 77, firstSector: 1, lastSector: 2)
        BlkifIndirectPage.encodeSegment(segment, index: 1023, into: view)
        #expect(view.load(UInt32.self, at: 4088) == 77)
        #expect(try BlkifIndirectPage.decodeSegment(1023, from: view) == segment)
        view.store(UInt8(9), at: 4088 + 5)
        #expect(throws: BlkifError.segmentSectors(index: 1023, first: 1, last: 9, limit: 7)) {
            try BlkifIndirectPage.decodeSegment(1023, from: view)
        }
        let short = try view.slice(offset: 0, length: 100)
        #expect(throws: BlkifError.slotOutOfBounds(offset: 96, length: 8, size: 100)) {
            try BlkifIndirectPage.decodeSegment(12, from: short)
        }
    }

    @Test func slotBounds() throws {
        #expect(throws: BlkifError.slotOutOfBounds(offset: 4000, length: 112, size: 4096)) { try decode(at: 4000) }
        #expect(throws: BlkifError.slotOutOfBounds(offset: -8, length: 108, size: 4096)) { try decode(.x86_32, at: -8) }
        #expect(throws: BlkifError.slotOutOfBounds(offset: Int.max, length: 16, size: 4096)) {
            try BlkifResponse.decode(from: view, at: Int.max, abi: .x86_64)
        }
        writeDirect(op: 0, count: 1)
        #expect(throws: Never.self) { try decode(at: 0) }
        // The last slot that fits decodes.
        writeDirect(op: 0, count: 0)
        #expect(throws: Never.self) { try BlkifResponse.decode(from: view, at: 4096 - 16, abi: .x86_64) }
    }

    @Test func responseStatus() throws {
        for (raw, abi) in [(Int16(1), BlkifABI.x86_64), (-3, .x86_32), (.min, .native)] {
            view.fill(0, at: 0, length: 16)
            view.store(raw, at: BlkifLayout.responseStatusOffset)
            #expect(throws: BlkifError.unknownStatus(raw)) { try BlkifResponse.decode(from: view, at: 0, abi: abi) }
        }
        // An unknown operation is echoed as written.
        BlkifResponse(id: 1, operation: 200, status: .notSupported).encode(into: view, at: 0, abi: .x86_64)
        #expect(try BlkifResponse.decode(from: view, at: 0, abi: .x86_64).operation == 200)
    }

    @Test func sectorRanges() throws {
        #expect(throws: Never.self) { try BlkifRequest.validateSectorRange(start: 0, count: 100, diskSectors: 100) }
        #expect(throws: Never.self) { try BlkifRequest.validateSectorRange(start: 100, count: 0, diskSectors: 100) }
        #expect(throws: BlkifError.sectorRange(start: 1, count: 100, diskSectors: 100)) {
            try BlkifRequest.validateSectorRange(start: 1, count: 100, diskSectors: 100)
        }
        #expect(throws: BlkifError.sectorRange(start: .max, count: 2, diskSectors: .max)) {
            try BlkifRequest.validateSectorRange(start: .max, count: 2, diskSectors: .max)
        }
        #expect(throws: BlkifError.sectorRange(start: 0, count: .max, diskSectors: 10)) {
            try BlkifRequest.validateSectorRange(start: 0, count: .max, diskSectors: 10)
        }
        let segments = try BlkifSegments([BlkifSegment(gref: 1, firstSector: 0, lastSector: 7),
                                          BlkifSegment(gref: 2, firstSector: 0, lastSector: 3)])
        let write = try BlkifDirectRequest(operation: .write, handle: 0, id: 0, sectorNumber: 88, segments: segments)
        #expect(throws: Never.self) { try write.validateSectors(diskSectors: 100) }
        #expect(throws: BlkifError.sectorRange(start: 88, count: 12, diskSectors: 99)) {
            try write.validateSectors(diskSectors: 99)
        }
        let flush = try BlkifDirectRequest(operation: .flushDiskCache, handle: 0, id: 0, sectorNumber: .max,
                                           segments: BlkifSegments())
        #expect(throws: Never.self) { try flush.validateSectors(diskSectors: 0) }
        let discard = BlkifDiscardRequest(handle: 0, id: 0, sectorNumber: 0xffff_ffff_ffff_fff0, sectorCount: 16, secure: false)
        #expect(throws: BlkifError.sectorRange(start: 0xffff_ffff_ffff_fff0, count: 16, diskSectors: 1 << 40)) {
            try discard.validateSectors(diskSectors: 1 << 40)
        }

        // On a disk of 4096-byte sectors a request must cover whole ones, in 512-byte units.
        #expect(throws: Never.self) { try BlkifRequest.validateSectorRange(start: 16, count: 8, diskSectors: 64, sectorSize: 4096) }
        #expect(throws: BlkifError.sectorAlignment(start: 17, count: 8, sectorSize: 4096)) {
            try BlkifRequest.validateSectorRange(start: 17, count: 8, diskSectors: 64, sectorSize: 4096)
        }
        #expect(throws: BlkifError.sectorAlignment(start: 88, count: 12, sectorSize: 4096)) {
            try write.validateSectors(diskSectors: 100, sectorSize: 4096)
        }
        #expect(throws: Never.self) { try write.validateSectors(diskSectors: 100, sectorSize: 512) }
        #expect(throws: Never.self) { try flush.validateSectors(diskSectors: 0, sectorSize: 4096) }
        let shortDiscard = BlkifDiscardRequest(handle: 0, id: 0, sectorNumber: 8, sectorCount: 4, secure: false)
        #expect(throws: BlkifError.sectorAlignment(start: 8, count: 4, sectorSize: 4096)) {
            try shortDiscard.validateSectors(diskSectors: 64, sectorSize: 4096)
        }
        // The range is checked first: a request off the disk says so, aligned or not.
        #expect(throws: BlkifError.sectorRange(start: 61, count: 8, diskSectors: 64)) {
            try BlkifRequest.validateSectorRange(start: 61, count: 8, diskSectors: 64, sectorSize: 4096)
        }
        #expect(BlkifError.sectorAlignment(start: 17, count: 8, sectorSize: 4096).description
            == "blkif sectors 17 + 8 (512-byte units) are not whole 4096-byte sectors of this disk")
    }

    @Test func abiFromProtocolNode() throws {
        #expect(try BlkifABI(protocol: nil) == .native)
        #expect(try BlkifABI(protocol: "x86_32-abi") == .x86_32)
        #expect(try BlkifABI(protocol: "x86_64-abi") == .x86_64)
        for bad in ["", "x86_64", "X86_32-ABI", "x86_32-abi "] {
            #expect(throws: BlkifError.unknownABI(bad)) { try BlkifABI(protocol: bad) }
        }
        #if arch(x86_64)
        #expect(throws: BlkifError.unknownABI("arm-abi")) { try BlkifABI(protocol: "arm-abi") }
        #expect(BlkifABI.native.protocolName == "x86_64-abi")
        #expect(BlkifABI.protocolNames == ["x86_32-abi", "x86_64-abi"])
        #endif
        // Each accepted name once, each one parsing.
        #expect(Set(BlkifABI.protocolNames).count == BlkifABI.protocolNames.count)
        for name in BlkifABI.protocolNames { #expect(throws: Never.self) { try BlkifABI(protocol: name) } }
    }

    /// Seeded random valid requests survive encode/decode in every ABI, at every slot of a ring page.
    @Test func randomRoundTrip() throws {
        var rng = SeededGenerator(seed: 0xB1C1F)
        for abi in BlkifABI.allCases {
            let slot = abi.slotSize
            for n in 0..<500 {
                let request = try randomRequest(&rng)
                let offset = 64 + (n % ((4096 - 64) / slot)) * slot
                request.encode(into: view, at: offset, abi: abi)
                #expect(try BlkifRequest.decode(from: view, at: offset, abi: abi, maxIndirectSegments: 4096) == request)
                let response = BlkifResponse(id: rng.next(), operation: UInt8.random(in: 0...255, using: &rng),
                                             status: BlkifStatus.allCases.randomElement(using: &rng)!)
                response.encode(into: view, at: offset, abi: abi)
                #expect(try BlkifResponse.decode(from: view, at: offset, abi: abi) == response)
            }
        }
    }

    func randomRequest(_ rng: inout SeededGenerator) throws -> BlkifRequest {
        switch Int.random(in: 0..<3, using: &rng) {
        case 0:
            let op = BlkifDirectOperation.allCases.randomElement(using: &rng)!
            let limit = op.operation.directSegmentLimit
            let segments = try BlkifSegments((0..<Int.random(in: limit, using: &rng)).map { _ in
                let first = UInt8.random(in: 0...7, using: &rng)
                return BlkifSegment(gref: UInt32.random(in: 0...UInt32.max, using: &rng), firstSector: first,
                                    lastSector: UInt8.random(in: first...7, using: &rng))
            })
            return .direct(try BlkifDirectRequest(operation: op, handle: UInt16.random(in: 0...UInt16.max, using: &rng),
                                                  id: rng.next(), sectorNumber: rng.next(), segments: segments))
        case 1:
            return .discard(BlkifDiscardRequest(handle: UInt16.random(in: 0...UInt16.max, using: &rng), id: rng.next(),
                                                sectorNumber: rng.next(), sectorCount: rng.next(), secure: Bool.random(using: &rng)))
        default:
            let count = Int.random(in: 1...4096, using: &rng)
            let grefs = (0..<BlkifIndirectPage.pageCount(forSegments: count)).map { _ in UInt32.random(in: 0...UInt32.max, using: &rng) }
            return .indirect(try BlkifIndirectRequest(
                operation: BlkifIndirectOperation.allCases.randomElement(using: &rng)!, segmentCount: count,
                handle: UInt16.random(in: 0...UInt16.max, using: &rng), id: rng.next(), sectorNumber: rng.next(),
                indirectGrefs: BlkifIndirectGrefs(grefs)))
        }
    }
}
