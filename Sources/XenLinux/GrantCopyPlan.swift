import CXen
import Glibc
import SharedMemory
import XenPlatform

/// Turns ``GrantCopySegment`` values into libxengnttab's `xengnttab_grant_copy_segment_t`.
///
/// gntdev fails a whole IOCTL_GNTDEV_GRANT_COPY batch with EINVAL for a segment whose
/// grant end crosses its page or that has no grant end at all, so such segments never
/// reach it: each is answered here with the status the local hypervisor gives (Xen's
/// GNTST_bad_copy_arg, GNTST_bad_virt_addr for an unknown local buffer), and a copy
/// between two of our own buffers is done here, as Xen would do it for a gmfn-to-gmfn copy.
enum GrantCopyPlan {
    /// What becomes of one segment.
    enum Step {
        /// Goes to the hypervisor as this op.
        case hypervisor(xengnttab_grant_copy_segment_t)
        /// Both ends are our own buffers: copied in place.
        case local(source: UnsafeRawPointer, destination: UnsafeMutableRawPointer, length: Int)
        /// Refused before reaching Xen, with this status.
        case refused(GrantStatus)
    }

    /// The step for `segment`, resolving local ends through `buffers` by id.
    static func step(for segment: GrantCopySegment, buffers: [UInt32: CopyBuffer]) -> Step {
        let length = Int(segment.length)
        guard length > 0, length <= pageSize else { return .refused(.badCopyArgument) }
        var op = xengnttab_grant_copy_segment_t()
        op.len = segment.length
        op.status = Int16(GNTST_general_error)
        var sourceAddress: UnsafeMutableRawPointer?
        switch resolve(segment.source, length: length, buffers: buffers) {
        case let .failure(status): return .refused(status)
        case let .success(.grant(domain, ref, offset)):
            op.source.foreign.ref = ref
            op.source.foreign.offset = offset
            op.source.foreign.domid = domain
            op.flags |= UInt16(GNTCOPY_source_gref)
        case let .success(.address(address)):
            op.source.virt = address
            sourceAddress = address
        }
        switch resolve(segment.destination, length: length, buffers: buffers) {
        case let .failure(status): return .refused(status)
        case let .success(.grant(domain, ref, offset)):
            op.dest.foreign.ref = ref
            op.dest.foreign.offset = offset
            op.dest.foreign.domid = domain
            op.flags |= UInt16(GNTCOPY_dest_gref)
        case let .success(.address(address)):
            if let sourceAddress {
                return .local(source: UnsafeRawPointer(sourceAddress), destination: address, length: length)
            }
            op.dest.virt = address
        }
        return .hypervisor(op)
    }

    /// A resolved end: a grant, or an address in one of our buffers.
    enum End {
        case grant(domain: DomainID, ref: GrantRef, offset: UInt16)
        case address(UnsafeMutableRawPointer)
    }

    static func resolve(_ endpoint: GrantCopyEndpoint, length: Int, buffers: [UInt32: CopyBuffer]) -> Result<End, GrantStatus> {
        switch endpoint {
        case let .grant(domain, ref, offset):
            // grant_table.h: a grant end may not cross its page (GNTST_bad_copy_arg).
            guard Int(offset) + length <= pageSize else { return .failure(.badCopyArgument) }
            return .success(.grant(domain: domain, ref: ref, offset: offset))
        case let .local(id, offset):
            guard let buffer = buffers[id] else { return .failure(.badVirtualAddress) }
            guard offset >= 0, offset <= buffer.region.length - length else { return .failure(.badCopyArgument) }
            return .success(.address(buffer.view.baseAddress + offset))
        }
    }

    /// Performs every segment, in array order as Xen does: ops for the hypervisor are
    /// gathered in `ops` (their segment's index in `owners`) and handed to `submit` as one
    /// batch, flushed early whenever a copy done here comes next, so that copy sees the
    /// bytes earlier segments wrote. Statuses land in the segments; refused ones are set
    /// here. A throwing `submit` stops the run, leaving later segments unset.
    static func perform(_ segments: UnsafeMutableBufferPointer<GrantCopySegment>, buffers: [UInt32: CopyBuffer],
                        ops: UnsafeMutableBufferPointer<xengnttab_grant_copy_segment_t>,
                        owners: UnsafeMutableBufferPointer<Int>,
                        submit: (UnsafeMutableBufferPointer<xengnttab_grant_copy_segment_t>) throws(PlatformError) -> Void)
        throws(PlatformError) {
        var count = 0
        func flush() throws(PlatformError) {
            guard count > 0 else { return }
            let batch = UnsafeMutableBufferPointer(rebasing: ops[..<count])
            count = 0
            try submit(batch)
            for k in batch.indices { segments[owners[k]].status = GrantStatus(gntst: batch[k].status) }
        }
        for i in segments.indices {
            switch step(for: segments[i], buffers: buffers) {
            case let .hypervisor(op):
                ops.initializeElement(at: count, to: op)
                owners.initializeElement(at: count, to: i)
                count += 1
            case let .local(source, destination, length):
                try flush()
                memmove(destination, source, length)
                segments[i].status = .okay
            case let .refused(status):
                segments[i].status = status
            }
        }
        try flush()
    }

    /// One op reading `length` bytes of `ref` at `offset` into `address`.
    static func foreignSource(domain: DomainID, ref: GrantRef, offset: UInt16, into address: UnsafeMutableRawPointer,
                              length: UInt16) -> xengnttab_grant_copy_segment_t {
        var op = xengnttab_grant_copy_segment_t()
        op.source.foreign.ref = ref
        op.source.foreign.offset = offset
        op.source.foreign.domid = domain
        op.dest.virt = address
        op.len = length
        op.flags = UInt16(GNTCOPY_source_gref)
        op.status = Int16(GNTST_general_error)
        return op
    }
}
