import XenPlatform
import XenStore

/// Network interfaces, attached as libxl's `libxl__set_xenstore_nic` and
/// `libxl__device_generic_add` lay them out: `/local/domain/0/backend/vif/DOMID/DEVID` and
/// `/local/domain/DOMID/device/vif/DEVID`, both in XenbusStateInitialising. Keys: io/netif.h,
/// Protocols/netif-xenstore.tsv.
extension LocalToolstack {
    /// Gives every interface a device id and a MAC as xl does for a domain's vif list: the
    /// id is the interface's index in the list unless `devid=` says otherwise; a missing
    /// MAC is drawn in Xen's OUI. Two interfaces with one id, or a backend other than dom0,
    /// are refused.
    public static func resolve(_ nics: [VifSpec]) throws(DeviceSpecError) -> [VifSpec] {
        var generator = SystemRandomNumberGenerator()
        return try resolve(nics, using: &generator)
    }

    /// `resolve(_:)` with the MAC source given (tests seed it).
    public static func resolve<G: RandomNumberGenerator>(_ nics: [VifSpec], using generator: inout G) throws(DeviceSpecError) -> [VifSpec] {
        var taken: Set<UInt32> = []
        var out = nics
        for i in out.indices {
            try checkBackend(out[i].backendDomain)
            let id = out[i].devid ?? UInt32(i)
            guard taken.insert(id).inserted else { throw .duplicateDeviceID(kind: "vif", devid: id) }
            out[i].devid = id
            if out[i].mac == nil { out[i].mac = VifSpec.randomMAC(using: &generator) }
        }
        return out
    }

    /// Attaches `nic` to a running domain, as `xl network-attach` does: without `devid=`
    /// it takes one more than the highest id the domain has (libxl's next-id rule). Under
    /// ``HotplugPolicy/run`` the backend is waited for and the script run `online`; if that
    /// fails, the device is unplugged and its nodes removed before the error is rethrown.
    public func attachNic(_ nic: VifSpec, to domain: DomainID, hotplug: HotplugPolicy = .run) async throws {
        let store = try platform.connectXenStore()
        defer { store.close() }
        var nic = nic
        if nic.devid == nil {
            let ids = try await store.withTransaction { tx in try await Self.children("/local/domain/\(domain)/device/vif", tx) }
            nic.devid = ids.compactMap { UInt32($0) }.max().map { $0 + 1 } ?? 0
        }
        guard let resolved = try Self.resolve([nic]).first, let devid = resolved.devid else { return }
        if hotplug == .run { try checkScripts([resolved]) }
        try await attachNic(resolved, to: domain, store: store)
        guard hotplug == .run else { return }
        do {
            try await plugVif(domain: domain, devid: devid, store: store)
        } catch {
            let device = Self.vifName(domain: domain, devid: devid)
            logger.error("\(device): \(error); removing it")
            do {
                try await unplugVif(domain: domain, devid: devid, hotplug: hotplug, store: store)
            } catch let teardown {
                logger.error("\(device) removal: \(teardown)")
            }
            try? await store.withTransaction { tx in
                for path in [Self.backendPath(kind: "vif", frontend: domain, device: devid),
                             Self.frontendPath(kind: "vif", frontend: domain, device: devid)] where try await Self.exists(path, tx) {
                    try await tx.rm(path)
                }
            }
            throw error
        }
    }

    func attachNic(_ nic: VifSpec, to domain: DomainID, store: XenStoreClient) async throws {
        guard let devid = nic.devid, let mac = nic.mac else {
            throw PlatformError.invalidArgument("vif without devid or mac: resolve it first")
        }
        let macText = VifSpec.format(mac: mac)
        var backendKeys: [(String, String)] = [
            ("frontend-id", "\(domain)"),
            ("online", "1"),
            ("state", "1"),
            ("mac", macText),
            ("bridge", nic.bridge),
            ("handle", "\(devid)"),
            ("type", "vif"),
            // Written whatever the policy, as libxl does: the remove half reads it back.
            ("script", scriptPath(for: nic)),
        ]
        if let rate = nic.rate { backendKeys.append(("rate", rate.xenstoreValue)) }
        if let ip = nic.ip { backendKeys.append(("ip", ip)) }
        if let gateway = nic.gatewayDevice { backendKeys.append(("gatewaydev", gateway)) }
        if let name = nic.vifName { backendKeys.append(("vifname", name)) }
        var frontendKeys: [(String, String)] = [
            ("backend-id", "0"),
            ("state", "1"),
            ("handle", "\(devid)"),
            ("mac", macText),
            ("trusted", nic.trusted ? "1" : "0"),
        ]
        if let mtu = nic.mtu {
            backendKeys.append(("mtu", "\(mtu)"))
            frontendKeys.append(("mtu", "\(mtu)"))
        }
        try await Self.addDevice(kind: "vif", domain: domain, device: devid, backendKeys: backendKeys, frontendKeys: frontendKeys, store: store)
    }
}
