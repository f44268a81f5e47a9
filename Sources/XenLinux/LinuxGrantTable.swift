import CXen
import Glibc
import Logging
import SharedMemory
import XenPlatform

/// The granting side on real Xen, over libxengntshr (/dev/xen/gntalloc): the kernel
/// allocates zeroed pages, grants each to the grantee and maps them for us.
///
/// Ending access cannot report "still mapped". libxengntshr hands the grant refs back to
/// gntalloc as soon as the pages are shared, so unsharing is an munmap; when the last
/// mapping goes, gntalloc ends foreign access, and if the grantee still has a page mapped
/// Linux defers the revocation and keeps the page out of reuse until the grantee unmaps.
/// So ``endAccess(_:)`` never fails with ``PlatformError/grantBusy(ref:)`` here: it
/// always removes our mapping, and the page stays the grantee's until it lets go. This is
/// safe (no page is reused while granted) but weaker than XenLocal, which refuses.
public final class LinuxGrantTable: GrantTable, @unchecked Sendable {
    // SAFETY (@unchecked): the handle is its own synchronised owner and `live` is guarded
    // by its lock; nothing else is mutable.
    let handle: LibxenHandle
    private let live = LiveTable<LiveShare>()

    /// Most pages in one share: gntalloc's default `limit` of grants per process.
    public static let maxPagesPerShare = 1024

    struct LiveShare: Sendable {
        var address: UInt
        var pages: Int
    }

    /// Opens /dev/xen/gntalloc through libxengntshr.
    public init() throws(PlatformError) {
        handle = try LibxenHandle(.gntshr)
    }

    /// Closes the gntalloc handle. Pages still shared stay shared until ended or dropped;
    /// later calls fail with EBADF.
    public func close() {
        handle.close()
    }

    public func share(pages count: Int, with grantee: DomainID, writable: Bool) throws(PlatformError) -> SharedPages {
        guard count > 0, count <= Self.maxPagesPerShare else {
            throw .invalidArgument("share of \(count) pages; 1...\(Self.maxPagesPerShare) allowed")
        }
        let h = try handle.pointer(for: "xengntshr_share_pages")
        var refs = [GrantRef](repeating: 0, count: count)
        let shared = refs.withUnsafeMutableBufferPointer {
            LinuxCall.sharePages(h, grantee: grantee, refs: $0, writable: writable)
        }
        guard let base = shared.value else {
            throw .system("xengntshr_share_pages(d\(grantee), \(count) pages, \(writable ? "rw" : "ro"))", errno: shared.errno)
        }
        let token = live.insert(LiveShare(address: UInt(bitPattern: base), pages: count))
        // Dropping the pages without endAccess still unshares them, exactly once.
        let region = MemoryRegion.adopting(base: base, length: count * pageSize) { [handle, live] _, _ in
            guard let entry = live.remove(token) else { return }
            let errno = Self.release(entry, handle: handle)
            if errno != 0 {
                log.error("unshare of dropped pages failed", metadata: ["grantee": "\(grantee)", "pages": "\(count)", "errno": "\(errno)"])
            }
        }
        return SharedPages(region: region, refs: refs, grantee: grantee, writable: writable, token: token)
    }

    /// Unshares the pages: our mapping goes now; the grant ends when the grantee has
    /// unmapped (see the type's note: "still mapped" is not observable through gntalloc).
    public func endAccess(_ pages: SharedPages) throws(PlatformError) {
        let address = UInt(bitPattern: pages.view.baseAddress)
        guard let entry = live.remove(pages.token, matching: { $0.address == address }) else {
            throw .invalidArgument("pages \(pages.token) (refs \(pages.refs)) are not shared through this gntalloc handle (ended already?)")
        }
        let errno = Self.release(entry, handle: handle)
        guard errno == 0 else {
            live.restore(pages.token, entry)
            throw .system("xengntshr_unshare(\(entry.pages) pages granted to d\(pages.grantee))", errno: errno)
        }
        pages.region.close()
    }

    /// gntalloc defers the end of a grant still mapped instead of refusing (the type's note).
    public var reportsStillMapped: Bool { false }

    /// Shares made through this handle and not yet ended.
    public var liveShares: Int { live.count }

    /// xengntshr_unshare is an munmap, which needs no handle state, so it runs the same
    /// way before and after close. Returns errno, 0 on success.
    private static func release(_ entry: LiveShare, handle: LibxenHandle) -> Int32 {
        guard let base = UnsafeMutableRawPointer(bitPattern: entry.address) else { return EINVAL }
        if let h = try? handle.pointer(for: "xengntshr_unshare") {
            return LinuxCall.unshare(h, base, pages: entry.pages).errno
        }
        return LinuxCall.munmap(base, pages: entry.pages).errno
    }
}
