import ArgumentParser
import Foundation
import Logging
import NetFrontend
import Netif
import Tap
import XenLinux
import XenLocal
import XenPlatform

/// `xensplit netfront`: a userspace netfront whose guest side is a TAP device.
struct NetfrontCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "netfront",
        abstract: "Attach a domain's virtual network interface as its frontend and surface it as a TAP device.",
        discussion: """
        Joins domain NAME (on the local hypervisor; on xen, the domain this runs in) and \
        attaches the frontend of vif DEVID. It creates TAP device IFNAME (inside network \
        namespace NS when --netns is given, as `ip netns add NS` made it), with the vif's \
        mac and mtu from xenstore, and brings it up: frames sent on it go to the backend, \
        packets from the backend arrive on it, so ping, iperf3 and tcpdump work on IFNAME. \
        The carrier is on while the backend is Connected. The TAP device is multi-queue: \
        each netif queue pair (--queues) gets a TAP queue, so the kernel spreads flows over \
        them, and the pairs are served by up to one I/O thread per core. On SIGINT or \
        SIGTERM it closes the frontend (xenbus Closing, Closed, grants ended) and removes \
        the TAP device. A backend offering fewer queue pairs than --queues is refused: \
        the command exits with an error.
        """
    )

    @Argument(help: "The domain whose vif this is.")
    var name: String

    @Argument(help: "The vif's device id (the devid of its --nic).")
    var devid: UInt32

    @Option(help: "Name of the TAP device to create (at most 15 bytes).")
    var tap: String

    @Option(help: "Network namespace to create the TAP device in (a name under /var/run/netns).")
    var netns: String?

    @Option(help: ArgumentHelp(
        "Queue pairs to use (multi-queue-num-queues), 1 to \(NetFrontend.maxQueues).",
        discussion: "Default: one per core, at most what the backend offers in multi-queue-max-queues. More than the backend offers is an error."))
    var queues: Int?

    @OptionGroup var platform: PlatformOptions

    @Flag(help: "Log at debug level.")
    var verbose = false

    func validate() throws {
        if let queues, !(1 ... NetFrontend.maxQueues).contains(queues) {
            throw ValidationError("--queues \(queues): a queue pair count is 1 to \(NetFrontend.maxQueues)")
        }
        if let netns {
            do { _ = try NetworkNamespace(netns) } catch { throw ValidationError("--netns: \(error)") }
        }
    }

    func run() async throws {
        var logger = Logger(label: "xensplit.netfront")
        logger.logLevel = verbose ? .debug : .info
        let namespace = try netns.map { try NetworkNamespace($0) }
        let guest = try await platform.joinGuest(name, command: "netfront", what: "vif")
        try await checkDeviceExists(guest)
        let frontend = try NetFrontend(platform: guest, devid: devid, queues: queues, logger: logger)
        let vif: NetifVifSettings
        do { vif = try await frontend.vifSettings() } catch {
            await frontend.close()
            // A driver that stopped by itself says why (the hypervisor or the device gone).
            if let failure = frontendEnded(await frontend.stopped(), command: "netfront", device: "\(name) vif \(devid)") { throw failure }
            throw CommandFailure("netfront: \(name) vif \(devid): \(error)")
        }
        let device: TapDevice
        do {
            device = try TapDevice(name: tap, multiQueue: true, in: namespace)
            try device.setHardwareAddress(EthernetAddress(vif.mac[0], vif.mac[1], vif.mac[2], vif.mac[3], vif.mac[4], vif.mac[5]))
            try device.setMTU(Int(vif.mtu))
            try device.setCarrier(false)
            try device.setUp(true)
            try frontend.attachTap(device)
        } catch {
            // A frontend that refused its backend before the TAP device was attached (the
            // backend waited at InitWait already) says why, not only that it is closed.
            let refused = (error as? NetFrontendError) == .closed ? await Self.refusal(of: frontend) : nil
            await frontend.close()
            if let refused { throw refusalFailure(refused) }
            throw CommandFailure("netfront: TAP device \(tap)\(netns.map { " in namespace \($0)" } ?? ""): \(error)")
        }
        let stop = StopSignal()
        let sources = stop.install()
        defer { withExtendedLifetime(sources) {} }
        let where_ = netns.map { " in namespace \($0)" } ?? ""
        // Ends with the refusal, if the frontend refuses the backend (too few queue pairs
        // offered): then there is nothing to wait for.
        let announce = Task { [logger, tap, name, devid] () -> NetFrontendError? in
            let link: NetFrontendLink
            do { link = try await frontend.connected() } catch {
                guard let error = error as? NetFrontendError, error != .closed else { return nil }
                stop.fire()
                return error
            }
            logger.info("""
                netfront: \(name) vif \(devid) connected as \(tap)\(where_): mac \(link.macAddress), mtu \(link.mtu), \
                sg \(link.backend.scatterGather), tso \(link.tapOffloads.contains(.tso4))/\(link.tapOffloads.contains(.tso6)), \
                split event channels \(link.backend.splitEventChannels), \(link.queues) queue pairs \
                (the backend offers \(link.offeredQueues))
                """)
            return nil
        }
        logger.info("netfront: \(name) vif \(devid): TAP device \(device.name)\(where_) up, waiting for the backend")
        let ended = FrontendEnd(firing: stop) { await frontend.stopped() }
        await stop.wait()
        // A busy backend may take a while to unmap; the grants must not end before it has.
        let left = await frontend.close(grantWaitSeconds: ended.hypervisorLost ? 0 : 30)
        device.close()
        let c = frontend.counters
        logger.info("netfront: closed; tx \(c.txPackets) packets (\(c.txDropped) dropped, \(c.txErrors) errors), rx \(c.rxPackets) packets (\(c.rxDropped) dropped, \(c.rxErrors) errors)")
        // Closing failed the wait if it still waited.
        if let refused = await announce.value { throw refusalFailure(refused) }
        if let failure = frontendEnded(await ended.value, command: "netfront", device: "\(name) vif \(devid)") { throw failure }
        if left > 0 { throw CommandFailure("netfront: \(left) granted page sets were still mapped at close") }
    }

    /// Refuses a devid the toolstack never gave this domain (no frontend directory).
    /// Why `frontend` refused its backend, once it has (nil: it did not, or is not done).
    private static func refusal(of frontend: NetFrontend) async -> NetFrontendError? {
        do { _ = try await frontend.connected() } catch let error as NetFrontendError where error != .closed { return error } catch {}
        return nil
    }

    private func refusalFailure(_ refused: NetFrontendError) -> CommandFailure {
        CommandFailure("netfront: \(name) vif \(devid)\(queues.map { " --queues \($0)" } ?? ""): \(refused)")
    }

    private func checkDeviceExists(_ guest: any Platform) async throws {
        let store = try guest.connectXenStore()
        defer { store.close() }
        let home = "/local/domain/\(guest.domainID)/device/\(NetFrontend.deviceType)"
        let devices = (try? await store.directory(home)) ?? []
        guard devices.contains("\(devid)") else {
            let known = devices.compactMap(UInt32.init).sorted().map(String.init).joined(separator: ", ")
            throw CommandFailure("domain '\(name)' has no vif \(devid) (its vifs: \(known.isEmpty ? "none" : known))")
        }
    }
}
