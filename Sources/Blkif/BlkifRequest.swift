import SharedMemory

/// A request in a blkif ring slot: one of the three structs `io/blkif.h` overlays there.
public enum BlkifRequest: Sendable, Equatable {
    /// `struct blkif_request`: read, write, barrier, flush.
    case direct(BlkifDirectRequest)
    /// `struct blkif_request_discard`.
    case discard(BlkifDiscardRequest)
    /// `struct blkif_request_indirect`.
    case indirect(BlkifIndirectRequest)

    /// The frontend's tag.
    @inlinable
    public var id: UInt64 {
        switch self {
        case let .direct(r): return r.id
        case let .discard(r): return r.id
        case let .indirect(r): return r.id
        }
    }

    /// The `operation` byte.
    @inlinable
    public var operation: BlkifOperation {
        switch self {
        case let .direct(r): return r.operation.operation
        case .discard: return .discard
        case .indirect: return .indirect
        }
    }

    /// The `operation` byte a response to this request carries: the request's own, except
    /// that an indirect request is answered with its `indirect_op` (what Linux blkback
    /// writes and Linux blkfront checks; BLKIF_OP_INDIRECT there disables the disk).
    @inlinable
    public var responseOperation: UInt8 {
        switch self {
        case let .indirect(r): return r.responseOperation
        default: return operation.rawValue
        }
    }

    // MARK: Validation (pure)

    /// Checks `nr_segments` for `operation`: 1...11 for reads and writes, 0...11 for
    /// flushes and barriers, 1...`maxIndirectSegments` (capped at 8 pages of 512) for
    /// indirect requests, which need `feature-max-indirect-segments` advertised
    /// (`maxIndirectSegments > 0`). Discards carry no segments.
    @inlinable
    public static func validateSegmentCount(_ count: Int, operation: BlkifOperation,
                                            maxIndirectSegments: Int = 0) throws(BlkifError) {
        switch operation {
        case .discard:
            return
        case .indirect:
            guard maxIndirectSegments > 0 else { throw .indirectNotAdvertised }
            let limit = 1...Swift.min(maxIndirectSegments, BlkifIndirectPage.maxSegments)
            guard limit.contains(count) else { throw .segmentCount(value: count, limit: limit) }
        default:
            let limit = operation.directSegmentLimit
            guard limit.contains(count) else { throw .segmentCount(value: count, limit: limit) }
        }
    }

    /// Checks that `start ..< start + count` lies inside a disk of `diskSectors` sectors,
    /// without overflow for any inputs, and covers whole logical sectors of `sectorSize`
    /// bytes, a power of two as `sector-size` is (ring requests count 512-byte units
    /// whatever the disk's sector size).
    @inlinable
    public static func validateSectorRange(start: UInt64, count: UInt64, diskSectors: UInt64,
                                           sectorSize: UInt32 = 512) throws(BlkifError) {
        guard count <= diskSectors, start <= diskSectors - count else {
            throw .sectorRange(start: start, count: count, diskSectors: diskSectors)
        }
        // A mask, not two divisions, on every request: 0 for 512-byte sectors.
        let misalignment = UInt64(max(sectorSize, 512) / 512) - 1
        guard (start | count) & misalignment == 0 else {
            throw .sectorAlignment(start: start, count: count, sectorSize: sectorSize)
        }
    }

    // MARK: Decoding

    /// Reads and validates the request in the slot at `offset`, laid out for `abi`.
    ///
    /// Every field is loaded once into a local and validated from there, so the frontend
    /// cannot change a value between check and use. Only the `nr_segments` segments (or
    /// the indirect pages they need) are read. `maxIndirectSegments` is the value this
    /// backend advertised in `feature-max-indirect-segments` (0: none). Validation
    /// failures come as ``BlkifError/invalidRequest(id:operation:reason:)`` carrying the
    /// id and operation, so the request can still be answered.
    @inlinable
    public static func decode(from view: SharedView, at offset: Int, abi: BlkifABI,
                              maxIndirectSegments: Int = 0) throws(BlkifError) -> BlkifRequest {
        let layout = abi.layout
        guard offset >= 0, offset <= view.count, layout.requestSize <= view.count - offset else {
            throw .slotOutOfBounds(offset: offset, length: layout.requestSize, size: view.count)
        }
        let rawOperation = view.load(UInt8.self, at: offset + BlkifLayout.operationOffset)
        let id = view.load(UInt64.self, at: offset + layout.idOffset)
        do throws(BlkifError) {
            return try decodeBody(rawOperation, id: id, from: view, at: offset, layout: layout,
                                  maxIndirectSegments: maxIndirectSegments)
        } catch {
            throw .invalidRequest(id: id, operation: rawOperation, reason: error)
        }
    }

    @inlinable
    static func decodeBody(_ rawOperation: UInt8, id: UInt64, from view: SharedView, at offset: Int,
                           layout: BlkifLayout, maxIndirectSegments: Int) throws(BlkifError) -> BlkifRequest {
        let second = view.load(UInt8.self, at: offset + BlkifLayout.secondByteOffset)
        switch try BlkifOperation(validating: rawOperation) {
        case .discard:
            guard second & ~BlkifDiscardRequest.secureFlag == 0 else { throw .discardFlag(second) }
            return .discard(BlkifDiscardRequest(
                handle: view.load(UInt16.self, at: offset + BlkifLayout.handleOffset),
                id: id,
                sectorNumber: view.load(UInt64.self, at: offset + layout.sectorNumberOffset),
                sectorCount: view.load(UInt64.self, at: offset + layout.discardSectorCountOffset),
                secure: second & BlkifDiscardRequest.secureFlag != 0))

        case .indirect:
            guard let operation = BlkifIndirectOperation(rawValue: second) else {
                throw .unknownIndirectOperation(second)
            }
            let count = Int(view.load(UInt16.self, at: offset + BlkifLayout.indirectSegmentCountOffset))
            try validateSegmentCount(count, operation: .indirect, maxIndirectSegments: maxIndirectSegments)
            var grefs = InlineArray<8, UInt32>(repeating: 0)
            let pages = BlkifIndirectPage.pageCount(forSegments: count)
            for page in 0..<pages {
                grefs[page] = view.load(UInt32.self, at: offset + layout.indirectGrefsOffset + page * 4)
            }
            return .indirect(try BlkifIndirectRequest(
                operation: operation, segmentCount: count,
                handle: view.load(UInt16.self, at: offset + layout.indirectHandleOffset),
                id: id,
                sectorNumber: view.load(UInt64.self, at: offset + layout.sectorNumberOffset),
                indirectGrefs: BlkifIndirectGrefs(storage: grefs, length: pages),
                maxSegments: maxIndirectSegments))

        case .read, .write, .writeBarrier, .flushDiskCache:
            guard let operation = BlkifDirectOperation(rawValue: rawOperation) else {
                throw .unknownOperation(rawOperation)
            }
            let count = Int(second)
            try validateSegmentCount(count, operation: operation.operation)
            var segments = BlkifSegments()
            for index in 0..<count {
                segments.appendUnchecked(try BlkifSegment.decode(
                    from: view, at: offset + layout.segmentsOffset + index * BlkifSegment.size, index: index))
            }
            return .direct(try BlkifDirectRequest(
                operation: operation,
                handle: view.load(UInt16.self, at: offset + BlkifLayout.handleOffset),
                id: id,
                sectorNumber: view.load(UInt64.self, at: offset + layout.sectorNumberOffset),
                segments: segments))
        }
    }

    // MARK: Encoding

    /// Writes the request into the slot at `offset`, laid out for `abi`. The struct's
    /// padding is zeroed; segment entries past `nr_segments` are left as they were.
    /// The slot must lie inside `view` (our own ring arithmetic picks it).
    @inlinable
    public func encode(into view: SharedView, at offset: Int, abi: BlkifABI) {
        let layout = abi.layout
        switch self {
        case let .direct(r):
            view.fill(0, at: offset, length: layout.segmentsOffset)
            view.store(r.operation.rawValue, at: offset + BlkifLayout.operationOffset)
            view.store(UInt8(r.segments.count), at: offset + BlkifLayout.secondByteOffset)
            view.store(r.handle, at: offset + BlkifLayout.handleOffset)
            view.store(r.id, at: offset + layout.idOffset)
            view.store(r.sectorNumber, at: offset + layout.sectorNumberOffset)
            for (index, segment) in r.segments.enumerated() {
                segment.encode(into: view, at: offset + layout.segmentsOffset + index * BlkifSegment.size)
            }
        case let .discard(r):
            view.fill(0, at: offset, length: layout.discardSize)
            view.store(BlkifOperation.discard.rawValue, at: offset + BlkifLayout.operationOffset)
            view.store(r.secure ? BlkifDiscardRequest.secureFlag : 0, at: offset + BlkifLayout.secondByteOffset)
            view.store(r.handle, at: offset + BlkifLayout.handleOffset)
            view.store(r.id, at: offset + layout.idOffset)
            view.store(r.sectorNumber, at: offset + layout.sectorNumberOffset)
            view.store(r.sectorCount, at: offset + layout.discardSectorCountOffset)
        case let .indirect(r):
            view.fill(0, at: offset, length: layout.indirectSize)
            view.store(BlkifOperation.indirect.rawValue, at: offset + BlkifLayout.operationOffset)
            view.store(r.operation.rawValue, at: offset + BlkifLayout.secondByteOffset)
            view.store(UInt16(r.segmentCount), at: offset + BlkifLayout.indirectSegmentCountOffset)
            view.store(r.id, at: offset + layout.idOffset)
            view.store(r.sectorNumber, at: offset + layout.sectorNumberOffset)
            view.store(r.handle, at: offset + layout.indirectHandleOffset)
            for (page, gref) in r.indirectGrefs.enumerated() {
                view.store(gref, at: offset + layout.indirectGrefsOffset + page * 4)
            }
        }
    }
}
