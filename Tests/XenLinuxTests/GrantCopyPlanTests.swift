import CXen
import XenTesting
import Glibc
import SharedMemory
import Testing
@testable import XenLinux
import XenPlatform

/// Bytes of one C segment, read at the offsets the C compiler gives (CXen's layout probe).
private struct SegmentBytes {
    let bytes: [UInt8]
    let layout = cxen_copy_segment_layout()

    init(_ op: xengnttab_grant_copy_segment_t) {
        var op = op
        bytes = withUnsafeBytes(of: &op) { Array($0) }
    }

    func u16(_ offset: Int) -> UInt16 { UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8 }
    func u32(_ offset: Int) -> UInt32 { UInt32(u16(offset)) | UInt32(u16(offset + 2)) << 16 }
    func u64(_ offset: Int) -> UInt64 { UInt64(u32(offset)) | UInt64(u32(offset + 4)) << 32 }

    var sourceRef: UInt32 { u32(layout.source_ref) }
    var sourceOffset: UInt16 { u16(layout.source_offset) }
    var sourceDomain: UInt16 { u16(layout.source_domid) }
    var sourceVirt: UInt64 { u64(layout.source) }
    var destRef: UInt32 { u32(layout.dest) }
    var destOffset: UInt16 { u16(layout.dest + 4) }
    var destDomain: UInt16 { u16(layout.dest + 6) }
    var destVirt: UInt64 { u64(layout.dest) }
    var length: UInt16 { u16(layout.len) }
    var flags: UInt16 { u16(layout.flags) }
    var status: Int16 { Int16(bitPattern: u16(layout.status)) }
}

private func buffers(_ list: (id: UInt32, pages: Int)...) throws -> [UInt32: CopyBuffer] {
    var out: [UInt32: CopyBuffer] = [:]
    for (id, pages) in list { out[id] = CopyBuffer(region: try MemoryRegion.anonymous(pages: pages), id: id) }
    return out
}

private func op(_ step: GrantCopyPlan.Step) -> xengnttab_grant_copy_segment_t? {
    if case let .hypervisor(op) = step { return op }
    return nil
}

private func refusal(_ step: GrantCopyPlan.Step) -> GrantStatus? {
    if case let .refused(status) = step { return status }
    return nil
}

@Suite struct GrantCopyPlanTests {
    @Test func swiftSeesTheCLayoutOfTheSegment() {
        let l = cxen_copy_segment_layout()
        typealias S = xengnttab_grant_copy_segment_t
        #expect(MemoryLayout<S>.size == l.size)
        #expect(MemoryLayout<S>.offset(of: \S.source) == l.source)
        #expect(MemoryLayout<S>.offset(of: \S.dest) == l.dest)
        #expect(MemoryLayout<S>.offset(of: \S.len) == l.len)
        #expect(MemoryLayout<S>.offset(of: \S.flags) == l.flags)
        #expect(MemoryLayout<S>.offset(of: \S.status) == l.status)
        // The foreign triple overlays the pointer: ref, then offset, then domid.
        #expect(l.source_ref == l.source && l.source_offset == l.source + 4 && l.source_domid == l.source + 6)
    }

    @Test func grantToLocalFillsTheForeignSourceAndTheBufferAddress() throws {
        let table = try buffers((id: 5, pages: 2))
        let segment = GrantCopySegment(source: .grant(domain: 7, ref: 0x1234_5678, offset: 96),
                                       destination: .local(buffer: 5, offset: 4000), length: 512)
        let made = try #require(op(GrantCopyPlan.step(for: segment, buffers: table)))
        let b = SegmentBytes(made)
        #expect(b.flags == UInt16(GNTCOPY_source_gref))
        #expect(b.sourceRef == 0x1234_5678 && b.sourceOffset == 96 && b.sourceDomain == 7)
        // A local end may cross a page of its buffer: gntdev splits it.
        #expect(b.destVirt == UInt64(UInt(bitPattern: table[5]!.view.baseAddress + 4000)))
        #expect(b.length == 512)
        #expect(b.status == Int16(GNTST_general_error))
    }

    @Test func localToGrantFillsTheForeignDestination() throws {
        let table = try buffers((id: 1, pages: 1))
        let segment = GrantCopySegment(source: .local(buffer: 1, offset: 8),
                                       destination: .grant(domain: 0x7FEF, ref: 9, offset: 4095), length: 1)
        let b = SegmentBytes(try #require(op(GrantCopyPlan.step(for: segment, buffers: table))))
        #expect(b.flags == UInt16(GNTCOPY_dest_gref))
        #expect(b.sourceVirt == UInt64(UInt(bitPattern: table[1]!.view.baseAddress + 8)))
        #expect(b.destRef == 9 && b.destOffset == 4095 && b.destDomain == 0x7FEF)
    }

    @Test func grantToGrantSetsBothFlags() throws {
        let segment = GrantCopySegment(source: .grant(domain: 1, ref: 2, offset: 0),
                                       destination: .grant(domain: 3, ref: 4, offset: 2048), length: 2048)
        let b = SegmentBytes(try #require(op(GrantCopyPlan.step(for: segment, buffers: [:]))))
        #expect(b.flags == UInt16(GNTCOPY_source_gref | GNTCOPY_dest_gref))
        #expect(b.sourceRef == 2 && b.sourceDomain == 1 && b.destRef == 4 && b.destDomain == 3 && b.destOffset == 2048)
    }

    @Test func segmentsGntdevWouldRejectAreAnsweredWithXensStatus() throws {
        let table = try buffers((id: 1, pages: 1))
        let grant = GrantCopyEndpoint.grant(domain: 1, ref: 1, offset: 0)
        let cases: [(GrantCopySegment, GrantStatus)] = [
            (GrantCopySegment(source: grant, destination: .local(buffer: 1, offset: 0), length: 0), .badCopyArgument),
            (GrantCopySegment(source: grant, destination: .local(buffer: 1, offset: 0), length: 4097), .badCopyArgument),
            (GrantCopySegment(source: .grant(domain: 1, ref: 1, offset: 4000), destination: .local(buffer: 1, offset: 0),
                              length: 97), .badCopyArgument),
            (GrantCopySegment(source: grant, destination: .grant(domain: 1, ref: 1, offset: 1), length: 4096), .badCopyArgument),
            (GrantCopySegment(source: grant, destination: .local(buffer: 2, offset: 0), length: 8), .badVirtualAddress),
            (GrantCopySegment(source: .local(buffer: 9, offset: 0), destination: grant, length: 8), .badVirtualAddress),
            (GrantCopySegment(source: grant, destination: .local(buffer: 1, offset: 4089), length: 8), .badCopyArgument),
            (GrantCopySegment(source: grant, destination: .local(buffer: 1, offset: -1), length: 8), .badCopyArgument),
            (GrantCopySegment(source: .local(buffer: 1, offset: Int.max), destination: grant, length: 8), .badCopyArgument),
        ]
        for (segment, expected) in cases {
            #expect(refusal(GrantCopyPlan.step(for: segment, buffers: table)) == expected, "\(segment)")
        }
        // The edges that are allowed.
        let edge = GrantCopySegment(source: .grant(domain: 1, ref: 1, offset: 4088), destination: .local(buffer: 1, offset: 4088), length: 8)
        #expect(op(GrantCopyPlan.step(for: edge, buffers: table)) != nil)
    }

    /// Stands in for gntdev: copies out of a grant by filling the destination with the
    /// ref's low byte, answers refs from 100 up with GNTST_bad_gntref, records batch sizes.
    private final class FakeKernel {
        var batches: [Int] = []

        func submit(_ ops: UnsafeMutableBufferPointer<xengnttab_grant_copy_segment_t>) throws(PlatformError) {
            batches.append(ops.count)
            for k in ops.indices {
                let fromGrant = ops[k].flags & UInt16(GNTCOPY_source_gref) != 0
                let ref = fromGrant ? ops[k].source.foreign.ref : ops[k].dest.foreign.ref
                guard ref < 100 else { ops[k].status = Int16(GNTST_bad_gntref); continue }
                if fromGrant, let destination = ops[k].dest.virt {
                    memset(destination, Int32(ref & 0xFF), Int(ops[k].len))
                }
                ops[k].status = Int16(GNTST_okay)
            }
        }
    }

    private func perform(_ segments: inout [GrantCopySegment], _ table: [UInt32: CopyBuffer],
                         submit: (UnsafeMutableBufferPointer<xengnttab_grant_copy_segment_t>) throws(PlatformError) -> Void)
        throws(PlatformError) {
        var ops = [xengnttab_grant_copy_segment_t](repeating: xengnttab_grant_copy_segment_t(), count: segments.count)
        var owners = [Int](repeating: -1, count: segments.count)
        try segments.withUnsafeMutableBufferPointer { (s: inout UnsafeMutableBufferPointer<GrantCopySegment>) throws(PlatformError) in
            try ops.withUnsafeMutableBufferPointer { (o: inout UnsafeMutableBufferPointer<xengnttab_grant_copy_segment_t>) throws(PlatformError) in
                try owners.withUnsafeMutableBufferPointer { (w: inout UnsafeMutableBufferPointer<Int>) throws(PlatformError) in
                    try GrantCopyPlan.perform(s, buffers: table, ops: o, owners: w, submit: submit)
                }
            }
        }
    }

    @Test func segmentsTakeEffectInArrayOrderAndEachGetsItsStatus() throws {
        let table = try buffers((id: 1, pages: 1), (id: 2, pages: 1))
        var segments = [
            GrantCopySegment(source: .grant(domain: 4, ref: 10, offset: 0), destination: .local(buffer: 1, offset: 0), length: 16),
            // Must see what segment 0 brought in, so the batch before it goes first.
            GrantCopySegment(source: .local(buffer: 1, offset: 0), destination: .local(buffer: 2, offset: 10), length: 16),
            GrantCopySegment(source: .grant(domain: 4, ref: 11, offset: 4090), destination: .local(buffer: 1, offset: 0), length: 16),
            GrantCopySegment(source: .local(buffer: 2, offset: 0), destination: .grant(domain: 4, ref: 200, offset: 8), length: 32),
            GrantCopySegment(source: .grant(domain: 4, ref: 12, offset: 0), destination: .local(buffer: 2, offset: 100), length: 8),
        ]
        let kernel = FakeKernel()
        try perform(&segments, table, submit: kernel.submit)
        #expect(kernel.batches == [1, 2])
        #expect(segments.map(\.status) == [.okay, .okay, .badCopyArgument, .badGrantRef, .okay])
        #expect(table[2]!.view.bytes(at: 10, length: 16) == [UInt8](repeating: 10, count: 16))
        #expect(table[2]!.view.bytes(at: 100, length: 8) == [UInt8](repeating: 12, count: 8))
    }

    @Test func aBatchTheKernelRefusesIsThrownAndLaterSegmentsStayUnset() throws {
        let table = try buffers((id: 1, pages: 1))
        var segments = [
            GrantCopySegment(source: .grant(domain: 4, ref: 10, offset: 0), destination: .local(buffer: 1, offset: 0), length: 16),
            GrantCopySegment(source: .local(buffer: 1, offset: 0), destination: .local(buffer: 1, offset: 100), length: 16),
            GrantCopySegment(source: .grant(domain: 4, ref: 11, offset: 0), destination: .local(buffer: 1, offset: 0), length: 16),
        ]
        #expect(throws: PlatformError.system("fake", errno: EFAULT)) {
            try perform(&segments, table) { (_: UnsafeMutableBufferPointer<xengnttab_grant_copy_segment_t>) throws(PlatformError) in
                throw .system("fake", errno: EFAULT)
            }
        }
        #expect(segments.map(\.status) == [.generalError, .generalError, .generalError])
    }

    @Test func seededRandomSegmentsAreRefusedExactlyWhenAnEndLeavesItsRange() throws {
        let table = try buffers((id: 1, pages: 1), (id: 2, pages: 3))
        var rng = SeededGenerator(seed: 0x5EED_0004)
        for _ in 0..<2000 {
            let length = UInt16.random(in: 0...4200, using: &rng)
            func endpoint() -> GrantCopyEndpoint {
                if Bool.random(using: &rng) {
                    return .grant(domain: 1, ref: UInt32.random(in: 0...100, using: &rng), offset: UInt16.random(in: 0...4200, using: &rng))
                }
                return .local(buffer: UInt32.random(in: 1...3, using: &rng), offset: Int.random(in: -10...13000, using: &rng))
            }
            let segment = GrantCopySegment(source: endpoint(), destination: endpoint(), length: length)
            func fits(_ e: GrantCopyEndpoint) -> GrantStatus {
                switch e {
                case let .grant(_, _, offset): return Int(offset) + Int(length) <= 4096 ? .okay : .badCopyArgument
                case let .local(id, offset):
                    guard let b = table[id] else { return .badVirtualAddress }
                    return offset >= 0 && offset + Int(length) <= b.region.length ? .okay : .badCopyArgument
                }
            }
            let expected: GrantStatus = length == 0 || length > 4096 ? .badCopyArgument
                : fits(segment.source) != .okay ? fits(segment.source) : fits(segment.destination)
            let step = GrantCopyPlan.step(for: segment, buffers: table)
            if expected == .okay {
                #expect(refusal(step) == nil, "\(segment)")
            } else {
                #expect(refusal(step) == expected, "\(segment)")
            }
        }
    }
}
