import CXen
import Glibc
import Logging
import SharedMemory
import Synchronization
import XenPlatform

/// The mapping side of grants on real Xen, over libxengnttab (/dev/xen/gntdev): maps,
/// unmaps and grant-copies pages that other domains granted us.
///
/// One gntdev handle serves every thread: the kernel serialises its own state. Mappings
/// and copy buffers are tracked here so that a second unmap is GNTST_bad_handle, as on
/// Xen, and so that a copy can name a local buffer by id.
public final class LinuxGrantMapper: GrantMapper, @unchecked Sendable {
    // SAFETY (@unchecked): the handle is its own synchronised owner; `live` and `buffers`
    // are guarded by their locks; nothing else is mutable.
    let handle: LibxenHandle
    private let live = LiveTable<LiveMapping>()
    private let buffers = Mutex<CopyBuffers>(CopyBuffers())

    /// Most refs in one map: the default `limit` of Linux's gntdev module.
    public static let maxRefsPerMap = 64 * 1024

    struct LiveMapping: Sendable {
        var address: UInt
        var pages: Int
    }

    struct CopyBuffers {
        var next: UInt32 = 1
        var byID: [UInt32: CopyBuffer] = [:]
    }

    /// Opens /dev/xen/gntdev through libxengnttab.
    public init() throws(PlatformError) {
        handle = try LibxenHandle(.gnttab)
    }

    /// Closes the gntdev handle. Mappings still alive stay mapped until they are unmapped
    /// or dropped (the kernel keeps the device open for them); later calls fail with EBADF.
    public func close() {
        handle.close()
    }

    // MARK: Map and unmap

    public func map(_ refs: [GrantRef], from domain: DomainID, writable: Bool) throws(PlatformError) -> GrantMapping {
        guard !refs.isEmpty, refs.count <= Self.maxRefsPerMap else {
            throw .invalidArgument("map of \(refs.count) refs; 1...\(Self.maxRefsPerMap) allowed")
        }
        let h = try handle.pointer(for: "xengnttab_map_domain_grant_refs")
        var refArray = refs
        let mapped = refArray.withUnsafeMutableBufferPointer {
            LinuxCall.mapDomainGrantRefs(h, domain: domain, refs: $0, writable: writable)
        }
        guard let base = mapped.value else {
            throw Self.mapFailure(refs, from: domain, writable: writable, errno: mapped.errno) { probe($0, of: domain) }
        }
        let pages = refs.count
        let id = live.insert(LiveMapping(address: UInt(bitPattern: base), pages: pages))
        // Dropping the mapping without unmap() still unmaps it, exactly once: whoever takes
        // the entry out of `live` releases it.
        let region = MemoryRegion.adopting(base: base, length: pages * pageSize) { [handle, live] _, _ in
            guard let entry = live.remove(id) else { return }
            let errno = Self.release(entry, handle: handle)
            if errno != 0 {
                log.error("unmap of a dropped grant mapping failed", metadata: ["domain": "\(domain)", "pages": "\(pages)", "errno": "\(errno)"])
            }
        }
        return GrantMapping(region: region, domain: domain, refs: refs, writable: writable, handle: id)
    }

    public func unmap(_ mapping: GrantMapping) throws(PlatformError) {
        let address = UInt(bitPattern: mapping.view.baseAddress)
        guard let entry = live.remove(mapping.handle, matching: { $0.address == address }) else {
            throw .grant(.badHandle, ref: mapping.refs.first ?? 0, domain: mapping.domain,
                         reason: "mapping \(mapping.handle) is not live on this gntdev handle (unmapped already?)")
        }
        let errno = Self.release(entry, handle: handle)
        guard errno == 0 else {
            live.restore(mapping.handle, entry)
            throw .system("xengnttab_unmap(d\(mapping.domain), \(entry.pages) pages)", errno: errno)
        }
        // The entry is gone, so this only marks the region closed.
        mapping.region.close()
    }

    /// Unmaps a live mapping: through libxengnttab while the handle is open (munmap, then
    /// the gntdev slots), by munmap alone once it is closed (the kernel releases the grant
    /// when the last mapping of the closed device goes). Returns errno, 0 on success.
    private static func release(_ entry: LiveMapping, handle: LibxenHandle) -> Int32 {
        guard let base = UnsafeMutableRawPointer(bitPattern: entry.address) else { return EINVAL }
        if let h = try? handle.pointer(for: "xengnttab_unmap") {
            return LinuxCall.gnttabUnmap(h, base, pages: entry.pages).errno
        }
        return LinuxCall.munmap(base, pages: entry.pages).errno
    }

    /// Mappings made through this handle and not yet unmapped.
    public var liveMappings: Int { live.count }

    /// Why a map failed. gntdev answers every GNTST failure of the map hypercall with
    /// EINVAL, dropping the status; a one-byte read copy from each ref goes through the
    /// same grant checks in Xen (domain exists, ref in range, GTF_permit_access to us), so
    /// the first ref whose probe fails gives the status Xen gave the map. `probe` returns
    /// nil when it could not run at all.
    static func mapFailure(_ refs: [GrantRef], from domain: DomainID, writable: Bool, errno: Int32,
                           probe: (GrantRef) -> GrantStatus?) -> PlatformError {
        let call = "xengnttab_map_domain_grant_refs(d\(domain), \(refs.count) refs)"
        guard errno == EINVAL, let first = refs.first else { return .system(call, errno: errno) }
        for ref in refs {
            guard let status = probe(ref) else { return .system(call, errno: errno) }
            if status != .okay {
                return .grant(status, ref: ref, domain: domain,
                              reason: "\(call) failed with EINVAL; status from a one-byte read copy of the ref")
            }
        }
        // Every ref reads. Xen's _set_status refuses to write-pin a GTF_readonly entry with
        // GNTST_general_error, the one refusal a read cannot see.
        return .grant(.generalError, ref: first, domain: domain,
                      reason: writable
                          ? "\(call) writable failed with EINVAL though every ref reads: a read-only grant?"
                          : "\(call) failed with EINVAL though every ref reads")
    }

    /// Reads one byte of `ref` by grant copy and returns Xen's status for it, or nil when
    /// the copy could not be attempted.
    private func probe(_ ref: GrantRef, of domain: DomainID) -> GrantStatus? {
        guard let h = try? handle.pointer(for: "xengnttab_grant_copy") else { return nil }
        var byte: UInt8 = 0
        return withUnsafeMutableBytes(of: &byte) { raw -> GrantStatus? in
            guard let address = raw.baseAddress else { return nil }
            var op = GrantCopyPlan.foreignSource(domain: domain, ref: ref, offset: 0, into: address, length: 1)
            let r = withUnsafeMutablePointer(to: &op) { LinuxCall.grantCopy(h, UnsafeMutableBufferPointer(start: $0, count: 1)) }
            return r.failed ? nil : GrantStatus(gntst: op.status)
        }
    }

    // MARK: Copy

    public func registerCopyBuffer(pages: Int) throws(PlatformError) -> CopyBuffer {
        guard pages > 0, pages <= Int(Int32.max) / pageSize else {
            throw .invalidArgument("copy buffer of \(pages) pages")
        }
        // Ordinary page-aligned memory: gntdev pins it for the length of each copy. Faulted
        // in now: it is the queue's working memory while connected, so the backend's
        // memory is what it will be from the connect on, not a creep as pages are touched.
        let region: MemoryRegion
        do { region = try MemoryRegion.anonymous(pages: pages, populate: true) } catch {
            if case let .systemCall(call, errno) = error { throw .system(call, errno: errno) }
            throw .invalidArgument("copy buffer of \(pages) pages: \(error)")
        }
        return try buffers.withLock { (b: inout CopyBuffers) throws(PlatformError) -> CopyBuffer in
            guard b.next != 0 else { throw .unsupported("copy buffer ids are exhausted on this handle") }
            let buffer = CopyBuffer(region: region, id: b.next)
            b.byID[b.next] = buffer
            b.next &+= 1
            return buffer
        }
    }

    public func unregisterCopyBuffer(_ buffer: CopyBuffer) throws(PlatformError) {
        guard buffers.withLock({ $0.byID.removeValue(forKey: buffer.id) }) != nil else {
            throw .invalidArgument("copy buffer \(buffer.id) is not registered on this handle")
        }
        buffer.region.close()
    }

    public func copy(_ segments: UnsafeMutableBufferPointer<GrantCopySegment>) throws(PlatformError) {
        guard !segments.isEmpty else { return }
        let h = try handle.pointer(for: "xengnttab_grant_copy")
        try withUnsafeTemporaryAllocation(of: xengnttab_grant_copy_segment_t.self, capacity: segments.count) {
            (ops: UnsafeMutableBufferPointer<xengnttab_grant_copy_segment_t>) throws(PlatformError) in
            try withUnsafeTemporaryAllocation(of: Int.self, capacity: segments.count) {
                (owners: UnsafeMutableBufferPointer<Int>) throws(PlatformError) in
                // Buffers are never unregistered, so a snapshot (a retain, no copy) stays
                // valid and the lock is not held across the copy.
                let table = buffers.withLock { $0.byID }
                try GrantCopyPlan.perform(segments, buffers: table, ops: ops, owners: owners) {
                    (batch: UnsafeMutableBufferPointer<xengnttab_grant_copy_segment_t>) throws(PlatformError) in
                    let r = LinuxCall.grantCopy(h, batch)
                    guard !r.failed else {
                        throw .system("xengnttab_grant_copy(\(batch.count) segments)", errno: r.errno)
                    }
                }
            }
        }
    }
}
