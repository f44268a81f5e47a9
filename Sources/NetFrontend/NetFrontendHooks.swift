import Netif
import XenBus
import XenStore

/// The netif steps of the xenbus handshake (``XenbusFrontendHooks``), as `io/netif.h`
/// orders them for a frontend: the backend's features (the queue pairs it offers among
/// them) and the toolstack's `mac` and `mtu` at InitWait, rings, ports and our features
/// in initialise, the data path at Connected.
struct NetFrontendHooks: XenbusFrontendHooks {
    let core: NetFrontendCore
    let store: XenStoreClient

    func readBackend(_ backend: XenbusNodeReader, paths: XenbusDevicePaths) async throws -> NetFrontendLink {
        typealias Key = NetifBackendFeatures.Key
        let featureKeys = [Key.scatterGather, Key.gsoTCPv4, Key.gsoTCPv6, Key.ipv6ChecksumOffload, Key.rxCopy, Key.rxFlip,
                           Key.multicastControl, Key.dynamicMulticastControl, Key.splitEventChannels, Key.controlRing,
                           Key.maxQueues]
        let features: NetifBackendFeatures
        let vif: NetifVifSettings
        do {
            features = try NetifBackendFeatures(xenstore: try await read(featureKeys, from: backend))
            let own = XenbusNodeReader(store: store, path: paths.frontend)
            vif = try NetifVifSettings(xenstore: try await read([NetifVifSettings.Key.mac, NetifVifSettings.Key.mtu], from: own))
        } catch let error as NetifError {
            throw NetFrontendError.node(error)
        }
        guard features.rxCopy else { throw NetFrontendError.rxCopyNotOffered }
        let queues = try core.queueCount(offered: Int(features.maxQueues ?? 1))
        return NetFrontendLink(backend: features, vif: vif, queues: queues)
    }

    /// Keys go with Connected, as Linux's netfront writes them: Linux's netback leaves
    /// InitWait only for a Connected frontend (a frontend left Initialised waits forever).
    var stateWithKeys: XenbusState { .connected }

    func initialise(_ link: NetFrontendLink, paths: XenbusDevicePaths) async throws -> XenbusKeys {
        try core.prepare(backendDomain: paths.backendID, link: link).keys
    }

    func connect(_ backend: XenbusNodeReader, paths: XenbusDevicePaths) async throws {
        try core.start()
    }

    func disconnect(paths: XenbusDevicePaths, reason: String) async {
        core.disconnect(reason: reason)
    }

    /// The keys that exist among `keys`, as text.
    private func read(_ keys: [String], from node: XenbusNodeReader) async throws(XenbusError) -> [String: String] {
        var entries: [String: String] = [:]
        for key in keys {
            if let value = try await node.optionalString(key) { entries[key] = value }
        }
        return entries
    }
}
