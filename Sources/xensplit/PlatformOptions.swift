import ArgumentParser
import Foundation
import XenLinux
import XenLocal
import XenPlatform

/// `--platform local|xen` and `--state-dir`, for subcommands that act as a domain.
struct PlatformOptions: ParsableArguments {
    enum Kind: String, ExpressibleByArgument, CaseIterable {
        case local, xen
    }

    @Option(help: ArgumentHelp("local (the local hypervisor) or xen (real Xen through libxen).",
                               discussion: "Default: xen when /dev/xen/privcmd exists, else local."))
    var platform: Kind?

    @OptionGroup var state: StateDirectoryOptions

    /// The platform asked for, or the one this machine has.
    var kind: Kind {
        platform ?? (FileManager.default.fileExists(atPath: "/dev/xen/privcmd") ? .xen : .local)
    }

    /// Joins it as dom0 (local) or as whatever domain this is (xen).
    func open() async throws -> any Platform {
        switch kind {
        case .local: return try LocalPlatform(stateDirectory: state.resolved)
        case .xen: return try await LinuxPlatform.detect()
        }
    }

    /// Joins as guest `name` (local), or checks that this domain is `name` (xen), with
    /// errors that say what is missing; `what` names the device (`disk`, `vif`) and
    /// `command` the subcommand, for the message.
    func joinGuest(_ name: String, command: String, what: String) async throws -> any Platform {
        switch kind {
        case .local:
            let dir = state.resolved
            guard FileManager.default.fileExists(atPath: LocalHypervisor.socketPath(stateDirectory: dir)) else {
                throw CommandFailure("no local hypervisor at \(dir) (start `xensplit hypervisor --state-dir \(dir)`)")
            }
            guard FileManager.default.fileExists(atPath: LocalHypervisor.socketPath(stateDirectory: dir, domain: name)) else {
                throw CommandFailure("no domain named '\(name)' on the local hypervisor at \(dir)")
            }
            return try LocalPlatform(stateDirectory: dir, domain: name)
        case .xen:
            let platform = try await LinuxPlatform.detect()
            let store = try platform.connectXenStore()
            defer { store.close() }
            let own = try? await store.readString("/local/domain/\(platform.domainID)/name")
            if let own, own != name {
                throw CommandFailure("this is domain '\(own)' (\(platform.domainID)), not '\(name)': run \(command) inside the domain whose \(what) it is")
            }
            return platform
        }
    }

    /// The ID of the domain named `name`: on the local hypervisor, the guest of that name;
    /// on xen, the one whose `/local/domain/N/name` reads it, looked up through `platform`
    /// (dom0 may read every domain's name).
    func domainID(named name: String, from platform: any Platform) async throws -> DomainID {
        switch kind {
        case .local:
            return try await joinGuest(name, command: "conformance", what: "device").domainID
        case .xen:
            let store = try platform.connectXenStore()
            defer { store.close() }
            let ids = try await store.directory("/local/domain")
            var names: [String] = []
            for id in ids {
                guard let n = try? await store.readString("/local/domain/\(id)/name") else { continue }
                if n == name, let domain = DomainID(id) { return domain }
                names.append("\(n) (\(id))")
            }
            throw CommandFailure("no domain named '\(name)' in xenstore (it has \(names.joined(separator: ", ")))")
        }
    }
}
