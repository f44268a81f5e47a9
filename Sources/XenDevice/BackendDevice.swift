import XenBus
import XenStore

/// What a device type plugs into ``BackendDaemon``: the xenbus hooks of one device node,
/// plus what the daemon asks of a device between handshakes.
public protocol BackendDevice: XenbusBackendHooks {
    /// Whether the device is connected (queues served) now.
    var isConnected: Bool { get }

    /// Off the data path, on the daemon's timer: housekeeping such as reporting suppressed
    /// guest log lines or publishing a resized disk. `store` is the daemon's connection.
    func housekeeping(store: XenStoreClient) async

    /// Called once, after the device's driver stopped: close what the device holds across
    /// connections (a backing store).
    func release()
}
