import XenStore

/// Everything a device needs from Xen, or from something that behaves like it: our domain
/// id, grants both ways, event channels and xenstore. Devices take a Platform and never
/// know whether it is real Xen (XenLinux), the local hypervisor (XenLocal) or an
/// in-process double (XenTesting).
public protocol Platform: AnyObject, Sendable {
    /// The domain this process acts as.
    var domainID: DomainID { get }
    /// Sharing our pages (frontends).
    var grantTable: any GrantTable { get }
    /// Reaching pages others shared with us (backends).
    var grantMapper: any GrantMapper { get }
    /// Opens a new event-channel handle (one per worker thread).
    func openEventChannel() throws(PlatformError) -> any EventChannel
    /// A new xenstore connection acting as this domain.
    func connectXenStore() throws(PlatformError) -> XenStoreClient
}
