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
            guard let first = d.frames.allocate(count) else {
                throw .system("d\(domid) has no \(count) free consecutive pages in its pool of \(d.poolPages)", errno: ENOMEM)
            }
            guard let units = d.refs.allocateScattered(count) else {
                d.frames.free(first, count: count)
                throw .system("d\(domid) has no \(count) free grant entries", errno: ENOSPC)
            }
            let refs = units.map { GrantRef($0) }
            let region: MemoryRegion
            do {
                region = try MemoryRegion.map(fileDescriptor: d.poolFD, offset: first * pageSize, length: count * pageSize)
            } catch {
                for ref in refs { d.refs.free(Int(ref)) }
                d.frames.free(first, count: count)
                throw .system("mmap of own frames \(first)+\(count): \(error)", errno: ENOMEM)
            }
            region.view.fill(0, at: 0, length: count * pageSize)
            for (i, ref) in refs.enumerated() {
                d.grants.grant(ref, to: grantee, frame: UInt32(first + i), readOnly: !writable)
            }
            d.shares[UInt32(first)] = refs
            return SharedPages(region: region, refs: refs, grantee: grantee, writable: writable, token: UInt64(first))
        }
    }

    func endAccess(from domid: DomainID, _ pages: SharedPages) throws(PlatformError) {
        try state.withLock { (s) throws(PlatformError) in
            guard let d = s.domains[domid], let refs = d.shares[UInt32(truncatingIfNeeded: pages.token)],
                  refs == pages.refs else {
                throw .invalidArgument("d\(domid) has no shared pages with refs \(pages.refs); access already ended?")
            }
            // All or nothing: refuse before touching any entry if one is still mapped.
            if let busy = refs.first(where: { !d.grants.flags($0).intersection([.reading, .writing]).isEmpty }) {
                throw .grantBusy(ref: busy)
            }
            for ref in refs where !d.grants.endAccess(ref) {
                // Only this lock's holders set busy bits, so only a test rewriting the
                // table itself gets here; the pages stay allocated.
                throw .grantBusy(ref: ref)
            }
            for ref in refs { d.refs.free(Int(ref)) }
            d.frames.free(Int(pages.token), count: refs.count)
            d.shares[UInt32(truncatingIfNeeded: pages.token)] = nil
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
            var frames: [UInt32] = []
            for (i, ref) in refs.enumerated() {
                let frame: UInt32
                do throws(PlatformError) {
                    frame = try d.grants.acquire(ref, grantee: mapper, writable: writable, granter: granter)
                } catch {
                    s.releasePins(d, refs: refs[0 ..< i], writable: writable)
                    throw error
                }
                s.pin(d, ref, writable: writable)
                guard Int(frame) < d.poolPages else {
                    s.releasePins(d, refs: refs[0 ... i], writable: writable)
                    throw .grant(.badPage, ref: ref, domain: granter, reason: "frame \(frame) is outside d\(granter)'s \(d.poolPages) pages")
                }
                frames.append(frame)
            }
            let region: MemoryRegion
            do throws(PlatformError) {
                region = try Self.mapFrames(frames, of: d, writable: writable)
            } catch {
                s.releasePins(d, refs: refs[...], writable: writable)
                throw error
            }
            let handle = s.nextMappingHandle
            s.nextMappingHandle &+= 1
            s.mappings[handle] = MappingRecord(mapper: mapper, granter: granter, refs: refs, writable: writable)
            return GrantMapping(region: region, domain: granter, refs: refs, writable: writable, handle: handle)
        }
    }

    /// Reserves a contiguous range and places each frame's page in it, so the mapping
    /// aliases the granter's memory page by page whatever frames the refs name.
    static func mapFrames(_ frames: [UInt32], of d: InProcessDomain, writable: Bool) throws(PlatformError) -> MemoryRegion {
        let length = frames.count * pageSize
        guard let base = mmap(nil, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), base != MAP_FAILED else {
            throw .system("mmap reserve of \(length) bytes", errno: errno)
        }
        let prot = writable ? PROT_READ | PROT_WRITE : PROT_READ
        for (i, frame) in frames.enumerated() {
            let p = mmap(base + i * pageSize, pageSize, prot, MAP_SHARED | MAP_FIXED, d.poolFD, off_t(Int(frame) * pageSize))
            guard p != MAP_FAILED else {
                let e = errno
                munmap(base, length)
                throw .system("mmap of d\(d.id) frame \(frame)", errno: e)
            }
        }
        return MemoryRegion.adopting(base: base, length: length) { b, l in munmap(b, l) }
    }

    /// Drops a mapping's pins; GNTST_bad_handle if it is not a live mapping of `mapper`.
    func unmap(by mapper: DomainID, handle: UInt64) throws(PlatformError) {
        try state.withLock { (s) throws(PlatformError) in
            guard let m = s.mappings[handle], m.mapper == mapper else {
                throw .grant(.badHandle, ref: 0, domain: mapper, reason: "no live mapping with handle \(handle) for d\(mapper)")
            }
            s.mappings[handle] = nil
            if let d = s.domains[m.granter] { s.releasePins(d, refs: m.refs[...], writable: m.writable) }
        }
    }

    func registerCopyBuffer(for domid: DomainID, pages: Int) throws(PlatformError) -> CopyBuffer {
        let maxBatch = configuration.maxBatch
        return try state.withLock { (s) throws(PlatformError) -> CopyBuffer in
            guard (1 ... maxBatch).contains(pages) else {
                throw .invalidArgument("copy buffer of \(pages) pages; 1...\(maxBatch) allowed")
            }
            guard let d = s.domains[domid] else { throw .invalidArgument("no domain \(domid)") }
            guard let first = d.frames.allocate(pages) else {
                throw .system("d\(domid) has no \(pages) free consecutive pages", errno: ENOMEM)
            }
            let region: MemoryRegion
            do {
                region = try MemoryRegion.map(fileDescriptor: d.poolFD, offset: first * pageSize, length: pages * pageSize)
            } catch {
                d.frames.free(first, count: pages)
                throw .system("mmap of copy buffer frames \(first)+\(pages): \(error)", errno: ENOMEM)
            }
            region.view.fill(0, at: 0, length: pages * pageSize)
            d.buffers[UInt32(first)] = pages
            return CopyBuffer(region: region, id: UInt32(first))
        }
    }

    func unregisterCopyBuffer(for domid: DomainID, _ buffer: CopyBuffer) throws(PlatformError) {
        try state.withLock { (s) throws(PlatformError) in
            guard let d = s.domains[domid], let pages = d.buffers.removeValue(forKey: buffer.id) else {
                throw .invalidArgument("copy buffer \(buffer.id) is not registered for d\(domid)")
            }
            d.frames.free(Int(buffer.id), count: pages)
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
    mutating func pin(_ d: InProcessDomain, _ ref: GrantRef, writable: Bool) {
        var p = d.pins[ref] ?? (0, 0)
        p.readers += 1
        if writable { p.writers += 1 }
        d.pins[ref] = p
    }

    /// Drops one pin per ref and clears the busy bits no mapping needs any more.
    mutating func releasePins(_ d: InProcessDomain, refs: ArraySlice<GrantRef>, writable: Bool) {
        for ref in refs {
            guard var p = d.pins[ref] else { continue }
            p.readers -= 1
            if writable { p.writers -= 1 }
            d.grants.clearBusy(ref, reading: p.readers == 0, writing: p.writers == 0)
            d.pins[ref] = p.readers == 0 ? nil : p
        }
    }

    /// One grant copy with Xen's checks (GNTTABOP_copy); the grant ends are pinned only
    /// for the copy, so a concurrent end of access sees them busy meanwhile.
    mutating func copyOne(_ segment: GrantCopySegment, for domid: DomainID) -> GrantStatus {
        let length = Int(segment.length)
        guard length > 0, length <= pageSize else { return .badCopyArgument }
        for end in [segment.source, segment.destination] {
            guard case let .grant(granter, ref, _) = end else { continue }
            if let status = takeFault({ f -> GrantStatus? in
                if case let .copy(g, r, status) = f, g == granter, r == ref { return status }
                return nil
            }) { return status }
        }
        var pinned: [(InProcessDomain, GrantRef, Bool)] = []
        defer {
            for (d, ref, wrote) in pinned {
                let p = d.pins[ref]
                d.grants.clearBusy(ref, reading: p == nil, writing: wrote && (p?.writers ?? 0) == 0)
            }
        }
        func resolve(_ end: GrantCopyEndpoint, writing: Bool) -> Result<SharedView, GrantStatus> {
            switch end {
            case let .grant(granter, ref, offset):
                guard let d = domains[granter] else { return .failure(.badDomain) }
                guard Int(offset) + length <= pageSize else { return .failure(.badCopyArgument) }
                let frame: UInt32
                do { frame = try d.grants.acquire(ref, grantee: domid, writable: writing, granter: granter) } catch {
                    if case let .grant(status, _, _, _) = error { return .failure(status) }
                    return .failure(.generalError)
                }
                pinned.append((d, ref, writing))
                guard let page = d.pages(at: frame, count: 1),
                      let bytes = try? page.slice(offset: Int(offset), length: length) else { return .failure(.badPage) }
                return .success(bytes)
            case let .local(buffer, offset):
                guard let d = domains[domid], let pages = d.buffers[buffer],
                      let view = d.pages(at: buffer, count: pages) else { return .failure(.badVirtualAddress) }
                guard offset >= 0, let bytes = try? view.slice(offset: offset, length: length) else {
                    return .failure(.badCopyArgument)
                }
                return .success(bytes)
            }
        }
        let source: SharedView
        switch resolve(segment.source, writing: false) {
        case let .success(v): source = v
        case let .failure(status): return status
        }
        let destination: SharedView
        switch resolve(segment.destination, writing: true) {
        case let .success(v): destination = v
        case let .failure(status): return status
        }
        SharedView.copy(from: source, at: 0, to: destination, at: 0, length: length)
        return .okay
    }
}
