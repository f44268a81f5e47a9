import Blkif
import SharedMemory
import XenPlatform

extension BlkifBackendSuite {
    /// A node of the backend at Connected, checked by `valid`; absent fails unless
    /// `optional`, which makes it not applicable.
    static func node(_ id: String, _ key: String, optional: Bool = false, _ rule: String,
                     _ valid: @escaping @Sendable (String, [String: String]) -> Bool) -> Check {
        Check(id) { peer in
            try await peer.ensureConnected()
            guard let value = peer.atConnected[key] else {
                return optional ? .notApplicable("\(key) is not published") : .fail("\(key) is not published at Connected")
            }
            return .expect(valid(value, peer.atConnected), "\(key) reads '\(value)' (\(rule))")
        }
    }

    static func isPowerOfTwo(_ value: String, atLeast: UInt64) -> Bool {
        guard let n = UInt64(value) else { return false }
        return n >= atLeast && n & (n - 1) == 0
    }

    static let nodes: [Check] = {
        typealias Key = BlkifDiskProperties.Key
        typealias Feature = BlkifBackendFeatures.Key
        return [
            node("BLKIF-BE-001", Key.sectors, "a decimal > 0") { v, _ in UInt64(v).map { $0 > 0 } ?? false },
            node("BLKIF-BE-002", Key.info, "a decimal 32-bit number") { v, _ in UInt32(v) != nil },
            node("BLKIF-BE-003", Key.sectorSize, "a power of two >= 512") { v, _ in isPowerOfTwo(v, atLeast: 512) },
            node("BLKIF-BE-004", Key.physicalSectorSize, optional: true, "a power of two >= sector-size") { v, all in
                isPowerOfTwo(v, atLeast: UInt64(all[Key.sectorSize] ?? "") ?? 512)
            },
            Check("BLKIF-BE-005") { peer in
                try await peer.ensureConnected()
                let keys = [Feature.flushCache, Feature.barrier, Feature.discard, Feature.discardSecure, Feature.persistent]
                let present = keys.compactMap { key in peer.atConnected[key].map { (key, $0) } }
                let bad = present.filter { $0.1 != "0" && $0.1 != "1" }
                return .expect(bad.isEmpty, "\(present.map { "\($0.0)=\($0.1)" }.joined(separator: " "))")
            },
            node("BLKIF-BE-006", Feature.maxRingPageOrder, optional: true, "a decimal 0 to 8") { v, _ in UInt32(v).map { $0 <= 8 } ?? false },
            node("BLKIF-BE-007", Feature.maxQueues, "a decimal >= 1") { v, _ in UInt32(v).map { $0 >= 1 } ?? false },
            node("BLKIF-BE-008", Feature.maxIndirectSegments, "a decimal > 11") { v, _ in UInt32(v).map { $0 > 11 } ?? false },
            Check("BLKIF-BE-027") { peer in
                try await peer.ensureConnected()
                let present = [Feature.discardGranularity, Feature.discardAlignment].compactMap { key in peer.atConnected[key].map { (key, $0) } }
                return .expect(present.allSatisfy { UInt32($0.1) != nil },
                               present.isEmpty ? "neither is written" : present.map { "\($0.0)=\($0.1)" }.joined(separator: " "))
            },
        ]
    }()

    /// A write and a read of it on the current connection (`queue` for each).
    static func roundTrip(_ peer: BlkfrontPeer, bytes count: Int, sector: UInt64, seed: UInt64,
                          writeQueue: Int = 0, readQueue: Int = 0) async throws -> ClauseVerdict {
        let bytes = pattern(count, seed: seed)
        let written = try await peer.write(bytes, sector: sector, queue: writeQueue)
        let (read, back) = try await peer.read(sector: sector, count: count, queue: readQueue)
        return .expect(written.status == .okay && read.status == .okay && back == bytes,
                       "\(count / 512) sectors at \(sector): write \(written.status), read \(read.status), data \(back == bytes ? "equal" : "different")")
    }

    /// A fresh handshake as `handshake` says, a round trip on it, then back to the plain ring.
    static func onHandshake(_ peer: BlkfrontPeer, _ handshake: BlkfrontPeer.Handshake,
                            _ body: (BlkfrontPeer) async throws -> ClauseVerdict) async throws -> ClauseVerdict {
        try await peer.startOver()
        try await peer.connect(handshake)
        return try await body(peer)
    }

    static let io: [Check] = [
        Check("BLKIF-BE-009") { peer in
            try await peer.ensureConnected()
            let response = try await peer.write(pattern(4096, seed: 9), sector: 8)
            return .expect(response.status == .okay, "a write of 8 sectors was answered \(response.status)")
        },
        Check("BLKIF-BE-010") { peer in
            try await peer.ensureConnected()
            return try await roundTrip(peer, bytes: 4096, sector: 16, seed: 10)
        },
        Check("BLKIF-BE-011") { peer in
            try await peer.ensureConnected()
            var seen: [String] = []
            for id: UInt64 in [0, 1 << 40 + 7, .max] {
                let response = try await peer.exchange(peer.direct(.read, sector: 0, sectors: 1, id: id))
                seen.append("\(id)->\(response.id)")
                guard response.id == id else { return .fail("ids asked -> answered: \(seen)") }
            }
            return .pass("ids asked -> answered: \(seen.joined(separator: " "))")
        },
        Check("BLKIF-BE-012") { peer in
            try await peer.ensureConnected()
            let read = try await peer.exchange(peer.direct(.read, sector: 0, sectors: 1))
            let write = try await peer.write(pattern(512, seed: 12), sector: 24)
            return .expect(read.operation == BlkifOperation.read.rawValue && write.operation == BlkifOperation.write.rawValue,
                           "read answered with operation \(read.operation), write with \(write.operation)")
        },
        Check("BLKIF-BE-013") { peer in
            try await peer.ensureConnected()
            let whole = pattern(4096, seed: 13)
            guard try await peer.write(whole, sector: 32).status == .okay else { return .fail("the whole-page write failed") }
            let part = pattern(4096, seed: 0x1313)
            part.withUnsafeBytes { peer.dataPage(0).copyBytes(from: $0, to: 0) }
            let request = BlkifRequest.direct(try BlkifDirectRequest(
                operation: .write, handle: 0, id: peer.takeID(), sectorNumber: 32,
                segments: BlkifSegments([BlkifSegment(gref: peer.data.refs[0], firstSector: 2, lastSector: 5)])))
            let response = try await peer.exchange(request)
            let (read, back) = try await peer.read(sector: 32, count: 4096)
            var expected = whole
            // Sectors 2 to 5 of the page went to sectors 32 to 35 of the disk.
            expected.replaceSubrange(0 ..< 2048, with: part[1024 ..< 3072])
            return .expect(response.status == .okay && read.status == .okay && back == expected,
                           "segment 2..5 written \(response.status); read back \(read.status), \(back == expected ? "the 4 sectors at 32 changed, the rest kept" : "not the expected bytes")")
        },
        Check("BLKIF-BE-014") { peer in
            try await peer.ensureConnected()
            return try await roundTrip(peer, bytes: 11 * 4096, sector: 64, seed: 14)
        },
        Check("BLKIF-BE-021") { peer in
            var handshake = BlkfrontPeer.Handshake()
            handshake.abi = .x86_32
            return try await onHandshake(peer, handshake) { try await roundTrip($0, bytes: 8192, sector: 48, seed: 21) }
        },
        Check("BLKIF-BE-022") { peer in
            var handshake = BlkfrontPeer.Handshake()
            handshake.abi = .x86_64
            return try await onHandshake(peer, handshake) { try await roundTrip($0, bytes: 8192, sector: 56, seed: 22) }
        },
        Check("BLKIF-BE-023") { peer in
            try await peer.ensureConnected()
            if let problem = try await fillRing(peer, warmUp: 0) { return .fail(problem) }
            return .pass("a ring's worth of reads at once: one OKAY per id")
        },
        Check("BLKIF-BE-024") { peer in
            try await peer.ensureConnected()
            let (response, _) = try await peer.read(sector: peer.sectors - 1, count: 512)
            return .expect(response.status == .okay, "a read of sector \(peer.sectors - 1) of \(peer.sectors) was answered \(response.status)")
        },
    ]

    static let features: [Check] = [
        Check("BLKIF-BE-015") { peer in
            try await peer.ensureConnected()
            let response = try await peer.exchange(peer.direct(.flushDiskCache, sector: 0, sectors: 0))
            return .expect(response.status == .okay, "a flush without segments was answered \(response.status)")
        },
        Check("BLKIF-BE-016") { peer in
            try await peer.ensureConnected()
            let response = try await peer.exchange(peer.direct(.writeBarrier, sector: 72, sectors: 8))
            return .expect(response.status == .okay, "a write barrier of one page was answered \(response.status)")
        },
        Check("BLKIF-BE-017") { peer in
            try await peer.ensureConnected()
            let response = try await peer.exchange(.discard(BlkifDiscardRequest(handle: 0, id: peer.takeID(), sectorNumber: 0,
                                                                                sectorCount: 8, secure: false)))
            return .expect(response.status == .okay, "a discard of 8 sectors at 0 was answered \(response.status)")
        },
        Check("BLKIF-BE-018") { peer in
            try await peer.ensureConnected()
            let limit = Int(peer.atConnected[BlkifBackendFeatures.Key.maxIndirectSegments] ?? "") ?? 0
            let count = min(BlkfrontPeer.dataPageCount, limit)
            guard count > BlkifSegments.capacity else { return .notApplicable("feature-max-indirect-segments \(limit)") }
            let bytes = pattern(count * 4096, seed: 18)
            bytes.withUnsafeBytes { peer.data.view.copyBytes(from: $0, to: 0) }
            let written = try await peer.exchange(peer.indirectRequest(.write, sector: 128, count: count, maxSegments: limit))
            peer.data.view.fill(0, at: 0, length: bytes.count)
            let read = try await peer.exchange(peer.indirectRequest(.read, sector: 128, count: count, maxSegments: limit))
            let back = peer.data.view.bytes(at: 0, length: bytes.count)
            return .expect(written.status == .okay && read.status == .okay && back == bytes,
                           "indirect \(count) segments: write \(written.status), read \(read.status), data \(back == bytes ? "equal" : "different")")
        },
        Check("BLKIF-BE-019") { peer in
            var handshake = BlkfrontPeer.Handshake()
            handshake.ringPageOrder = 1
            return try await onHandshake(peer, handshake) { peer in
                let size = try peer.rings().queues[0].ring.size
                if let problem = try await fillRing(peer, warmUp: 1) { return .fail("2-page ring of \(size) slots: \(problem)") }
                return .pass("ring-page-order 1: a ring of \(size) slots filled at once, every read answered OKAY")
            }
        },
        Check("BLKIF-BE-020") { peer in
            var handshake = BlkfrontPeer.Handshake()
            handshake.queues = 2
            return try await onHandshake(peer, handshake) { peer in
                try await roundTrip(peer, bytes: 4096, sector: 96, seed: 20, writeQueue: 0, readQueue: 1)
            }
        },
        Check("BLKIF-BE-025") { peer in
            // The check reads "kept mapped" off a refused end of access; Linux's gntalloc
            // defers instead of refusing, so there the clause cannot be observed.
            guard peer.platform.grantTable.reportsStillMapped else { return .notApplicable(stillMappedUnseen) }
            var handshake = BlkfrontPeer.Handshake()
            handshake.persistent = true
            return try await onHandshake(peer, handshake) { peer in
                guard peer.atConnected[BlkifBackendFeatures.Key.persistent] == "1" else {
                    return .notApplicable("feature-persistent reads \(peer.atConnected[BlkifBackendFeatures.Key.persistent] ?? "absent")")
                }
                let page = try peer.platform.grantTable.share(pages: 1, with: peer.backendID, writable: true)
                let request = BlkifRequest.direct(try BlkifDirectRequest(
                    operation: .write, handle: 0, id: peer.takeID(), sectorNumber: 104,
                    segments: BlkifSegments([BlkifSegment(gref: page.refs[0], firstSector: 0, lastSector: 7)])))
                let response = try await peer.exchange(request)
                do {
                    try peer.platform.grantTable.endAccess(page)
                    return .fail("write \(response.status); ending access to its page succeeded: the backend did not keep it mapped")
                } catch {
                    peer.stale.append(page)
                    return .pass("write \(response.status); ending access to its page refused while connected (\(error))")
                }
            }
        },
        Check("BLKIF-BE-026") { peer in
            try await peer.ensureConnected()
            let response = try await peer.write(pattern(512, seed: 26), sector: 0)
            return .expect(response.status == .error, "a write to the read-only disk was answered \(response.status)")
        },
    ]
}
