import XenPlatform
import XenStore

/// Network interfaces, attached as libxl's `libxl__set_xenstore_nic` and
/// `libxl__device_generic_add` lay them out: `/local/domain/0/backend/vif/DOMID/DEVID` and
/// `/local/domain/DOMID/device/vif/DEVID`, both in XenbusStateInitialising. Keys: io/netif.h,
/// Protocols/netif-xenstore.tsv.
extension LocalToolstack {
    /// Gives every interface a device id and a MAC: explicit `devid=` values first, then
    /// the lowest free ids in list order (xl's "lowest index available"); a missing MAC is
    /// drawn in Xen's OUI. Two interfaces asking for one id, or a backend other than dom0,
    /// are refused.
    public static func resolve(_ nics: [VifSpec]) throws(DeviceSpecError) -> [VifSpec] {
        var generator = SystemRandomNumberGenerator()
        return try resolve(nics, using: &generator)
    }

    /// `resolve(_:)` with the MAC source given (tests seed it).
    public static func resolve<G: RandomNumberGenerator>(_ nics: [VifSpec], using generator: inout G) throws(DeviceSpecError) -> [VifSpec] {
        var taken: Set<UInt32> = []
        for nic in nics {
            try checkBackend(nic.backendDomain)
            if let id = nic.devid, !taken.insert(id).inserted { throw .duplicateDeviceID(kind: "vif", devid: id) }
        }
        var next: UInt32 = 0
        var out = nics
        for i in out.indices {
            if out[i].devid == nil {
                while taken.contains(next) { next += 1 }
                out[i].devid = next
                taken.insert(next)
            }
            if out[i].mac == nil { out[i].mac = VifSpec.randomMAC(using: &generator) }
        }
        return out
    }

    /// Attaches `nic` to domain `domain` in one transaction (retried on EAGAIN).
    public func attachNic(_ nic: VifSpec, to domain: DomainID) async throws {
        guard let resolved = try Self.resolve([nic]).first else { return }
        let store = try platform.connectXenStore()
        defer { store.close() }
        try await attachNic(resolved, to: domain, store: store)
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
        ]
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
