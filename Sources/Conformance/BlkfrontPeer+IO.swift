import Blkif
import SharedMemory
import XenPlatform
import XenRing

extension BlkfrontPeer {
    func takeID() -> UInt64 {
        defer { nextID &+= 1 }
        return nextID
    }

    /// Whole-page segments over data pages `pages`, the last one `sectors` long at most.
    func segments(_ pages: Range<Int>, sectors: Int? = nil) -> [BlkifSegment] {
        var left = sectors ?? pages.count * 8
        return pages.map { page in
            let count = min(8, left)
            left -= count
            return BlkifSegment(gref: data.refs[page], firstSector: 0, lastSector: UInt8(max(count, 1) - 1))
        }
    }

    /// A direct request of `sectors` sectors from `sector` over the first data pages.
    func direct(_ operation: BlkifDirectOperation, sector: UInt64, sectors: Int, id: UInt64? = nil) throws -> BlkifRequest {
        let pages = (sectors + 7) / 8
        guard pages <= BlkifSegments.capacity else { throw PeerError.unusable("\(sectors) sectors need more than 11 segments") }
        return .direct(try BlkifDirectRequest(operation: operation, handle: 0, id: id ?? takeID(), sectorNumber: sector,
                                              segments: BlkifSegments(segments(0 ..< pages, sectors: sectors))))
    }

    /// An indirect request over the first `count` data pages, its segments written into
    /// the indirect page.
    func indirectRequest(_ operation: BlkifIndirectOperation, sector: UInt64, count: Int, maxSegments: Int) throws -> BlkifRequest {
        guard count <= Self.dataPageCount else { throw PeerError.unusable("\(count) segments need more than \(Self.dataPageCount) pages") }
        for (index, segment) in segments(0 ..< count).enumerated() {
            BlkifIndirectPage.encodeSegment(segment, index: index, into: indirect.view)
        }
        return .indirect(try BlkifIndirectRequest(operation: operation, segmentCount: count, handle: 0, id: takeID(),
                                                  sectorNumber: sector, indirectGrefs: BlkifIndirectGrefs(indirect.refs),
                                                  maxSegments: maxSegments))
    }

    /// Publishes `request` on `queue` (rewritten by `lie`), notifies, and waits for its
    /// response.
    func exchange(_ request: BlkifRequest, queue: Int = 0,
                  lie: (SharedView, BlkifLayout) -> Void = { _, _ in }) async throws -> BlkifResponse {
        let rings = try rings()
        try rings.produce(request, queue: queue, lie: lie)
        try rings.push(queue: queue)
        do {
            let (responses, _) = try rings.awaitResponses([request.id], queue: queue)
            // awaitResponses returns only when every id asked for is answered.
            return responses[request.id]!
        } catch PeerError.noResponse(let ids, let seconds, _) {
            throw PeerError.noResponse(ids: ids, seconds: seconds, backendState: await describeBackendState())
        }
    }

    /// Writes `bytes` (whole sectors, at most 11 pages) at `sector` from the data pages.
    func write(_ bytes: [UInt8], sector: UInt64, queue: Int = 0) async throws -> BlkifResponse {
        bytes.withUnsafeBytes { data.view.copyBytes(from: $0, to: 0) }
        return try await exchange(direct(.write, sector: sector, sectors: bytes.count / 512), queue: queue)
    }

    /// Reads `count` bytes (whole sectors) at `sector` into the data pages, zeroed first.
    func read(sector: UInt64, count: Int, queue: Int = 0) async throws -> (BlkifResponse, [UInt8]) {
        data.view.fill(0, at: 0, length: count)
        let response = try await exchange(direct(.read, sector: sector, sectors: count / 512), queue: queue)
        return (response, data.view.bytes(at: 0, length: count))
    }

    /// A one-sector read at sector 0: nil when answered OKAY, else what happened.
    func probe(queue: Int = 0) async -> String? {
        do {
            let (response, _) = try await read(sector: 0, count: 512, queue: queue)
            return response.status == .okay ? nil : "the probe read was answered \(response.status)"
        } catch {
            return "the probe read: \(error)"
        }
    }

    /// Starts over, connects and probes: nil when the device is served again.
    func servedAfterStartOver() async -> String? {
        do {
            try await startOver()
            try await connect()
        } catch {
            return "after starting over: \(error)"
        }
        return await probe()
    }
}

/// Bytes that differ per call site, so a read cannot pass on stale data.
func pattern(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed | 1
    return (0 ..< count).map { _ in
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return UInt8(truncatingIfNeeded: state)
    }
}
