import ArgumentParser
import BlockBackend
import Foundation
import Logging
import NetBackend
import URing
import XenDevice

/// `xensplit backend --devices vbd,vif`: both device types in one process, on one set of
/// workers (their requests multiplexed on the same io_urings).
struct BackendCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backend",
        abstract: "Serve vbds and vifs whose backend is this domain in one process, on one set of workers.",
        discussion: """
        Runs blkback and netback together: each watches its own backend directory \
        (backend/vbd, backend/vif) and serves its devices as `xensplit blkback` and \
        `xensplit netback` do, with their default limits, but every queue of either kind \
        goes to one shared set of worker threads, so disk and network requests share the \
        same io_uring instances and one idle worker costs nothing for both. Runs until \
        SIGINT or SIGTERM, then closes every device of both kinds and stops the workers.

        After a crash (SIGKILL, an abort) a new `xensplit backend` on the same state \
        directory takes the vbds over where the dead one left them, as `xensplit blkback` \
        does (--restart-state, STATE_DIR/blkback): their frontends see no state change and \
        every request is answered once. The vifs are not taken over: each renegotiates \
        (InitWait, then Connected again on the frontend's keys), and packets in flight at \
        the crash may be lost. There is no --take-over here: a planned replacement is a stop \
        and a start.
        """
    )

    /// A device type this command can serve.
    enum DeviceType: String, CaseIterable {
        case vbd, vif
    }

    @OptionGroup var platform: PlatformOptions

    @OptionGroup var engine: EngineOptions

    @Option(help: "The device types to serve, comma-separated: vbd, vif or both.")
    var devices = "vbd,vif"

    @Option(help: "Worker threads shared by every device (default: one per core).")
    var workers: Int?

    @Option(help: "As `xensplit blkback --restart-state`: keep each vbd queue's ring indices and a copy of every request taken in STATE_DIR/blkback, so a backend started after this one dies takes its Connected vbds over and answers each request exactly once. Vifs renegotiate either way.")
    var restartState: BlkbackCommand.Switch = .on

    @Flag(help: "Log at debug level.")
    var verbose = false

    func validate() throws {
        _ = try chosen()
        if let workers, !(1...1024).contains(workers) { throw ValidationError("--workers must be 1...1024") }
    }

    /// The device types asked for, each once.
    func chosen() throws -> Set<DeviceType> {
        var chosen: Set<DeviceType> = []
        for part in devices.split(separator: ",", omittingEmptySubsequences: false) {
            let name = part.trimmingCharacters(in: .whitespaces)
            guard let type = DeviceType(rawValue: name) else {
                throw ValidationError("--devices: '\(name)' is not a device type (vbd, vif)")
            }
            guard chosen.insert(type).inserted else { throw ValidationError("--devices: \(name) is given twice") }
        }
        return chosen
    }

    func run() async throws {
        var logger = Logger(label: "xensplit.backend")
        logger.logLevel = verbose ? .debug : .info
        let types = try chosen()
        var block = BlkbackDaemon.Configuration()
        var net = NetbackDaemon.Configuration()
        if restartState == .on { block.restartStateDirectory = platform.state.resolved + "/blkback" }
        if let workers {
            block.workers = workers
            net.workers = workers
        }
        // A worker may hold its full share of queues of either kind.
        let capacity = max(BlkbackDaemon.engineCapacity(block), NetbackDaemon.engineCapacity(net))
        let factory = try engine.factory(logger: logger).withCapacity(capacity).withKernelWorkers(block.kernelWorkers)
        logger.info("backend: I/O engine", metadata: ["engine": "\(factory.kind.rawValue)", "devices": "\(devices)"])
        let shared = try BackendPlacement(starting: block.workers, factory: factory, threadName: "backend-worker", logger: logger)
        defer { shared.stopAll() }
        let host = try await platform.open()
        let blkback = types.contains(.vbd) ? try BlkbackDaemon(platform: host, configuration: block, sharing: shared, logger: logger) : nil
        let netback = types.contains(.vif) ? try NetbackDaemon(platform: host, configuration: net, sharing: shared, logger: logger) : nil
        let sources = onStopSignals { _ in
            blkback?.stop()
            netback?.stop()
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            if let blkback { group.addTask { try await blkback.run() } }
            if let netback { group.addTask { try await netback.run() } }
            // One daemon failing stops the other, so nothing is left half-served.
            do {
                try await group.waitForAll()
            } catch {
                blkback?.stop()
                netback?.stop()
                throw error
            }
        }
        withExtendedLifetime(sources) {}
    }
}
