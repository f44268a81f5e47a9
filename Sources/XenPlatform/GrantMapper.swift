import SharedMemory

/// Foreign pages mapped into our address space by grant reference: the backend's side of
/// a grant. Unmap through the ``GrantMapper`` that made it.
public final class GrantMapping: @unchecked Sendable {
    /// The mapped pages, contiguous in our address space, one per ref.
    public let region: MemoryRegion
    /// The granting domain.
    public let domain: DomainID
    /// The refs, in page order.
    public let refs: [GrantRef]
    /// Whether the mapping is writable.
    public let writable: Bool
    /// Platform-private handle for the unmap.
    public let handle: UInt64

    public init(region: MemoryRegion, domain: DomainID, refs: [GrantRef], writable: Bool, handle: UInt64) {
        self.region = region
        self.domain = domain
        self.refs = refs
        self.writable = writable
        self.handle = handle
    }

    /// A view of the mapped pages.
    public var view: SharedView { region.view }
}

/// Local memory registered for grant copies (on Xen: ordinary memory; on the local
/// hypervisor: pages of our own domain, which the hypervisor copies into and out of).
public final class CopyBuffer: @unchecked Sendable {
    /// The buffer's memory.
    public let region: MemoryRegion
    /// The id segments use to name this buffer.
    public let id: UInt32

    public init(region: MemoryRegion, id: UInt32) {
        self.region = region
        self.id = id
    }

    /// A view of the buffer.
    public var view: SharedView { region.view }
}

/// One end of a grant copy (grant_table.h: gnttab_copy source/dest).
public enum GrantCopyEndpoint: Sendable, Equatable {
    /// Bytes of a page that `domain` granted us, at `offset` within the page.
    case grant(domain: DomainID, ref: GrantRef, offset: UInt16)
    /// Bytes of one of our registered ``CopyBuffer``s, at `offset`.
    case local(buffer: UInt32, offset: Int)
}

/// One grant copy and, after ``GrantMapper/copy(_:)``, its outcome.
public struct GrantCopySegment: Sendable, Equatable {
    public var source: GrantCopyEndpoint
    public var destination: GrantCopyEndpoint
    /// Bytes to copy; a grant end may not cross its page.
    public var length: UInt16
    /// Set by the copy: okay, or the status Xen would give.
    public var status: GrantStatus

    public init(source: GrantCopyEndpoint, destination: GrantCopyEndpoint, length: UInt16) {
        self.source = source
        self.destination = destination
        self.length = length
        self.status = .generalError
    }
}

/// The mapping side of grant tables (grant_table.h: GNTTABOP_map_grant_ref, unmap, copy;
/// libxengnttab): a backend reaches pages a frontend granted it.
public protocol GrantMapper: AnyObject, Sendable {
    /// Maps `refs` of `domain`, contiguously, read-write or read-only. All or nothing.
    func map(_ refs: [GrantRef], from domain: DomainID, writable: Bool) throws(PlatformError) -> GrantMapping
    /// Unmaps, clearing the grantor's busy bits. A second unmap fails with GNTST_bad_handle.
    func unmap(_ mapping: GrantMapping) throws(PlatformError)
    /// Allocates and registers `pages` pages of local memory for copies.
    func registerCopyBuffer(pages: Int) throws(PlatformError) -> CopyBuffer
    /// Releases a buffer from ``registerCopyBuffer(pages:)``; its id no longer resolves and
    /// its memory must not be used afterwards.
    func unregisterCopyBuffer(_ buffer: CopyBuffer) throws(PlatformError)
    /// Performs every copy, setting each segment's status; one bad segment does not stop
    /// the others. Throws only if the batch could not be attempted at all.
    func copy(_ segments: UnsafeMutableBufferPointer<GrantCopySegment>) throws(PlatformError)
}
