import XenPlatform

/// The grant side of a ``LinuxPlatform`` whose device did not open: every call throws the
/// open's error, which names the device and errno.
final class UnopenedGrants: GrantTable, GrantMapper, Sendable {
    let error: PlatformError

    init(_ error: PlatformError) { self.error = error }

    func share(pages count: Int, with grantee: DomainID, writable: Bool) throws(PlatformError) -> SharedPages { throw error }
    func endAccess(_ pages: SharedPages) throws(PlatformError) { throw error }
    func map(_ refs: [GrantRef], from domain: DomainID, writable: Bool) throws(PlatformError) -> GrantMapping { throw error }
    func unmap(_ mapping: GrantMapping) throws(PlatformError) { throw error }
    func registerCopyBuffer(pages: Int) throws(PlatformError) -> CopyBuffer { throw error }
    func unregisterCopyBuffer(_ buffer: CopyBuffer) throws(PlatformError) { throw error }
    func copy(_ segments: UnsafeMutableBufferPointer<GrantCopySegment>) throws(PlatformError) { throw error }
}
