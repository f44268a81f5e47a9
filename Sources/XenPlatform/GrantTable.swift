import SharedMemory

/// Pages of our own memory that we have granted to another domain: the frontend's side of
/// a grant (ring pages, data buffers, persistent grants).
public final class SharedPages: @unchecked Sendable {
    /// The pages, contiguous in our address space.
    public let region: MemoryRegion
    /// One grant reference per page, in order.
    public let refs: [GrantRef]
    /// The domain the pages are granted to.
    public let grantee: DomainID
    /// Whether the grantee may write.
    public let writable: Bool
    /// Platform-private bookkeeping (frames, handles).
    public let token: UInt64

    public init(region: MemoryRegion, refs: [GrantRef], grantee: DomainID, writable: Bool, token: UInt64 = 0) {
        self.region = region
        self.refs = refs
        self.grantee = grantee
        self.writable = writable
        self.token = token
    }

    /// A view of the pages.
    public var view: SharedView { region.view }
}

/// The granting side of grant tables (grant_table.h: GNTTABOP / gntshr): a frontend shares
/// its own pages with a backend domain and later ends that access.
public protocol GrantTable: AnyObject, Sendable {
    /// Allocates `count` zeroed pages of our memory and grants each to `grantee`.
    func share(pages count: Int, with grantee: DomainID, writable: Bool) throws(PlatformError) -> SharedPages
    /// Ends access to every page and frees them. Where the platform can tell (the local
    /// hypervisor, the doubles), fails with ``PlatformError/grantBusy(ref:)``, changing
    /// nothing, while the grantee still has any of them mapped; Linux's gntalloc cannot
    /// tell, and instead keeps the page out of reuse until the grantee unmaps.
    func endAccess(_ pages: SharedPages) throws(PlatformError)
    /// Whether ``endAccess(_:)`` reports a page the grantee still maps (refusing with
    /// ``PlatformError/grantBusy(ref:)``); false where it cannot tell (Linux's gntalloc).
    var reportsStillMapped: Bool { get }
}

extension GrantTable {
    public var reportsStillMapped: Bool { true }
}
