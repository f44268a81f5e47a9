import Foundation
import Glibc
import Logging
import Testing
import XenBus
import XenLocal
import XenPlatform
import XenStore
@testable import Conformance

/// The suite in-process against a blkif backend whose ring runs on Xen's io/ring.h
/// macros (CRingBlkback), honest and with one rule broken at a time. expected.tsv says
/// which clauses each run covers: the honest C peer passes them, and each mutant fails the
/// clauses about the rule it breaks.
@Suite("the suite against a C peer on io/ring.h, honest and mutated", .serialized)
struct CRingPeerTests {
    static let quiet: Logger = {
        var logger = Logger(label: "conformance-c-peer")
        logger.logLevel = .critical
        return logger
    }()

    static func expectations() throws -> (ClauseCatalog, Expectations) {
        let directory = try ClauseCatalog.defaultDirectory()
        let catalog = try ClauseCatalog(directory: directory)
        return (catalog, try Expectations(path: directory + "/expected.tsv", catalog: catalog))
    }

    /// Runs the clauses expected.tsv lists for `target` against a CRingBlkback with
    /// `mutation`, on a local hypervisor of this process.
    static func run(_ mutation: CRingBlkback.Mutation?, target: String) async throws -> ConformanceReport {
        let (catalog, expectations) = try expectations()
        let clauses = try #require(expectations.entries[target]).keys.sorted()
        var template = Array("/tmp/xensplit-cpeer-XXXXXX".utf8CString)
        let directory = String(cString: try #require(mkdtemp(&template)))
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var configuration = LocalHypervisor.Configuration(stateDirectory: directory)
        configuration.poolPages = 4096
        let hypervisor = try LocalHypervisor(configuration: configuration, logger: quiet)
        hypervisor.start()
        defer { hypervisor.stopAndWait() }
        let dom0 = try LocalPlatform(stateDirectory: directory)
        let image = directory + "/disk.img"
        #expect(FileManager.default.createFile(atPath: image, contents: nil))
        let id = try await LocalToolstack(platform: dom0).createDomain(
            name: "guest", disks: [DiskSpec(parsing: "vdev=xvda,access=rw,target=\(image)")], hotplug: .none)
        let guest = try LocalPlatform(stateDirectory: directory, domain: "guest")

        let backend = CRingBlkback(platform: dom0, mutation: mutation)
        let store = try dom0.connectXenStore()
        defer { store.close() }
        let device = XenbusBackendDevice(store: store, backend: LocalToolstack.backendPath(kind: "vbd", frontend: id, device: 51712),
                                         hooks: backend, logger: quiet)
        backend.violation.withLock { $0 = { device.reportViolation($0) } }
        let peer = try await BlkfrontPeer(platform: guest, frontendPath: LocalToolstack.frontendPath(kind: "vbd", frontend: id, device: 51712),
                                          observer: dom0.connectXenStore())
        let runner = try ConformanceRunner(catalog: catalog, checks: BlkifBackendSuite.checks)
        let report = await runner.run(scope: ConformanceScope(role: .backend, device: .vbd, clauses: clauses.joined(separator: ",")),
                                      peer: peer, target: "guest/51712", expectations: expectations, expect: target)
        await peer.close()
        await device.close()
        #expect(report.results.map(\.clause.id).sorted() == clauses, "every clause listed for \(target) ran")
        return report
    }

    @Test("the honest C peer passes the ring clauses and every clause a mutant breaks")
    func honest() async throws {
        let report = try await Self.run(nil, target: "c-peer")
        #expect(report.results.allSatisfy { $0.outcome == .pass }, "\(report.text)")
        #expect(!report.failed)
    }

    @Test("each mutant fails exactly the clauses about the rule it breaks", arguments: CRingBlkback.Mutation.allCases)
    func mutant(_ mutation: CRingBlkback.Mutation) async throws {
        let report = try await Self.run(mutation, target: mutation.rawValue)
        #expect(!report.results.isEmpty)
        #expect(report.results.allSatisfy { $0.outcome == .fail }, "\(report.text)")
        #expect(!report.failed, "\(report.text)")
    }

    @Test("every backend-role negative ring clause is broken by some mutant")
    func negativeRingClausesHaveMutants() throws {
        let (catalog, expectations) = try Self.expectations()
        let broken = Set(CRingBlkback.Mutation.allCases.flatMap { expectations.entries[$0.rawValue]?.keys.map { $0 } ?? [] })
        let negative = catalog.clauses.filter { $0.area == "ring" && $0.kind == .negative && $0.role.binds(.backend) }.map(\.id)
        #expect(Set(negative).subtracting(broken).isEmpty, "no mutant breaks \(Set(negative).subtracting(broken).sorted())")
    }
}
