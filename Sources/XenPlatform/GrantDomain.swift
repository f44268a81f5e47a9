import Glibc
import SharedMemory

/// One domain's memory and grant table as an emulated hypervisor keeps them: a memfd
/// pool in which frame N is page N, a v1 grant table, what the domain has shared, its
/// copy buffers, and the pins mappers hold on its grants.
///
/// The local hypervisor (XenLocal) and the in-process doubles (XenTesting) both use this,
/// so the two apply the very same checks. Not thread-safe: its owner serialises access.
public final class GrantDomain {
    public let id: DomainID
    /// The domain's memory.
    public let pool: MemoryRegion
    /// The grant table's memory (a memfd, so it can be handed to the domain's processes).
    public let tableMemory: MemoryRegion
    public let grants: GrantEntryTable
    public private(set) var frames: RunAllocator
    public private(set) var refs: RunAllocator
    /// Shared runs by their first frame: the refs that grant them.
    public private(set) var shares: [UInt32: [GrantRef]] = [:]
    /// Copy buffers by id (their first frame): their length in pages.
    public private(set) var buffers: [UInt32: Int] = [:]
    /// Mappers' pins on this domain's grants: ref -> (readers, writers).
    public private(set) var pins: [GrantRef: (readers: Int, writers: Int)] = [:]

    /// A domain with `poolPages` pages of memory and `grantEntries` grant entries.
    public init(id: DomainID, poolPages: Int, grantEntries: Int, label: String) throws(PlatformError) {
        guard poolPages > 0, grantEntries > Int(GrantEntryTable.reservedEntries) else {
            throw .invalidArgument("pool of \(poolPages) pages, \(grantEntries) grant entries")
        }
        self.id = id
        do {
            pool = try MemoryRegion.memfd(name: "\(label)-d\(id)-pool", pages: poolPages)
            let tablePages = (grantEntries * GrantEntryTable.entrySize + pageSize - 1) / pageSize
            tableMemory = try MemoryRegion.memfd(name: "\(label)-d\(id)-grants", pages: tablePages)
            // Exactly the configured entries, not the page-rounded memory behind them.
            grants = GrantEntryTable(view: try tableMemory.view.slice(offset: 0, length: grantEntries * GrantEntryTable.entrySize))
        } catch {
            throw .system("memory for d\(id): \(error)", errno: ENOMEM)
        }
        frames = RunAllocator(count: poolPages)
        refs = RunAllocator(count: grantEntries - Int(GrantEntryTable.reservedEntries),
                            base: Int(GrantEntryTable.reservedEntries))
    }

    public var poolPages: Int { frames.capacity }

    /// The view of `count` pages from `frame`, if inside the pool.
    public func pages(at frame: UInt32, count: Int) -> SharedView? {
        try? pool.view.slice(offset: Int(frame) * pageSize, length: count * pageSize)
    }

    // MARK: Granting side

    /// Allocates `count` consecutive zeroed frames and grants each to `grantee`, through
    /// entries whose flags are clear.
    public func share(count: Int, with grantee: DomainID, writable: Bool) throws(PlatformError) -> (first: UInt32, refs: [GrantRef]) {
        guard let first = frames.allocate(count) else {
            throw .system("d\(id) has no \(count) free consecutive pages in its pool of \(poolPages)", errno: ENOMEM)
        }
        // An entry the domain wrote itself in its own table (a guest may) is not ours to
        // hand out: overwriting it would drop its grant, or the busy bits of a mapping.
        let grants = self.grants
        guard let units = refs.allocateScattered(count, where: { grants.flags(GrantRef($0)).isEmpty }) else {
            frames.free(first, count: count)
            throw .system("d\(id) has no \(count) free grant entries", errno: ENOSPC)
        }
        pool.view.fill(0, at: first * pageSize, length: count * pageSize)
        let granted = units.map { GrantRef($0) }
        for (i, ref) in granted.enumerated() {
            grants.grant(ref, to: grantee, frame: UInt32(first + i), readOnly: !writable)
        }
        shares[UInt32(first)] = granted
        return (UInt32(first), granted)
    }

    /// Ends access to the run shared from `first`, all or nothing: ``PlatformError/grantBusy(ref:)``
    /// while any page is mapped.
    public func endAccess(first: UInt32) throws(PlatformError) {
        guard let granted = shares[first] else {
            throw .invalidArgument("d\(id) has no shared pages starting at frame \(first); access already ended?")
        }
        if let busy = granted.first(where: { !grants.flags($0).intersection([.reading, .writing]).isEmpty }) {
            throw .grantBusy(ref: busy)
        }
        // Only the owner of this value sets busy bits, so a failure here means the domain
        // rewrote its own table meanwhile; its pages stay allocated.
        for ref in granted where !grants.endAccess(ref) { throw .grantBusy(ref: ref) }
        for ref in granted { refs.free(Int(ref)) }
        frames.free(Int(first), count: granted.count)
        shares[first] = nil
    }

    // MARK: Mapping side

    /// Validates and pins `refs` for `grantee` (all or nothing); returns their frames.
    public func acquire(_ wanted: [GrantRef], for grantee: DomainID, writable: Bool) throws(PlatformError) -> [UInt32] {
        var result: [UInt32] = []
        for (i, ref) in wanted.enumerated() {
            let frame: UInt32
            do throws(PlatformError) {
                frame = try grants.acquire(ref, grantee: grantee, writable: writable, granter: id)
            } catch {
                releasePins(wanted[0..<i], writable: writable)
                throw error
            }
            pin(ref, writable: writable)
            guard Int(frame) < poolPages else {
                releasePins(wanted[0...i], writable: writable)
                throw .grant(.badPage, ref: ref, domain: id, reason: "frame \(frame) is outside d\(id)'s \(poolPages) pages")
            }
            result.append(frame)
        }
        return result
    }

    /// Drops one pin per ref and clears the busy bits no mapping needs any more.
    public func releasePins<C: Collection<GrantRef>>(_ released: C, writable: Bool) {
        for ref in released {
            guard var p = pins[ref] else { continue }
            p.readers -= 1
            if writable { p.writers -= 1 }
            grants.clearBusy(ref, reading: p.readers == 0, writing: p.writers == 0)
            pins[ref] = p.readers == 0 ? nil : p
        }
    }

    func pin(_ ref: GrantRef, writable: Bool) {
        var p = pins[ref] ?? (0, 0)
        p.readers += 1
        if writable { p.writers += 1 }
        pins[ref] = p
    }

    /// Clears the busy bits a transient pin (a grant copy) set, unless a mapping holds them.
    func releaseTransient(_ ref: GrantRef, wrote: Bool) {
        let p = pins[ref]
        grants.clearBusy(ref, reading: p == nil, writing: wrote && (p?.writers ?? 0) == 0)
    }

    // MARK: Copy buffers

    /// Takes `pages` consecutive zeroed frames as a copy buffer; returns its id.
    public func allocateBuffer(pages: Int) throws(PlatformError) -> UInt32 {
        guard let first = frames.allocate(pages) else {
            throw .system("d\(id) has no \(pages) free consecutive pages", errno: ENOMEM)
        }
        pool.view.fill(0, at: first * pageSize, length: pages * pageSize)
        buffers[UInt32(first)] = pages
        return UInt32(first)
    }

    /// Returns a copy buffer's frames; false if `buffer` is not one.
    @discardableResult
    public func freeBuffer(_ buffer: UInt32) -> Bool {
        guard let pages = buffers.removeValue(forKey: buffer) else { return false }
        frames.free(Int(buffer), count: pages)
        return true
    }

    // MARK: Grant copy

    /// One grant copy with Xen's checks (GNTTABOP_copy) for `requester`; `domain` finds a
    /// domain by id. The grant ends are pinned only for the copy.
    public static func copy(_ segment: GrantCopySegment, by requester: DomainID,
                            domain: (DomainID) -> GrantDomain?) -> GrantStatus {
        let length = Int(segment.length)
        guard length > 0, length <= pageSize else { return .badCopyArgument }
        var pinned: [(GrantDomain, GrantRef, Bool)] = []
        defer { for (d, ref, wrote) in pinned { d.releaseTransient(ref, wrote: wrote) } }
        func resolve(_ end: GrantCopyEndpoint, writing: Bool) -> Result<SharedView, GrantStatus> {
            switch end {
            case let .grant(granter, ref, offset):
                guard let d = domain(granter) else { return .failure(.badDomain) }
                guard Int(offset) + length <= pageSize else { return .failure(.badCopyArgument) }
                let frame: UInt32
                do { frame = try d.grants.acquire(ref, grantee: requester, writable: writing, granter: granter) } catch {
                    if case let .grant(status, _, _, _) = error { return .failure(status) }
                    return .failure(.generalError)
                }
                pinned.append((d, ref, writing))
                guard let page = d.pages(at: frame, count: 1),
                      let bytes = try? page.slice(offset: Int(offset), length: length) else { return .failure(.badPage) }
                return .success(bytes)
            case let .local(buffer, offset):
                guard let d = domain(requester), let pages = d.buffers[buffer],
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
