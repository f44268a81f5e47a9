import ArgumentParser
import Conformance
import Foundation
import NBD
import Tap
import XenLocal
import XenPlatform

/// `xensplit conformance`: plays the other end of a device with a scripted peer and
/// reports, per clause of Protocols/conformance, pass, fail, not applicable or not executed.
struct ConformanceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conformance",
        abstract: "Run the ring-protocol conformance clauses against a frontend or backend.",
        discussion: """
        --role names the role of the TARGET; the suite plays the other end with a scripted \
        peer built on the wire modules and the platform, never on our devices.

        TARGET is DOMAIN/DEVID: the domain whose device it is (its name on the local \
        hypervisor; on xen, the domain this runs in, by name) and the device, as a number \
        (51712) or, for vbd, a vdev name (xvda). With --role backend the suite acts as \
        DOMAIN's frontend of that device and tests its backend, wherever the toolstack put it.

        Clauses whose role is TARGET's (or both) and whose area belongs to --device are run, \
        narrowed by --clauses (comma-separated fnmatch patterns on IDs). With --expect NAME \
        the outcomes are compared with Protocols/conformance/expected.tsv for target NAME \
        and any deviation fails the run; without it any fail or clause not executed does. \
        The exit status is 1 when the run fails.

        Written so far: --device vbd with --role backend (a scripted blkfront) and --role \
        frontend (a scripted blkback in dom0 of the local hypervisor, which serves a disk of \
        its own; the clauses that need requests make them through --nbd, the frontend's \
        export); --device vif with --role frontend (a scripted netback in dom0 of the local \
        hypervisor: the handshake, the posted rx buffers, and tx through --tap, the \
        frontend's TAP device, in --vif-namespace) and --role \
        backend (a scripted netfront, which sees the host side on the backend's vif interface; \
        see --vif-namespace, --plug).
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

    func validate() throws { _ = try parsedTarget() }

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
        // On the local hypervisor dom0 may read the backend's error node; a guest on Xen
        // has no such view, and the clauses that need it say so.
        let observer = platform.kind == .local ? try? LocalPlatform(stateDirectory: platform.state.resolved).connectXenStore() : nil
        let peer = try await BlkfrontPeer(platform: guest, frontendPath: frontendPath, observer: observer)
        let report = await runner.run(scope: ConformanceScope(role: .backend, device: device, clauses: clauses), peer: peer,
                                      target: target, expectations: expectations, expect: expect) { result in
            if output != nil || format != .text {
                FileHandle.standardError.write(Data("\(result.outcome.rawValue) \(result.clause.id)\n".utf8))
            }
        }
        let left = await peer.close()
        if left > 0 { FileHandle.standardError.write(Data("conformance: \(left) page sets still mapped by the backend at the end\n".utf8)) }
        try deliver(report)
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

    /// --role frontend: a scripted backend (a blkback or a netback) in the backend's domain
    /// (dom0 of the local hypervisor) serves DOMAIN's device and tests its frontend.
    func runFrontendRole(domain: String, devid: UInt32, catalog: ClauseCatalog, expectations: Expectations) async throws {
        guard platform.kind == .local else {
            throw CommandFailure("conformance: --role frontend runs on the local hypervisor only so far")
        }
        let guest = try await platform.joinGuest(domain, command: "conformance", what: "device")
        let frontendPath = "/local/domain/\(guest.domainID)/device/\(device.rawValue)/\(devid)"
        let backend = try LocalPlatform(stateDirectory: platform.state.resolved)
        let scope = ConformanceScope(role: .frontend, device: device, clauses: clauses)
        let report: ConformanceReport
        switch device {
        case .vbd:
            var io: NBDFrontendIO?
            if let nbd {
                do { io = NBDFrontendIO(address: try NBDAddress(parsing: nbd)) } catch { throw ValidationError("--nbd: \(error)") }
            }
            let peer = try await BlkbackPeer(platform: backend, frontendPath: frontendPath, io: io)
            report = await run(try ConformanceRunner(catalog: catalog, checks: BlkifFrontendSuite.checks), peer, scope, expectations)
            await peer.close()
        case .vif:
            let namespace = try vifNamespace.map { try NetworkNamespace($0) }
            let peer = try await NetbackPeer(platform: backend, frontendPath: frontendPath, tap: tap, namespace: namespace)
            report = await run(try ConformanceRunner(catalog: catalog, checks: NetifFrontendSuite.checks), peer, scope, expectations)
            await peer.close()
        }
        try deliver(report)
    }

    /// Runs `runner` against `peer`, telling each outcome on standard error when the
    /// report goes elsewhere.
    func run<Peer: ConformancePeer>(_ runner: ConformanceRunner<Peer>, _ peer: Peer, _ scope: ConformanceScope,
                                    _ expectations: Expectations) async -> ConformanceReport {
        await runner.run(scope: scope, peer: peer, target: target, expectations: expectations, expect: expect) { result in
            if output != nil || format != .text {
                FileHandle.standardError.write(Data("\(result.outcome.rawValue) \(result.clause.id)\n".utf8))
            }
        }
    }
}

extension ConformanceDevice: ExpressibleByArgument {}
extension ConformanceReport.Format: ExpressibleByArgument {}
