import Glibc
import XenPlatform
import XenStore

/// Virtual block devices, attached as libxl's `libxl__device_disk_add` and
/// `libxl__device_generic_add` do: one transaction writes the backend directory
/// `/local/domain/0/backend/vbd/DOMID/DEVID` (dom0's, readable by the guest) and the
/// frontend directory `/local/domain/DOMID/device/vbd/DEVID` (the guest's, readable by dom0),
/// both in XenbusStateInitialising. Keys and writers: io/blkif.h, Protocols/blkif-xenstore.tsv.
extension LocalToolstack {
    /// The backend directory of a device (`kind` is `vbd`, `vif`, ...), as libxl names it.
    public static func backendPath(kind: String, backend: DomainID = 0, frontend: DomainID, device: UInt32) -> String {
        "/local/domain/\(backend)/backend/\(kind)/\(frontend)/\(device)"
    }

    /// The frontend directory of a device, as libxl names it.
    public static func frontendPath(kind: String, frontend: DomainID, device: UInt32) -> String {
        "/local/domain/\(frontend)/device/\(kind)/\(device)"
    }

    /// Creates domain `name` with `disks` and `nics`, as `xl create` does. The specs are
    /// checked together first (distinct device ids, dom0 backends and, under
    /// ``HotplugPolicy/run``, executable scripts), so a bad set creates nothing. Every
    /// device's nodes are written, then each vif's backend is waited for and its script run
    /// `online` (``HotplugPolicy``). If anything then fails (a disk's target missing, a
    /// backend that never reaches InitWait, a script that fails), the domain is torn down
    /// as `destroy` does, scripts run `offline` included, before the error is rethrown.
    /// Interfaces without `mac=` or `devid=` get them as `resolve(_:)` assigns.
    public func createDomain(name: String, disks: [DiskSpec], nics: [VifSpec] = [], hotplug: HotplugPolicy = .run) async throws -> DomainID {
        try checkTogether(disks)
        let nics = try Self.resolve(nics)
        if hotplug == .run { try checkScripts(nics) }
        let id = try await createDomain(name: name)
        do {
            let store = try platform.connectXenStore()
            defer { store.close() }
            for disk in disks { try await attachDisk(disk, to: id, store: store) }
            for nic in nics { try await attachNic(nic, to: id, store: store) }
            if hotplug == .run {
                for nic in nics { try await plugVif(domain: id, devid: nic.devid ?? 0, store: store) }
            }
        } catch {
            logger.error("domain \(name) (\(id)): \(error); tearing it down")
            do { try await destroy(id: id, hotplug: hotplug) } catch let teardown {
                logger.error("domain \(name) (\(id)) teardown: \(teardown)")
            }
            throw error
        }
        return id
    }

    /// Attaches `disk` to domain `domain`: checks the target, then writes both directories
    /// in one transaction (retried on EAGAIN).
    public func attachDisk(_ disk: DiskSpec, to domain: DomainID) async throws {
        try checkTogether([disk])
        let store = try platform.connectXenStore()
        defer { store.close() }
        try await attachDisk(disk, to: domain, store: store)
    }

    /// What `xl destroy` does: each vif's backend is closed and its script run `offline`
    /// (``HotplugPolicy``), then the domain's backend directories are removed, then the
    /// domain (the hypervisor removes its home `/local/domain/ID` with it). The domain goes
    /// even if a script failed or its backend directories could not be removed; the first
    /// such error is rethrown afterwards.
    public func destroy(name: String, hotplug: HotplugPolicy = .run) async throws {
        guard let d = try platform.listDomains().first(where: { $0.name == name }), d.id != 0 else {
            throw PlatformError.invalidArgument("no domain named '\(name)'")
        }
        try await destroy(id: d.id, hotplug: hotplug)
    }

    func destroy(id: DomainID, hotplug: HotplugPolicy) async throws {
        var cleanup: (any Error)?
        do {
            let store = try platform.connectXenStore()
            defer { store.close() }
            let vifs = try await store.withTransaction { tx in
                try await Self.children(Self.backendPath(kind: "vif", frontend: id, device: 0).dropLastComponent(), tx)
            }
            for devid in vifs.compactMap({ UInt32($0) }).sorted() {
                // Every vif gets its offline run, whatever an earlier one did.
                do { try await unplugVif(domain: id, devid: devid, hotplug: hotplug, store: store) } catch {
                    logger.error("\(Self.vifName(domain: id, devid: devid)): \(error)")
                    cleanup = cleanup ?? error
                }
            }
        } catch { cleanup = cleanup ?? error }
        do { try await removeBackends(of: id) } catch { cleanup = cleanup ?? error }
        try platform.destroyDomain(id)
        if let cleanup { throw cleanup }
    }

    /// Removes `/local/domain/0/backend/*/DOMID`, and a kind's directory left empty by that,
    /// as libxl's path cleanup does on destroy.
    public func removeBackends(of domain: DomainID) async throws {
        let store = try platform.connectXenStore()
        defer { store.close() }
        let root = "/local/domain/0/backend"
        try await store.withTransaction { tx in
            for kind in try await Self.children(root, tx) {
                let kindPath = root + "/" + kind
                let kindChildren = try await Self.children(kindPath, tx)
                guard kindChildren.contains("\(domain)") else { continue }
                try await tx.rm(kindPath + "/\(domain)")
                if kindChildren.count == 1 { try await tx.rm(kindPath) }
            }
        }
    }

    /// The backend's `type` for a target: `phy` for a block device, `file` for a regular
    /// file; anything else, or a path that cannot be examined, is an error naming it.
    public static func backendType(of target: String) throws(DeviceSpecError) -> String {
        var st = stat()
        guard stat(target, &st) == 0 else { throw .targetUnavailable(path: target, errno: errno) }
        switch st.st_mode & S_IFMT {
        case S_IFBLK: return "phy"
        case S_IFREG: return "file"
        case S_IFDIR: throw .targetNotDisk(path: target, kind: "directory")
        case S_IFCHR: throw .targetNotDisk(path: target, kind: "character device")
        case S_IFIFO: throw .targetNotDisk(path: target, kind: "fifo")
        case S_IFSOCK: throw .targetNotDisk(path: target, kind: "socket")
        default: throw .targetNotDisk(path: target, kind: "special file")
        }
    }

    /// Checks that need nothing created: no two disks share a virtual device number, and
    /// every backend is dom0 (driver domains are not set up by the local toolstack).
    func checkTogether(_ disks: [DiskSpec]) throws(DeviceSpecError) {
        for disk in disks { try Self.checkBackend(disk.backendDomain) }
        var seen: [UInt32: String] = [:]
        for disk in disks {
            if let other = seen[disk.vdev.number] {
                throw .duplicateVirtualDevice(vdev: disk.vdev.name, number: disk.vdev.number, other: other)
            }
            seen[disk.vdev.number] = disk.vdev.name
        }
    }

    /// Driver domains are not set up by the local toolstack: every backend is dom0.
    static func checkBackend(_ name: String?) throws(DeviceSpecError) {
        if let name, name != "0", name != "Domain-0" {
            throw .unsupported(DeviceSpecToken(text: "backend=" + name, index: 0, offset: 0), parameter: "backend=\(name)",
                               reason: "the local toolstack attaches devices to dom0's backends only")
        }
    }

    func attachDisk(_ disk: DiskSpec, to domain: DomainID, store: XenStoreClient) async throws {
        let type = try Self.backendType(of: disk.target)
        let device = disk.vdev.number
        var backendKeys: [(String, String)] = [
            ("params", disk.target),
            ("frontend-id", "\(domain)"),
            ("online", "1"),
            ("removable", disk.removable ? "1" : "0"),
            ("bootable", "1"),
            ("state", "1"),
            ("dev", disk.vdev.name),
            ("type", type),
            ("mode", disk.readWrite ? "w" : "r"),
            ("device-type", disk.deviceType.rawValue),
            ("discard-enable", disk.discard ? "1" : "0"),
        ]
        if disk.directIOSafe { backendKeys.append(("direct-io-safe", "1")) }
        let frontendKeys: [(String, String)] = [
            ("backend-id", "0"),
            ("state", "1"),
            ("virtual-device", "\(device)"),
            ("device-type", disk.deviceType.rawValue),
            ("trusted", disk.trusted ? "1" : "0"),
        ]
        try await Self.addDevice(kind: "vbd", domain: domain, device: device, backendKeys: backendKeys, frontendKeys: frontendKeys, store: store)
    }

    /// `libxl__device_generic_add` for a dom0 backend: in one transaction (retried on
    /// EAGAIN), the frontend directory, the guest's with read for dom0, and the backend
    /// directory, dom0's with read for the guest, each with its keys, each pointing at the
    /// other (`backend`, `frontend`).
    static func addDevice(kind: String, domain: DomainID, device: UInt32, backendKeys: [(String, String)],
                          frontendKeys: [(String, String)], store: XenStoreClient) async throws {
        let frontend = frontendPath(kind: kind, frontend: domain, device: device)
        let backend = backendPath(kind: kind, frontend: domain, device: device)
        let frontendPermissions = [XenStorePermission(domid: domain, access: .none), XenStorePermission(domid: 0, access: .read)]
        let backendPermissions = [XenStorePermission(domid: 0, access: .none), XenStorePermission(domid: domain, access: .read)]
        try await store.withTransaction { tx in
            // Nodes for a domain that does not exist would be orphans no destroy removes.
            guard try await exists("/local/domain/\(domain)", tx) else {
                throw PlatformError.invalidArgument("no domain \(domain)")
            }
            // libxl refuses a device id already in use by the guest.
            if try await exists(frontend, tx) { throw DeviceSpecError.deviceExists(path: frontend) }
            try await tx.mkdir(frontend)
            try await tx.setPermissions(frontend, frontendPermissions)
            for (key, value) in [("backend", backend)] + frontendKeys {
                try await tx.write(frontend + "/" + key, value)
                try await tx.setPermissions(frontend + "/" + key, frontendPermissions)
            }
            // A backend directory left by an earlier domain with this id is stale.
            if try await exists(backend, tx) { try await tx.rm(backend) }
            try await tx.mkdir(backend)
            try await tx.setPermissions(backend, backendPermissions)
            for (key, value) in [("frontend", frontend)] + backendKeys { try await tx.write(backend + "/" + key, value) }
        }
    }

    static func exists(_ path: String, _ tx: XenStoreTransaction) async throws(XenStoreError) -> Bool {
        do {
            _ = try await tx.read(path)
            return true
        } catch .daemon(.enoent) {
            return false
        }
    }

    static func children(_ path: String, _ tx: XenStoreTransaction) async throws(XenStoreError) -> [String] {
        do {
            return try await tx.directory(path)
        } catch .daemon(.enoent) {
            return []
        }
    }
}

extension String {
    /// The path without its last `/component`.
    func dropLastComponent() -> String {
        guard let slash = lastIndex(of: "/") else { return self }
        return String(self[..<slash])
    }
}
