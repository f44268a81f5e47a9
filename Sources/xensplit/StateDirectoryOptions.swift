import ArgumentParser
import Foundation

/// `--state-dir`, shared by every subcommand that talks to the local hypervisor.
struct StateDirectoryOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "Local hypervisor state directory (sockets).",
        discussion: "Default: $XENSPLIT_STATE_DIR, else /run/xensplit for root, else $XDG_RUNTIME_DIR/xensplit."))
    var stateDir: String?

    /// The directory to use, resolved as DESIGN.md says.
    var resolved: String {
        if let stateDir { return stateDir }
        let env = ProcessInfo.processInfo.environment
        if let dir = env["XENSPLIT_STATE_DIR"], !dir.isEmpty { return dir }
        if getuid() == 0 { return "/run/xensplit" }
        return (env["XDG_RUNTIME_DIR"] ?? "/tmp") + "/xensplit"
    }
}
