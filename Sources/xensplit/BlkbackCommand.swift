import ArgumentParser
import BlockBackend
import Dispatch
import Foundation
import Glibc
import Logging
import URing

/// `xensplit blkback`: the block backend daemon.
struct BlkbackCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "blkback",
        abstract: "Serve every vbd whose backend is this domain (backend/vbd under its home).",
        discussion: """
        Watches /local/domain/SELF/backend/vbd and serves each device that appears there: \
        reads the toolstack's keys (params, mode, type, device-type, discard-enable, \
        direct-io-safe) and the frontend's (ring-ref or ring-refN, event-channel, protocol, \
        ring-page-order, multi-queue-num-queues, feature-persistent), publishes the disk's keys \
        and serves its rings on a fixed set of worker threads. Runs until SIGINT or SIGTERM, \
        then walks every device to Closed.

        I/O goes through Dom0's page cache, except on disks the toolstack marked \
        direct-io-safe (xl's DISKSPEC flag of that name): those bypass it (O_DIRECT) where \
        their file system or device does direct I/O, and the log line "backing store opened" \
        says which it is and why.
        """
    )

    /// A switch spelled `on` or `off`.
    enum Switch: String, ExpressibleByArgument, CaseIterable {
        case on, off
    }

    @OptionGroup var platform: PlatformOptions

    @OptionGroup var engine: EngineOptions

    @Option(help: "Worker threads (default: one per core).")
    var workers: Int?

    @Option(help: "io_uring kernel threads per worker for disks that cannot do non-blocking I/O (tmpfs, FUSE, some network file systems) (default: one per core). Raise it when such a disk's I/O blocks for long.")
    var ioWorkers: Int?

    @Option(help: "Largest ring accepted, as log2 of its pages (max-ring-page-order).")
    var maxRingPageOrder: UInt32 = 4

    @Option(help: "Most queues per device (multi-queue-max-queues).")
    var maxQueues: UInt32 = 4

    @Option(help: "Segments per indirect request (feature-max-indirect-segments; 0 turns indirect requests off).")
    var maxIndirectSegments = 32

    @Option(help: "Offer persistent grants (feature-persistent): keep the frontend's pages mapped and memcpy, instead of a grant copy per request. Used only if the frontend advertises them too.")
    var persistentGrants: Switch = .on

    @Option(help: "Pages kept mapped per queue with persistent grants; past it the least recently used idle page is unmapped.")
    var persistentGrantsPerQueue = BlkbackQueueConfiguration.defaultPersistentGrantsPerQueue

    @Option(help: "Milliseconds between backing-store size checks (online resize).")
    var resizeIntervalMs = 1000

    @Option(help: "Keep each queue's ring indices and a copy of every request taken in STATE_DIR/blkback, so a backend started after this one dies takes its Connected devices over and answers each request exactly once (Protocols/blkback-restart.md). Off: a restart resumes at rsp_prod.")
    var restartState: Switch = .on

    @Flag(help: "Take the devices over from the blkback already running on this state directory: ask it (through STATE_DIR/blkback/control.socket) to stop taking requests, drain and exit without closing its devices, then serve them from where it left off. With no backend running, start as usual. Reports MAINPID= and READY=1 to $NOTIFY_SOCKET when set, so a service manager follows the new process.")
    var takeOver = false

    @Flag(help: "Log at debug level.")
    var verbose = false

    func validate() throws {
        if let workers, !(1...1024).contains(workers) { throw ValidationError("--workers must be 1...1024") }
        if let ioWorkers, !(1...4096).contains(ioWorkers) { throw ValidationError("--io-workers must be 1...4096") }
        guard maxRingPageOrder <= 8 else { throw ValidationError("--max-ring-page-order must be 0...8") }
        guard (1...64).contains(maxQueues) else { throw ValidationError("--max-queues must be 1...64") }
        guard (0...4096).contains(maxIndirectSegments) else { throw ValidationError("--max-indirect-segments must be 0...4096") }
        guard (1...65536).contains(persistentGrantsPerQueue) else {
            throw ValidationError("--persistent-grants-per-queue must be 1...65536")
        }
        guard resizeIntervalMs >= 10 else { throw ValidationError("--resize-interval-ms must be at least 10") }
        if takeOver, restartState == .off { throw ValidationError("--take-over needs --restart-state on") }
    }

    func run() async throws {
        var logger = Logger(label: "xensplit.blkback")
        logger.logLevel = verbose ? .debug : .info
        var configuration = BlkbackDaemon.Configuration()
        if let workers { configuration.workers = workers }
        if let ioWorkers { configuration.kernelWorkers = ioWorkers }
        configuration.limits = BlkbackDeviceLimits(maxRingPageOrder: maxRingPageOrder, maxQueues: maxQueues,
                                                   maxIndirectSegments: maxIndirectSegments,
                                                   persistentGrants: persistentGrants == .on,
                                                   persistentGrantsPerQueue: persistentGrantsPerQueue)
        configuration.resizeInterval = .milliseconds(resizeIntervalMs)
        let restartDirectory = platform.state.resolved + "/blkback"
        if restartState == .on { configuration.restartStateDirectory = restartDirectory }
        let controlPath = BlkbackControlSocket.path(restartDirectory: restartDirectory)
        if takeOver {
            if let left = try BlkbackControlSocket.requestTakeOver(path: controlPath) {
                logger.info("blkback: the running backend handed its devices over", metadata: ["left-in-flight": "\(left)"])
            } else {
                logger.notice("blkback: --take-over: no backend runs here; starting afresh")
            }
        }
        let factory = try engine.factory(logger: logger)
        logger.info("blkback: block I/O engine", metadata: ["engine": "\(factory.kind.rawValue)"])
        let daemon = try BlkbackDaemon(platform: try await platform.open(), configuration: configuration,
                                       factory: factory, logger: logger)
        let control = restartState == .off ? nil : try BlkbackControlSocket(path: controlPath, handOver: {
            await daemon.handOver()
        }, exit: { [logger] in
            // Devices stay Connected: the next process takes them over. SIGTERM, not
            // this, is how blkback stops.
            logger.info("blkback: handed over; exiting without closing devices")
            Glibc.exit(0)
        })
        notifyServiceManager("MAINPID=\(getpid())\nREADY=1")
        let sources = onStopSignals { _ in daemon.stop() }
        try await daemon.run()
        control?.close()
        withExtendedLifetime(sources) {}
    }
}

/// Sends `state` to the service manager ($NOTIFY_SOCKET, sd_notify's datagram protocol;
/// a name starting with @ is abstract), if one asked. Errors are ignored, as sd_notify's
/// callers do.
func notifyServiceManager(_ state: String) {
    guard let path = ProcessInfo.processInfo.environment["NOTIFY_SOCKET"], !path.isEmpty else { return }
    let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return }
    defer { close(fd) }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    var name = Array(path.utf8)
    if name.first == UInt8(ascii: "@") { name[0] = 0 }
    guard name.count < MemoryLayout.size(ofValue: address.sun_path) else { return }
    withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: name) }
    let length = socklen_t(MemoryLayout<sa_family_t>.size + name.count + (name.first == 0 ? 0 : 1))
    let bytes = Array(state.utf8)
    _ = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, bytes, bytes.count, 0, $0, length) }
    }
}
