import ArgumentParser
import Dispatch
import Foundation
import Logging
import NetBackend

/// `xensplit netback`: the net backend daemon.
struct NetbackCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "netback",
        abstract: "Serve every vif whose backend is this domain (backend/vif under its home).",
        discussion: """
        Watches /local/domain/SELF/backend/vif and serves each vif that appears there. Per \
        vif it makes a TAP device named vifDOMID.DEVID (or the toolstack's vifname), with the \
        MTU of the mtu key, before InitWait; advertises feature-rx-copy, feature-sg, \
        feature-gso-tcpv4/v6, feature-ipv6-csum-offload, feature-split-event-channels and \
        multi-queue-max-queues (a TAP queue per netif queue); \
        waits for the toolstack's vif script to write hotplug-status=connected (it puts the \
        TAP device on a bridge: `xensplit domain create` runs it, as xl does) and then serves \
        the frontend's tx and rx rings on a fixed set of worker threads, through io_uring. \
        The backend attaches no bridge itself. Runs until SIGINT or SIGTERM, then walks every \
        vif to Closed and removes its TAP device.
        """
    )

    @OptionGroup var platform: PlatformOptions

    @OptionGroup var engine: EngineOptions

    @Option(help: "Worker threads (default: one per core).")
    var workers: Int?

    @Option(help: "Most queue pairs a frontend may ask for (multi-queue-max-queues; each a TAP queue on a worker). Default: one per core, as Linux's netback.")
    var maxQueues: UInt32?

    @Option(help: "Guest packets per vif copied out and being written to the TAP device at once.")
    var txBuffers = NetbackQueueConfiguration().txBuffers

    @Option(help: "Packets per vif read from the TAP device and held for the guest at once; a guest that posts no buffers holds no more than this.")
    var rxBuffers = NetbackQueueConfiguration().rxBuffers

    @Option(help: "Seconds to wait for the vif script's hotplug-status=connected before refusing a vif.")
    var hotplugTimeout = 60

    @Option(help: "Seconds a packet for a guest that posts no rx buffers is held before it is dropped.")
    var rxDrainTimeout = 10

    @Option(help: "Seconds a guest may leave packets waiting (posting no rx buffers) before its vif's carrier goes off; it comes back on once the guest posts buffers.")
    var rxStallTimeout = 60

    @Flag(help: "Log at debug level.")
    var verbose = false

    func validate() throws {
        if let workers, !(1...1024).contains(workers) { throw ValidationError("--workers must be 1...1024") }
        if let maxQueues, !(1...64).contains(maxQueues) { throw ValidationError("--max-queues must be 1...64") }
        guard (1...256).contains(txBuffers) else { throw ValidationError("--tx-buffers must be 1...256") }
        guard (1...256).contains(rxBuffers) else { throw ValidationError("--rx-buffers must be 1...256") }
        guard (1...3600).contains(hotplugTimeout) else { throw ValidationError("--hotplug-timeout must be 1...3600") }
        guard (1...3600).contains(rxDrainTimeout) else { throw ValidationError("--rx-drain-timeout must be 1...3600") }
        guard (1...3600).contains(rxStallTimeout) else { throw ValidationError("--rx-stall-timeout must be 1...3600") }
    }

    func run() async throws {
        var logger = Logger(label: "xensplit.netback")
        logger.logLevel = verbose ? .debug : .info
        var configuration = NetbackDaemon.Configuration()
        if let workers { configuration.workers = workers }
        configuration.limits.queue = NetbackQueueConfiguration(txBuffers: txBuffers, rxBuffers: rxBuffers)
        configuration.limits.maxQueues = maxQueues ?? UInt32(max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        configuration.limits.hotplugTimeout = .seconds(hotplugTimeout)
        configuration.limits.stall = NetbackStallPolicy(drain: .seconds(rxDrainTimeout), stall: .seconds(rxStallTimeout))
        let factory = try engine.factory(logger: logger)
        logger.info("netback: I/O engine", metadata: ["engine": "\(factory.kind.rawValue)"])
        let daemon = try NetbackDaemon(platform: try await platform.open(), configuration: configuration,
                                       factory: factory, logger: logger)
        let sources = onStopSignals { _ in daemon.stop() }
        try await daemon.run()
        withExtendedLifetime(sources) {}
    }
}
