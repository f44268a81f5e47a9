import Blkif
import XenBus

/// The blkif steps of the xenbus handshake (``XenbusFrontendHooks``), as Linux blkfront
/// takes them: features at InitWait, rings and keys in initialise, disk at Connected.
struct BlockFrontendHooks: XenbusFrontendHooks {
    let core: BlockFrontendCore
    let handle: UInt16

    func readBackend(_ backend: XenbusNodeReader, paths: XenbusDevicePaths) async throws -> BlkifBackendFeatures {
        typealias Key = BlkifBackendFeatures.Key
        let keys = [Key.flushCache, Key.barrier, Key.discard, Key.discardGranularity, Key.discardAlignment,
                    Key.discardSecure, Key.persistent, Key.maxIndirectSegments, Key.maxQueues, Key.maxRingPageOrder]
        return try BlkifBackendFeatures(xenstore: try await read(keys, from: backend))
    }

    func initialise(_ backend: BlkifBackendFeatures, paths: XenbusDevicePaths) async throws -> XenbusKeys {
        try core.prepare(backendDomain: paths.backendID, features: backend, handle: handle).keys
    }

    func connect(_ backend: XenbusNodeReader, paths: XenbusDevicePaths) async throws {
        typealias Key = BlkifDiskProperties.Key
        let properties = try BlkifDiskProperties(xenstore: try await read(
            [Key.sectors, Key.sectorSize, Key.physicalSectorSize, Key.info], from: backend))
        // Sizes in bytes (the NBD export's, the demo's) must fit 64 bits.
        guard properties.sectors512 <= UInt64.max / 512 else {
            throw BlockFrontendError.backendNode("\(backend.path(of: Key.sectors)) = \(properties.sectors512) 512-byte sectors is past 64-bit byte sizes")
        }
        // The features may have changed since InitWait only if the backend restarted,
        // and then we went through initialise again; read them once more for the record.
        let features = try await readBackend(backend, paths: paths)
        guard let connection = core.state.withLock({ $0.prepared }) else {
            throw BlockFrontendError.protocolViolation("backend connected before the frontend initialised")
        }
        let disk = BlockFrontendDisk(properties: properties, backend: features, ringPageOrder: connection.ringPageOrder,
                                     queues: connection.ringPages.count, segmentsPerRequest: connection.segmentsPerRequest,
                                     depth: connection.depth)
        try core.start(disk: disk)
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
