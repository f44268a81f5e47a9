@testable import Blkif

/// The example values of Tests/InteropTests/C/layout_check.c, built through the Swift
/// API; Protocols/blkif-golden.tsv holds the bytes the C compiler made of them.
enum BlkifExample: Equatable {
    case request(BlkifRequest)
    case response(BlkifResponse)
    case segment(BlkifSegment)

    static func all() throws -> [String: BlkifExample] {
        func direct(_ op: BlkifDirectOperation, handle: UInt16, id: UInt64, sector: UInt64,
                    _ segments: [BlkifSegment]) throws -> BlkifExample {
            .request(.direct(try BlkifDirectRequest(operation: op, handle: handle, id: id, sectorNumber: sector,
                                                    segments: BlkifSegments(segments))))
        }
        return [
            "segment": .segment(BlkifSegment(gref: 0xdead_beef, firstSector: 2, lastSector: 5)),
            "read_3_segments": try direct(.read, handle: 0x0301, id: 0x1122_3344_5566_7788, sector: 0x1234_5678, [
                BlkifSegment(gref: 0x101, firstSector: 0, lastSector: 7),
                BlkifSegment(gref: 0x102, firstSector: 1, lastSector: 6),
                BlkifSegment(gref: 0x7fff_ffff, firstSector: 3, lastSector: 3),
            ]),
            "write_11_segments": try direct(.write, handle: 51712, id: 1, sector: 2048,
                                            (0..<11).map { BlkifSegment(gref: 0xa000 + UInt32($0), firstSector: 0, lastSector: 7) }),
            "write_barrier_empty": try direct(.writeBarrier, handle: 51712, id: .max, sector: 0, []),
            "flush_empty": try direct(.flushDiskCache, handle: 51712, id: 42, sector: 0, []),
            "flush_1_segment": try direct(.flushDiskCache, handle: 51728, id: 43, sector: 8,
                                          [BlkifSegment(gref: 9, firstSector: 0, lastSector: 0)]),
            "discard": .request(.discard(BlkifDiscardRequest(handle: 51712, id: 0x0102_0304_0506_0708, sectorNumber: 4096,
                                                             sectorCount: 0x1_0000_0000, secure: false))),
            "discard_secure": .request(.discard(BlkifDiscardRequest(handle: 1, id: 77, sectorNumber: 0xffff_ffff_ffff_fff0,
                                                                    sectorCount: 16, secure: true))),
            "indirect_read_600": .request(.indirect(try BlkifIndirectRequest(
                operation: .read, segmentCount: 600, handle: 51712, id: 0xcafe_f00d, sectorNumber: 0x100000,
                indirectGrefs: BlkifIndirectGrefs([0x200, 0x201])))),
            "indirect_write_4096": .request(.indirect(try BlkifIndirectRequest(
                operation: .write, segmentCount: 4096, handle: 768, id: 5, sectorNumber: 123_456_789,
                indirectGrefs: BlkifIndirectGrefs((0..<8).map { 0x8000_0000 + UInt32($0) })))),
            "response_okay": .response(BlkifResponse(id: 0xfedc_ba98_7654_3210, operation: .write, status: .okay)),
            "response_error": .response(BlkifResponse(id: 3, operation: .read, status: .error)),
            "response_eopnotsupp": .response(BlkifResponse(id: 4, operation: .writeBarrier, status: .notSupported)),
        ]
    }
}
