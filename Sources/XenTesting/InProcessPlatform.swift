import SharedMemory
import XenPlatform
import XenStore

/// One domain's view of an ``InProcessHypervisor``: the ``Platform`` a device under test
/// is given. Every call is checked against this domain's id, which only the hypervisor
/// chose (``InProcessHypervisor/platform(for:)``).
public final class InProcessPlatform: Platform, GrantTable, GrantMapper, Sendable {
    /// The hypervisor this domain lives in.
    public let hypervisor: InProcessHypervisor
    public let domainID: DomainID

    init(hypervisor: InProcessHypervisor, domainID: DomainID) {
        self.hypervisor = hypervisor
        self.domainID = domainID
    }

    public var grantTable: any GrantTable { self }
    public var grantMapper: any GrantMapper { self }

    public func openEventChannel() throws(PlatformError) -> any EventChannel {
        try openInProcessEventChannel()
    }

    /// ``openEventChannel()`` with its concrete type.
    public func openInProcessEventChannel() throws(PlatformError) -> InProcessEventChannel {
        let (id, fd) = try hypervisor.openEventHandle(for: domainID)
        return InProcessEventChannel(hypervisor: hypervisor, domainID: domainID, handle: id, fileDescriptor: fd)
    }

    /// A connection to the embedded xenstored acting as this domain: unprivileged for a
    /// domU, relative paths under `/local/domain/<id>`.
    public func connectXenStore() throws(PlatformError) -> XenStoreClient {
        try hypervisor.connectXenStore(as: .domain(domainID))
    }

    // MARK: GrantTable

    public func share(pages count: Int, with grantee: DomainID, writable: Bool) throws(PlatformError) -> SharedPages {
        try hypervisor.share(from: domainID, pages: count, with: grantee, writable: writable)
    }

    public func endAccess(_ pages: SharedPages) throws(PlatformError) {
        try hypervisor.endAccess(from: domainID, pages)
    }

    // MARK: GrantMapper

    public func map(_ refs: [GrantRef], from domain: DomainID, writable: Bool) throws(PlatformError) -> GrantMapping {
        try hypervisor.map(by: domainID, refs, from: domain, writable: writable)
    }

    public func unmap(_ mapping: GrantMapping) throws(PlatformError) {
        try hypervisor.takeUnmapFault(mapping)
        // Our view goes first, so nothing here can touch the page once its busy bits clear.
        mapping.region.close()
        do {
            try hypervisor.unmap(by: domainID, handle: mapping.handle)
        } catch {
            if case let .grant(status, _, _, reason) = error {
                throw .grant(status, ref: mapping.refs.first ?? 0, domain: mapping.domain, reason: reason)
            }
            throw error
        }
    }

    public func registerCopyBuffer(pages: Int) throws(PlatformError) -> CopyBuffer {
        try hypervisor.registerCopyBuffer(for: domainID, pages: pages)
    }

    public func unregisterCopyBuffer(_ buffer: CopyBuffer) throws(PlatformError) {
        try hypervisor.unregisterCopyBuffer(for: domainID, buffer)
    }

    public func copy(_ segments: UnsafeMutableBufferPointer<GrantCopySegment>) throws(PlatformError) {
        try hypervisor.copy(by: domainID, segments)
    }
}
