import ArgumentParser
import Conformance
import Foundation
import NBD
import Tap
import XenLocal
import XenPlatform
import XenStore

/// `xensplit conformance`: plays the other end of a device with a scripted peer and
/// reports, per clause of Protocols/conformance, pass, fail, not applicable or not executed.
struct ConformanceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conformance",
        abstract: "Run the ring-protocol conformance clauses against a frontend or backend.",
        discussion: """
        --role names the role of the TARGET; the suite plays the other end with a scripted \
        peer built on the wire modules and the platform, never on our devices.

        TARGET is DOMAIN/DEVID: the domain whose device it is, by name, and the device, as a \
        number (51712) or, for vbd, a vdev name (xvda). Its forms:
          --platform local --role backend: DOMAIN is a guest of the local hypervisor (at \
        --state-dir); the suite acts as that guest's frontend of the device and tests its \
        backend, wherever the toolstack put it (dom0 of the local hypervisor reads the \
        backend's error node and writes a vif's hotplug-status).
          --platform xen --role backend: DOMAIN is the domain this runs in (Domain-0 for a \
        device dom0 attached to itself, e.g. `xl block-attach 0 ...`); the suite is its \
        frontend through gntalloc, evtchn and xenstore. In dom0 it also reads the backend's \
        error node, and with --plug writes hotplug-status.
          --role frontend: DOMAIN is the guest whose frontend is tested (a guest of the local \
        hypervisor, or on xen any domain by name); the suite is the device's backend in the \
        domain this runs in (dom0 of the local hypervisor, or this Xen domain), which the \
        toolstack must have named as the backend (on xen: backendtype=phy with a no-op \
        hotplug script, so no kernel backend takes it).

        Clauses whose role is TARGET's (or both) and whose area belongs to --device are run, \
        narrowed by --clauses (comma-separated fnmatch patterns on IDs) and --kind. With \
        --expect NAME the outcomes are compared with Protocols/conformance/expected.tsv for \
        target NAME and any deviation fails the run; without it any fail or clause not \
        executed does. The exit status is 1 when the run fails.

        Written so far: --device vbd with --role backend (a scripted blkfront) and --role \
        frontend (a scripted blkback in dom0 of the local hypervisor, which serves a disk of \
        its own; the clauses that need requests make them through --nbd, the frontend's \
        export); --device vif with --role frontend (a scripted netback in dom0 of the local \
        hypervisor: the handshake, the posted rx buffers, and tx through --tap, the \
        frontend's TAP device, in --vif-namespace) and --role \
        backend (a scripted netfront, which sees the host side on the backend's vif interface; \
        see --vif-namespace, --plug).

        A kernel frontend (Linux's blkfront or netfront in a guest) offers the suite no NBD \
        export or TAP device: run xensplit-agent beside it (on Xen, in the guest on its console) \
        and give --agent the stream (on Xen the console's pty, from the guest's console/tty \
        node in xenstore) and --agent-device the disk (/dev/xvdb) or interface (eth1 or its MAC).
        """
    )

    enum Role: String, ExpressibleByArgument, CaseIterable {
        case backend, frontend
    }

    @Option(help: "The role of the target: backend or frontend.")
    var role: Role

    @Option(help: "The device type: vbd or vif.")
    var device: ConformanceDevice

    @Option(help: "DOMAIN/DEVID: the domain whose device it is and the device (51712 or xvda).")
    var target: String

    @Option(help: "Run only clauses whose ID matches one of these comma-separated patterns (BLKIF-BE-04*,RING-*).")
    var clauses: String?

    @Option(help: "Run only clauses of this kind: positive or negative (default both).")
    var kind: ClauseKind?

    @Option(help: "Report format: text, json or junit.")
    var format: ConformanceReport.Format = .text

    @Option(help: "Write the report here instead of standard output.")
    var output: String?

    @Option(help: "Compare with the expectations of this target in expected.tsv (ours-blkback, linux-xen-blkback, ...).")
    var expect: String?

    @Option(help: "The clause directory (default: Protocols/conformance of this package).")
    var clauseDir: String?

    @Option(help: "vif: the network namespace the backend makes its interfaces in (default: this process's).")
    var vifNamespace: String?

    @Flag(help: "vif: stand in for the vif hotplug script: bring the backend's interface up and write hotplug-status (needs dom0's xenstore).")
    var plug = false

    @Option(help: "vbd, --role frontend: the NBD export of the frontend's disk (unix:PATH or tcp:[HOST:]PORT), through which the clauses that need requests make them.")
    var nbd: String?

    @Option(help: "vif, --role frontend: the frontend's TAP device (in --vif-namespace), through which the clauses that need packets send them.")
    var tap: String?

    @Option(help: ArgumentHelp("--role frontend: the stream (a pty: on Xen the guest console's, from its console/tty node) of xensplit-agent running beside a kernel frontend, through which the clauses that need requests or frames make them (Protocols/conformance/agent.md).", valueName: "path"))
    var agent: String?

    @Option(help: ArgumentHelp("With --agent: the frontend's disk in the guest (/dev/xvdb) or its interface (eth1, or its MAC address).", valueName: "name"))
    var agentDevice: String?

    @Flag(help: "--role frontend: the frontend takes each device once (Linux's blkfront and netfront answer InitWait only from Initialising); the clauses that show it serves again after a lie stop short of a second handshake and say so.")
    var takesDeviceOnce = false

    @OptionGroup var platform: PlatformOptions

    /// DOMAIN and the device number of TARGET.
    func parsedTarget() throws -> (domain: String, devid: UInt32) {
        let parts = target.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
            throw ValidationError("--target must be DOMAIN/DEVID, e.g. guest/51712 or guest/xvda")
        }
        if let number = UInt32(parts[1]) { return (String(parts[0]), number) }
        guard device == .vbd else { throw ValidationError("--target: a vif's DEVID is a number") }
        do { return (String(parts[0]), try DiskSpec.VirtualDevice(String(parts[1])).number) } catch {
            throw ValidationError("--target: \(error)")
        }
    }

    func validate() throws {
        _ = try parsedTarget()
        if (agent == nil) != (agentDevice == nil) { throw ValidationError("--agent and --agent-device go together: the agent's stream and the device it works on") }
        if agent != nil {
            guard role == .frontend else { throw ValidationError("--agent is the user side of a frontend: it needs --role frontend") }
            if nbd != nil || tap != nil { throw ValidationError("--agent is the frontend's user side; --nbd and --tap are others: give one") }
        }
    }

    /// The agent beside the frontend, when --agent names its stream.
    func openAgent() throws -> FrontendAgent? {
        guard let agent else { return nil }
        do { return try FrontendAgent(path: agent) } catch { throw ValidationError("--agent: \(error)") }
    }

    func run() async throws {
        let (domain, devid) = try parsedTarget()
        if device == .vif, role == .backend { return try await runVif(domain: domain, devid: devid) }
        let directory = try clauseDir ?? ClauseCatalog.defaultDirectory()
        let catalog = try ClauseCatalog(directory: directory)
        let expectations = try Expectations(path: directory + "/" + ClauseCatalog.expectationsFile, catalog: catalog)
        if let expect, !expectations.targets.contains(expect) {
            throw ValidationError("--expect: expected.tsv has no rows for \(expect) (it has \(expectations.targets.joined(separator: ", ")))")
        }
        if role == .frontend {
            try await runFrontendRole(domain: domain, devid: devid, catalog: catalog, expectations: expectations)
            return
        }
        let runner = try ConformanceRunner(catalog: catalog, checks: BlkifBackendSuite.checks)

        let guest = try await platform.joinGuest(domain, command: "conformance", what: "device")
        let frontendPath = "/local/domain/\(guest.domainID)/device/\(device.rawValue)/\(devid)"
        let peer = try await BlkfrontPeer(platform: guest, frontendPath: frontendPath, observer: dom0View(guest))
        let report = await runner.run(scope: scope(.backend), peer: peer,
                                      target: target, expectations: expectations, expect: expect) { progress($0) }
        let left = await peer.close()
        if left > 0 { FileHandle.standardError.write(Data("conformance: \(left) page sets still mapped by the backend at the end\n".utf8)) }
        try deliver(report)
    }

    /// The clauses in scope when the target plays `role`.
    func scope(_ role: ClauseRole) -> ConformanceScope {
        ConformanceScope(role: role, device: device, clauses: clauses, kind: kind)
    }

    /// A xenstore connection with dom0's view, for what the frontend's domain may not do
    /// (read the backend's error node, write a vif's hotplug-status): dom0 of the local
    /// hypervisor, or on Xen the guest's own connection when the guest is dom0. A guest on
    /// Xen has no such view, and the clauses that need it say so.
    func dom0View(_ guest: any Platform) -> XenStoreClient? {
        switch platform.kind {
        case .local: return try? LocalPlatform(stateDirectory: platform.state.resolved).connectXenStore()
        case .xen: return guest.domainID == 0 ? try? guest.connectXenStore() : nil
        }
    }

    /// With the report going elsewhere, each result as it comes on standard error, with
    /// its evidence, so a run cut short (a time box) still says what it saw.
    func progress(_ result: ClauseResult) {
        guard output != nil || format != .text else { return }
        FileHandle.standardError.write(Data("\(result.outcome.rawValue) \(result.clause.id): \(result.evidence)\n".utf8))
    }

    /// Prints or writes the report; a failed run exits 1.
    func deliver(_ report: ConformanceReport) throws {
        let rendered = report.rendered(format)
        if let output {
            try rendered.write(toFile: output, atomically: true, encoding: .utf8)
        } else {
            FileHandle.standardOutput.write(Data(rendered.utf8))
        }
        if report.failed { throw ExitCode(1) }
    }

    /// --role frontend: a scripted backend (a blkback or a netback) in this domain (dom0 of
    /// the local hypervisor, or the Xen domain this runs in) serves DOMAIN's device and tests
    /// its frontend.
    func runFrontendRole(domain: String, devid: UInt32, catalog: ClauseCatalog, expectations: Expectations) async throws {
        let backend = try await platform.open()
        let frontendID = try await platform.domainID(named: domain, from: backend)
        let frontendPath = "/local/domain/\(frontendID)/device/\(device.rawValue)/\(devid)"
        let report: ConformanceReport
        switch device {
        case .vbd:
            var io: (any FrontendBlockIO)?
            if let nbd {
                do { io = NBDFrontendIO(address: try NBDAddress(parsing: nbd)) } catch { throw ValidationError("--nbd: \(error)") }
            }
            if let agent = try openAgent(), let agentDevice { io = AgentBlockIO(agent: agent, device: agentDevice) }
            let peer = try await BlkbackPeer(platform: backend, frontendPath: frontendPath, io: io)
            peer.takesDeviceOnce = takesDeviceOnce
            report = await run(try ConformanceRunner(catalog: catalog, checks: BlkifFrontendSuite.checks), peer, expectations)
            await peer.close()
        case .vif:
            let namespace = try vifNamespace.map { try NetworkNamespace($0) }
            let agent = try openAgent()
            let peer = try await NetbackPeer(platform: backend, frontendPath: frontendPath, tap: agent == nil ? tap : agentDevice,
                                             namespace: namespace, agent: agent)
            peer.takesDeviceOnce = takesDeviceOnce
            report = await run(try ConformanceRunner(catalog: catalog, checks: NetifFrontendSuite.checks), peer, expectations)
            await peer.close()
        }
        try deliver(report)
    }

    /// Runs `runner` against `peer` on the frontend-role clauses in scope.
    func run<Peer: ConformancePeer>(_ runner: ConformanceRunner<Peer>, _ peer: Peer,
                                    _ expectations: Expectations) async -> ConformanceReport {
        await runner.run(scope: scope(.frontend), peer: peer, target: target, expectations: expectations, expect: expect) { progress($0) }
    }
}

extension ConformanceDevice: ExpressibleByArgument {}
extension ConformanceReport.Format: ExpressibleByArgument {}
extension ClauseKind: ExpressibleByArgument {}
