import Logging
import XenPlatform
import XenStore

/// What `xl create` and `xl destroy` do, for the local hypervisor: the hypervisor makes
/// the domain, the toolstack lays out its xenstore home, attaches its devices and runs
/// their hotplug scripts.
public struct LocalToolstack: Sendable {
    /// Dom0's platform (only dom0 may create and destroy domains).
    public let platform: LocalPlatform
    /// Where a hotplug script named without a path is found (libxl's script directory,
    /// /etc/xen/scripts on Xen): see ``defaultScriptDirectory(environment:executable:)``.
    public let scriptDirectory: String
    /// How long the toolstack waits for backends and scripts.
    public var timeouts: HotplugTimeouts
    /// Where the toolstack says what it waited for and what it skipped.
    public var logger: Logger
    /// The network namespace hotplug scripts run in (its file, as /var/run/netns/NAME);
    /// nil: the toolstack's own. For a net backend whose TAP devices live in a namespace
    /// other than the toolstack's, so the script's `ip` commands find them; only the
    /// script's own thread enters it.
    public var scriptNetworkNamespace: String?

    /// A toolstack for dom0's `platform`; `scriptDirectory` nil picks the default.
    public init(platform: LocalPlatform, scriptDirectory: String? = nil, timeouts: HotplugTimeouts = HotplugTimeouts(),
                logger: Logger = Logger(label: "xensplit.toolstack")) {
        self.platform = platform
        self.scriptDirectory = scriptDirectory ?? Self.defaultScriptDirectory()
        self.timeouts = timeouts
        self.logger = logger
    }

    /// Creates domain `name` and its xenstore home `/local/domain/ID`, laid out as libxl
    /// does: the home and `device`, `control` readable by the domain; `data`, `drivers`,
    /// `feature`, `attr` and `error` its own.
    public func createDomain(name: String) async throws -> DomainID {
        let id = try platform.createDomain(name: name)
        do {
            let store = try platform.connectXenStore()
            defer { store.close() }
            let home = "/local/domain/\(id)"
            let readOnly = [XenStorePermission(domid: 0, access: .none), XenStorePermission(domid: id, access: .read)]
            let own = [XenStorePermission(domid: id, access: .none)]
            try await store.withTransaction { tx in
                try await tx.mkdir(home)
                try await tx.setPermissions(home, readOnly)
                try await tx.write(home + "/name", name)
                try await tx.write(home + "/domid", "\(id)")
                for sub in ["device", "control"] {
                    try await tx.mkdir(home + "/" + sub)
                    try await tx.setPermissions(home + "/" + sub, readOnly)
                }
                // The domain's own: its data, drivers, feature and attr nodes, and the error
                // nodes its frontends write (xenbus_dev_fatal), as libxl lays them out.
                for sub in ["data", "drivers", "feature", "attr", "error"] {
                    try await tx.mkdir(home + "/" + sub)
                    try await tx.setPermissions(home + "/" + sub, own)
                }
            }
        } catch {
            // Nothing half-made: the domain goes if its home could not be written.
            try? platform.destroyDomain(id)
            throw error
        }
        return id
    }
}
