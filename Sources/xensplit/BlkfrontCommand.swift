import ArgumentParser
import Blkif
import BlockFrontend
import Dispatch
import Foundation
import Logging
import NBD
import Synchronization
import XenLinux
import XenLocal
import XenPlatform

/// `xensplit blkfront`: a userspace blkfront whose disk is served over NBD.
struct BlkfrontCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "blkfront",
        abstract: "Attach a domain's virtual disk as its frontend and export it over NBD.",
        discussion: """
        Joins domain NAME (on the local hypervisor; on xen, the domain this runs in), \
        attaches the frontend of VDEV (xvda, hdb, sdc, or a device number), waits for its \
        backend to connect and serves the disk at the NBD address until SIGINT or SIGTERM, \
        then closes the frontend (xenbus Closing, Closed, grants ended).
        """
    )

    @Argument(help: "The domain whose disk this is.")
    var name: String

    @Argument(help: "The virtual device: xvda, hdb, sdc, ... or its number.")
    var vdev: String

    @Option(help: "Where to serve NBD: unix:PATH or tcp:[HOST:]PORT (HOST defaults to 127.0.0.1).")
    var nbd: String

    @OptionGroup var platform: PlatformOptions

    @Option(help: "Rings to ask for (multi-queue-num-queues).")
    var queues: UInt32 = 1

    @Option(help: "Requests in flight at once over all rings (1...1024).")
    var depth: Int = 32

    /// The `protocol` the frontend writes (`io/blkif.h`).
    enum ABI: String, ExpressibleByArgument, CaseIterable {
        case native, x86_32, x86_64

        var blkif: BlkifABI {
            switch self {
            case .native: .native
            case .x86_32: .x86_32
            case .x86_64: .x86_64
            }
        }
    }

    @Option(help: "Ring layout to speak: native, x86_32 (protocol x86_32-abi) or x86_64 (x86_64-abi).")
    var abi: ABI = .native

    @Flag(help: "Log at debug level.")
    var verbose = false

    func validate() throws {
        guard (1...16).contains(queues) else { throw ValidationError("--queues must be 1...16") }
        guard (1...1024).contains(depth) else { throw ValidationError("--depth must be 1...1024") }
        _ = try parsed()
    }

    /// The NBD address and the virtual device, or a usage error naming the bad one.
    func parsed() throws -> (address: NBDAddress, device: DiskSpec.VirtualDevice) {
        let address: NBDAddress
        do { address = try NBDAddress(parsing: nbd) } catch { throw ValidationError("--nbd: \(error)") }
        do { return (address, try DiskSpec.VirtualDevice(vdev)) } catch { throw ValidationError("\(error)") }
    }

    func run() async throws {
        var logger = Logger(label: "xensplit.blkfront")
        logger.logLevel = verbose ? .debug : .info
        let (address, device) = try parsed()

        let guest = try await platform.joinGuest(name, command: "blkfront", what: "disk")
        try await checkDeviceExists(guest, device)
        let frontend = try BlockFrontend(platform: guest, devid: "\(device.number)",
                                         configuration: BlockFrontendConfiguration(queues: queues, depth: depth, abi: abi.blkif),
                                         logger: logger)
        let stop = StopSignal()
        let sources = stop.install()
        defer { withExtendedLifetime(sources) {} }

        let waiting = Task { [logger] in
            try await Task.sleep(for: .seconds(1))
            logger.info("blkfront: waiting for the backend of \(device) (\(frontend.frontendPath)/backend) to connect")
        }
        // connected() waits for the backend however long; a signal closes the frontend,
        // which fails that wait.
        let disk: BlockFrontendDisk?
        do {
            disk = try await stop.interrupting({ try await frontend.connected() }, by: { await frontend.close() })
        } catch {
            waiting.cancel()
            await frontend.close()
            // A driver that stopped by itself says why (the hypervisor or the device gone).
            if let failure = frontendEnded(await frontend.stopped(), command: "blkfront", device: "\(name) \(device)") { throw failure }
            throw error
        }
        guard let disk else {
            waiting.cancel()
            return
        }
        waiting.cancel()
        let export = try NBDBlockFrontendExport(frontend: frontend, disk: disk, logger: logger)
        let server = NBDServer(export: export, name: "")
        let bound: NBDAddress
        do { bound = try server.start(listeningOn: address) } catch {
            await frontend.close()
            throw error
        }
        logger.info("""
            blkfront: \(name) \(device): \(disk.sectors512 * 512) bytes, sector \(disk.properties.sectorSize), \
            \(1 << disk.ringPageOrder) ring pages, \(disk.queues) queues, \(disk.segmentsPerRequest) segments, \
            depth \(disk.depth), \(abi.blkif.protocolName); \
            serving \(bound.uri)
            """)
        let ended = FrontendEnd(firing: stop) { await frontend.stopped() }
        await stop.wait()
        server.stop()
        let left = await frontend.close(grantWaitSeconds: ended.hypervisorLost ? 0 : 5)
        if case let .unix(path) = bound { unlink(path) }
        if let failure = frontendEnded(await ended.value, command: "blkfront", device: "\(name) \(device)") { throw failure }
        if left > 0 { throw CommandFailure("blkfront: \(left) granted page sets were still mapped at close") }
    }

    /// Refuses a vdev the toolstack never gave this domain (no frontend directory).
    private func checkDeviceExists(_ guest: any Platform, _ device: DiskSpec.VirtualDevice) async throws {
        let store = try guest.connectXenStore()
        defer { store.close() }
        let home = "/local/domain/\(guest.domainID)/device/vbd"
        let devices = (try? await store.directory(home)) ?? []
        guard devices.contains("\(device.number)") else {
            let known = devices.compactMap(UInt32.init).sorted().map(String.init).joined(separator: ", ")
            throw CommandFailure("domain '\(name)' has no disk \(device) (its vbds: \(known.isEmpty ? "none" : known))")
        }
    }
}

/// A failure at run time (not a usage error), printed as `Error: ...` with exit status 1.
struct CommandFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
