import Glibc
import SharedMemory
import XenPlatform

/// The grant operations, as the hypervisor performs them on behalf of a domain. The
/// checks are XenLocal's ``GrantEntryTable``'s, which are Xen's (grant_table.h v1 entries):
/// a mapper must be the entry's domid, the entry must say GTF_permit_access, a writable
/// map needs an entry without GTF_readonly; refs past the table are GNTST_bad_gntref.
extension InProcessHypervisor {
    // MARK: Granting side

    func share(from domid: DomainID, pages count: Int, with grantee: DomainID, writable: Bool) throws(PlatformError) -> SharedPages {
        let maxBatch = configuration.maxBatch
        // The pool descriptor is used under the lock, so a concurrent destroy cannot close
        // it (and let its number be reused) between lookup and mmap.
        return try state.withLock { (s) throws(PlatformError) -> SharedPages in
            if let error = s.takeFault({ f -> PlatformError? in
                if case let .share(d, error) = f, d == domid { return error }
                return nil
            }) { throw error }
            guard (1 ... maxBatch).contains(count) else {
                throw .invalidArgument("share of \(count) pages; 1...\(maxBatch) allowed")
            }
            guard let d = s.domains[domid] else { throw .invalidArgument("no domain \(domid)") }
            let (first, refs) = try d.memory.share(count: count, with: grantee, writable: writable)
            let region: MemoryRegion
            do {
                region = try MemoryRegion.map(fileDescriptor: d.poolFD, offset: Int(first) * pageSize, length: count * pageSize)
            } catch {
                try? d.memory.endAccess(first: first)
                throw .system("mmap of own frames \(first)+\(count): \(error)", errno: ENOMEM)
            }
            return SharedPages(region: region, refs: refs, grantee: grantee, writable: writable, token: UInt64(first))
        }
    }

    func endAccess(from domid: DomainID, _ pages: SharedPages) throws(PlatformError) {
        try state.withLock { (s) throws(PlatformError) in
            let first = UInt32(truncatingIfNeeded: pages.token)
            guard let d = s.domains[domid], d.memory.shares[first] == pages.refs else {
                throw .invalidArgument("d\(domid) has no shared pages with refs \(pages.refs); access already ended?")
            }
            try d.memory.endAccess(first: first)
        }
        pages.region.close()
    }

    // MARK: Mapping side

    func map(by mapper: DomainID, _ refs: [GrantRef], from granter: DomainID, writable: Bool) throws(PlatformError) -> GrantMapping {
        let maxBatch = configuration.maxBatch
        return try state.withLock { (s) throws(PlatformError) -> GrantMapping in
            guard (1 ... maxBatch).contains(refs.count) else {
                throw .invalidArgument("map of \(refs.count) refs; 1...\(maxBatch) allowed")
            }
            if let (ref, status) = s.takeFault({ f -> (GrantRef, GrantStatus)? in
                if case let .map(g, ref, status) = f, g == granter, refs.contains(ref) { return (ref, status) }
                return nil
            }) {
                throw .grant(status, ref: ref, domain: granter, reason: "injected fault")
            }
            guard let d = s.domains[granter] else {
                throw .grant(.badDomain, ref: refs[0], domain: granter, reason: "no domain \(granter)")
            }
            let frames = try d.memory.acquire(refs, for: mapper, writable: writable)
            let region: MemoryRegion
            do throws(PlatformError) {
                region = try Self.mapFrames(frames, of: d, writable: writable)
            } catch {
                d.memory.releasePins(refs, writable: writable)
                throw error
            }
            let handle = s.nextMappingHandle
            s.nextMappingHandle &+= 1
            s.mappings[handle] = MappingRecord(mapper: mapper, granter: granter, refs: refs, writable: writable)
            return GrantMapping(region: region, domain: granter, refs: refs, writable: writable, handle: handle)
        }
    }

    /// Each frame's page side by side, aliasing the granter's memory.
    static func mapFrames(_ frames: [UInt32], of d: InProcessDomain, writable: Bool) throws(PlatformError) -> MemoryRegion {
        do { return try MemoryRegion.mapFrames(fileDescriptor: d.poolFD, frames: frames, writable: writable) } catch {
            throw .system("mapping d\(d.id)'s frames: \(error)", errno: ENOMEM)
        }
    }

    /// Throws an injected ``InProcessFault/unmap(granter:ref:status:)`` that names one of
    /// `mapping`'s refs, before anything of the mapping is touched.
    func takeUnmapFault(_ mapping: GrantMapping) throws(PlatformError) {
        let hit = state.withLock { s in
            s.takeFault { f -> (GrantRef, GrantStatus)? in
                if case let .unmap(granter, ref, status) = f, granter == mapping.domain, mapping.refs.contains(ref) {
                    return (ref, status)
                }
                return nil
            }
        }
        if let (ref, status) = hit {
            throw .grant(status, ref: ref, domain: mapping.domain, reason: "injected unmap fault")
        }
    }

    /// Drops a mapping's pins; GNTST_bad_handle if it is not a live mapping of `mapper`.
    func unmap(by mapper: DomainID, handle: UInt64) throws(PlatformError) {
        try state.withLock { (s) throws(PlatformError) in
            guard let m = s.mappings[handle], m.mapper == mapper else {
                throw .grant(.badHandle, ref: 0, domain: mapper, reason: "no live mapping with handle \(handle) for d\(mapper)")
            }
            s.mappings[handle] = nil
            s.domains[m.granter]?.memory.releasePins(m.refs, writable: m.writable)
        }
    }

    func registerCopyBuffer(for domid: DomainID, pages: Int) throws(PlatformError) -> CopyBuffer {
        let maxBatch = configuration.maxBatch
        return try state.withLock { (s) throws(PlatformError) -> CopyBuffer in
            guard (1 ... maxBatch).contains(pages) else {
                throw .invalidArgument("copy buffer of \(pages) pages; 1...\(maxBatch) allowed")
            }
            guard let d = s.domains[domid] else { throw .invalidArgument("no domain \(domid)") }
            let first = try d.memory.allocateBuffer(pages: pages)
            let region: MemoryRegion
            do {
                region = try MemoryRegion.map(fileDescriptor: d.poolFD, offset: Int(first) * pageSize, length: pages * pageSize)
            } catch {
                d.memory.freeBuffer(first)
                throw .system("mmap of copy buffer frames \(first)+\(pages): \(error)", errno: ENOMEM)
            }
            return CopyBuffer(region: region, id: first)
        }
    }

    func unregisterCopyBuffer(for domid: DomainID, _ buffer: CopyBuffer) throws(PlatformError) {
        try state.withLock { (s) throws(PlatformError) in
            guard let d = s.domains[domid], d.memory.freeBuffer(buffer.id) else {
                throw .invalidArgument("copy buffer \(buffer.id) is not registered for d\(domid)")
            }
        }
        buffer.region.close()
    }

    func copy(by domid: DomainID, _ segments: UnsafeMutableBufferPointer<GrantCopySegment>) throws(PlatformError) {
        let maxBatch = configuration.maxBatch
        try state.withLock { (s) throws(PlatformError) in
            guard segments.count <= maxBatch else {
                throw .invalidArgument("copy of \(segments.count) segments; at most \(maxBatch)")
            }
            guard s.domains[domid] != nil else { throw .invalidArgument("no domain \(domid)") }
            for i in segments.indices {
                segments[i].status = s.copyOne(segments[i], for: domid)
            }
        }
    }
}

extension HypervisorState {
    /// One grant copy (GNTTABOP_copy), after any injected copy fault on its grant ends.
    mutating func copyOne(_ segment: GrantCopySegment, for domid: DomainID) -> GrantStatus {
        guard segment.length > 0, Int(segment.length) <= pageSize else { return .badCopyArgument }
        for end in [segment.source, segment.destination] {
            guard case let .grant(granter, ref, _) = end else { continue }
            if let status = takeFault({ f -> GrantStatus? in
                if case let .copy(g, r, status) = f, g == granter, r == ref { return status }
                return nil
            }) { return status }
        }
        let domains = self.domains
        return GrantDomain.copy(segment, by: domid) { domains[$0]?.memory }
    }
}
