import ArgumentParser
import Dispatch
import Foundation
import Logging
import XenLocal

/// `xensplit hypervisor`: the local hypervisor daemon.
struct HypervisorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hypervisor",
        abstract: "Run the local hypervisor: grants, event channels and xenstore between processes.",
        discussion: """
        Serves dom0 at STATE_DIR/hypervisor.socket and each domain NAME at \
        STATE_DIR/domains/NAME/hypervisor.socket; xenstore for dom0 (and Xen's own \
        xenstore tools, through XENSTORED_PATH) at STATE_DIR/xenstored.socket. \
        Runs until SIGINT or SIGTERM, then removes its sockets.
        """
    )

    @OptionGroup var state: StateDirectoryOptions

    @Option(help: "Pages in each domain's memory pool (allocated as used).")
    var poolPages = 65536

    @Option(help: "Entries in each domain's grant table.")
    var grantEntries = 32768

    @Flag(help: "Log every connection.")
    var verbose = false

    func validate() throws {
        guard poolPages >= 16 else { throw ValidationError("--pool-pages must be at least 16") }
        guard (16...1_048_576).contains(grantEntries) else { throw ValidationError("--grant-entries must be 16...1048576") }
    }

    func run() throws {
        var logger = Logger(label: "xensplit.hypervisor")
        logger.logLevel = verbose ? .debug : .info
        var config = LocalHypervisor.Configuration(stateDirectory: state.resolved)
        config.poolPages = poolPages
        config.grantEntries = grantEntries
        let hv = try LocalHypervisor(configuration: config, logger: logger)
        let sources = onStopSignals { _ in hv.stop() }
        hv.run()
        withExtendedLifetime(sources) {}
    }
}
