import ArgumentParser
import Logging
import XenStore

/// `xensplit xenstored --socket PATH`: the xenstore server alone, serving Unix-socket
/// clients as the dom0 toolstack, as C xenstored does.
struct XenstoredCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "xenstored",
        abstract: "Serve an in-memory xenstore on a Unix socket (point XENSTORED_PATH at it)."
    )

    @Option(name: .long, help: "Path of the Unix socket to listen on.")
    var socket: String

    @Option(name: .long, help: "Nodes a domain may own (C xenstored -E).")
    var quotaNodes = XenStoreQuotas().nodesPerDomain

    @Option(name: .long, help: "Largest node record in bytes (C xenstored -S).")
    var quotaEntrySize = XenStoreQuotas().entrySize

    @Option(name: .long, help: "Watches a domain may hold (C xenstored -W).")
    var quotaWatches = XenStoreQuotas().watchesPerDomain

    @Option(name: .long, help: "Open transactions per connection (C xenstored -t).")
    var quotaTransactions = XenStoreQuotas().transactionsPerConnection

    @Flag(name: .long, help: "Log every dropped connection.")
    var verbose = false

    func run() throws {
        var logger = Logger(label: "xenstored")
        logger.logLevel = verbose ? .debug : .notice
        var quotas = XenStoreQuotas()
        quotas.nodesPerDomain = quotaNodes
        quotas.entrySize = quotaEntrySize
        quotas.watchesPerDomain = quotaWatches
        quotas.transactionsPerConnection = quotaTransactions
        let server = try XenStoreServer(quotas: quotas, logger: logger)
        try server.listen(path: socket)
        logger.notice("xenstored listening", metadata: ["socket": "\(socket)"])
        // The loop owns this thread until the process is killed.
        server.run()
    }
}
