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
}
