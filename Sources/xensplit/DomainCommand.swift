import ArgumentParser
import XenLocal

/// `xensplit domain create|list|destroy`: the local toolstack.
struct DomainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "domain",
        abstract: "Create, list and destroy local domains (the toolstack, like xl).",
        subcommands: [Create.self, List.self, Destroy.self]
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a domain, its xenstore home /local/domain/ID, its disks and its network interfaces.")
        @OptionGroup var state: StateDirectoryOptions
        @Argument(help: "Domain name: letters, digits, '-', '_', '.'.")
        var name: String
        @Option(name: .customLong("disk"), help: ArgumentHelp(
            "A disk in xl's DISKSPEC syntax (man 5 xl-disk-configuration); repeatable.",
            discussion: "E.g. '/srv/guest.img,raw,xvda,rw' or 'vdev=xvdb, access=ro, target=/srv/b.img'. Raw images and block devices only.",
            valueName: "DISKSPEC"))
        var disks: [String] = []
        @Option(name: .customLong("nic"), help: ArgumentHelp(
            "A network interface in xl's VIFSPEC syntax (man 5 xl-network-configuration); repeatable.",
            discussion: "E.g. 'mac=00:16:3e:00:00:01,bridge=br0' or '' for every default.",
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
            let id = try await LocalToolstack(platform: platform).createDomain(name: name, disks: specs, nics: interfaces)
            print("created domain \(name) with id \(id)")
            for disk in specs {
                print("disk \(disk.vdev.name) virtual-device \(disk.vdev.number) \(disk.readWrite ? "rw" : "ro") \(disk.target)")
            }
            for nic in interfaces {
                print("nic \(nic.devid.map(String.init) ?? "-") mac \(nic.mac.map(VifSpec.format(mac:)) ?? "-") bridge \(nic.bridge)")
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
            abstract: "Destroy a domain: its backend directories, grants, memory, ports, connections and xenstore home.")
        @OptionGroup var state: StateDirectoryOptions
        @Argument(help: "Domain name.")
        var name: String

        func run() async throws {
            let platform = try LocalPlatform(stateDirectory: state.resolved)
            try await LocalToolstack(platform: platform).destroy(name: name)
            print("destroyed domain \(name)")
        }
    }
}
