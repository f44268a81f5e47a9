import ArgumentParser
import Conformance
import Foundation
import Tap
import XenLocal
import XenPlatform

extension ConformanceCommand {
    /// --device vif: a scripted netfront against the vif's backend, seeing the host side
    /// on the interface the backend made (in --vif-namespace).
    func runVif(domain: String, devid: UInt32) async throws {
        let directory = try clauseDir ?? ClauseCatalog.defaultDirectory()
        let catalog = try ClauseCatalog(directory: directory)
        let expectations = try Expectations(path: directory + "/" + ClauseCatalog.expectationsFile, catalog: catalog)
        if let expect, !expectations.targets.contains(expect) {
            throw ValidationError("--expect: expected.tsv has no rows for \(expect) (it has \(expectations.targets.joined(separator: ", ")))")
        }
        let runner = try ConformanceRunner(catalog: catalog, checks: NetifBackendSuite.checks)
        let namespace: NetworkNamespace?
        do { namespace = try vifNamespace.map(NetworkNamespace.init) } catch { throw ValidationError("--vif-namespace: \(error)") }

        let guest = try await platform.joinGuest(domain, command: "conformance", what: "device")
        let frontendPath = "/local/domain/\(guest.domainID)/device/vif/\(devid)"
        let peer = try await NetfrontPeer(platform: guest, frontendPath: frontendPath, host: VifHostSide(namespace: namespace, plugs: plug),
                                          observer: dom0View(guest))
        let report = await runner.run(scope: scope(.backend), peer: peer,
                                      target: target, expectations: expectations, expect: expect) { progress($0) }
        let left = await peer.close()
        let rendered = report.rendered(format)
        if let output {
            try rendered.write(toFile: output, atomically: true, encoding: .utf8)
        } else {
            FileHandle.standardOutput.write(Data(rendered.utf8))
        }
        if left > 0 { FileHandle.standardError.write(Data("conformance: \(left) page sets still mapped by the backend at the end\n".utf8)) }
        if report.failed { throw ExitCode(1) }
    }
}
