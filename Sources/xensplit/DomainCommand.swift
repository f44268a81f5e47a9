import ArgumentParser
import XenLocal

/// `--no-hotplug`, shared by `domain create` and `domain destroy`.
struct HotplugOptions: ParsableArguments {
    @Flag(name: .customLong("no-hotplug"), help: ArgumentHelp(
        "Write and remove device nodes only: wait for no backend and run no hotplug script.",
        discussion: "For tests of the node layout, or when something else runs the scripts; xl has no such switch."))
    var noHotplug = false

    var policy: HotplugPolicy { noHotplug ? .none : .run }
}

/// `xensplit domain create|list|destroy`: the local toolstack.
struct DomainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "domain",
        abstract: "Create, list and destroy local domains (the toolstack, like xl).",
        subcommands: [Create.self, List.self, Destroy.self]
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a domain, its xenstore home /local/domain/ID, its disks and its network interfaces.",
            discussion: """
            As xl does, after writing a network interface's nodes the toolstack waits up to 10 s for \
            its backend (xensplit netback) to reach InitWait, then runs its hotplug script (script=, \
            default vif-bridge) with the argument 'online' and xl's environment: script, \
            XENBUS_TYPE=vif, XENBUS_PATH=backend/vif/DOMID/DEVID, XENBUS_BASE_PATH=backend, netdev \
            (gatewaydev= or empty), vif (vifname= or vifDOMID.DEVID), plus XENSTORED_PATH, the local \
            hypervisor's xenstore socket. A script gets 40 s. If a backend does not come or a script \
            fails, the error names the interface, the step and the script's stderr, and the domain \
            is destroyed again.
            """)
        @OptionGroup var state: StateDirectoryOptions
        @OptionGroup var hotplug: HotplugOptions
        @Option(name: .customLong("script-dir"), help: ArgumentHelp(
            "Directory of hotplug scripts named without a path (script=NAME, and the default vif-bridge).",
            discussion: "Default: $XENSPLIT_SCRIPT_DIR, else the nearest scripts/hotplug above the xensplit executable, "
                + "else the source tree xensplit was built from, else /etc/xensplit/scripts.",
            valueName: "DIR"))
        var scriptDirectory: String?
        @Argument(help: "Domain name: letters, digits, '-', '_', '.'.")
        var name: String
        @Option(name: .customLong("disk"), help: ArgumentHelp(
            "A disk in xl's DISKSPEC syntax (man 5 xl-disk-configuration); repeatable.",
            discussion: "E.g. '/srv/guest.img,raw,xvda,rw' or 'vdev=xvdb, access=ro, target=/srv/b.img'. Raw images and block devices only.",
            valueName: "DISKSPEC"))
        var disks: [String] = []
        @Option(name: .customLong("nic"), help: ArgumentHelp(
            "A network interface in xl's VIFSPEC syntax (man 5 xl-network-configuration); repeatable.",
            discussion: "E.g. 'mac=00:16:3e:00:00:01,bridge=br0,rate=10Mb/s@20ms', 'script=/srv/my-vif' or '' for every default.",
            valueName: "VIFSPEC"))
        var nics: [String] = []

        // Every spec is parsed before anything is created, and a bad one is a usage error.
        func validate() throws { _ = try parsed() }

        func parsed() throws -> (disks: [DiskSpec], nics: [VifSpec]) {
            do {
                let specs = try disks.map { text throws(DeviceSpecError) in try DiskSpec(parsing: text) }
                let interfaces = try nics.map { text throws(DeviceSpecError) in try VifSpec(parsing: text) }
                return (specs, try LocalToolstack.resolve(interfaces))
            } catch {
                throw ValidationError(error.description)
            }
        }

        func run() async throws {
            let (specs, interfaces) = try parsed()
            let platform = try LocalPlatform(stateDirectory: state.resolved)
            let id = try await LocalToolstack(platform: platform, scriptDirectory: scriptDirectory).createDomain(name: name, disks: specs, nics: interfaces,
                                                                        hotplug: hotplug.policy)
            print("created domain \(name) with id \(id)")
            for disk in specs {
                print("disk \(disk.vdev.name) virtual-device \(disk.vdev.number) \(disk.readWrite ? "rw" : "ro") \(disk.target)")
            }
            for nic in interfaces {
                print("nic \(nic.devid.map(String.init) ?? "-") mac \(nic.mac.map(VifSpec.format(mac:)) ?? "-") bridge \(nic.bridge)"
                      + (nic.rate.map { " rate \($0.xenstoreValue)" } ?? ""))
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List domains: id and name.",
            discussion: """
            With --usage, also what each domain holds now: hypervisor connections, event-channel \
            ports, pages granted out, its grants mapped by someone, mappings its processes hold, \
            and copy-buffer pages. A backend that let go of everything after a frontend left \
            shows the same figures as before the frontend came.
            """)
        @OptionGroup var state: StateDirectoryOptions
        @Flag(help: "Also print what each domain holds (ports, grants, mappings, copy buffers).")
        var usage = false

        func run() throws {
            let platform = try LocalPlatform(stateDirectory: state.resolved)
            let domains = try platform.listDomains()
            guard usage else {
                print("ID\tName")
                for d in domains { print("\(d.id)\t\(d.name)") }
                return
            }
            let counts = try platform.domainUsage()
            print("ID\tName\tConnections\tPorts\tGranted\tPinned\tMappings\tCopyPages")
            for d in domains {
                guard let u = counts[d.id] else { continue }
                print("\(d.id)\t\(d.name)\t\(u.connections)\t\(u.ports)\t\(u.grantedPages)\t\(u.pinnedGrants)\t"
                      + "\(u.mappingsHeld)\t\(u.copyBufferPages)")
            }
        }
    }

    struct Destroy: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Destroy a domain: its backend directories, grants, memory, ports, connections and xenstore home.",
            discussion: """
            As xl does, each network interface's backend is first told to close (state Closing, \
            online 0) and given 10 s to reach Closed, then its hotplug script (the backend's \
            'script' node) runs with the argument 'offline', then the nodes are removed.
            """)
        @OptionGroup var state: StateDirectoryOptions
        @OptionGroup var hotplug: HotplugOptions
        @Argument(help: "Domain name.")
        var name: String

        func run() async throws {
            let platform = try LocalPlatform(stateDirectory: state.resolved)
            try await LocalToolstack(platform: platform).destroy(name: name, hotplug: hotplug.policy)
            print("destroyed domain \(name)")
        }
    }
}
