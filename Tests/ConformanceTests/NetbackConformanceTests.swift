import Foundation
import Testing
import XenTesting
@testable import Conformance

/// The suite as a process against our netback as a process, both on a local hypervisor
/// that is a third: `xensplit hypervisor`, `domain create --no-hotplug --nic` (with a rate, for NETIF-BE-080), `netback`
/// in a network namespace the test makes, `conformance --device vif --plug` standing in
/// for the vif script in that namespace.
@Suite("xensplit conformance against our netback", .serialized)
struct NetbackConformanceTests {
    static var binary: String { TestCommand.xensplit }
    static let mac = "00:16:3e:5c:00:02"

    /// A local hypervisor, guest `guest` with vif 0 and our netback serving it with its
    /// interfaces in a namespace of the test's, for `body`; everything started is stopped
    /// and the namespace removed after.
    static func withNetback(_ body: (_ state: String, _ namespace: TestNamespace) async throws -> Void) async throws {
        var template = Array("/tmp/xensplit-conformance-vif-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw JUnitReaderError(description: "mkdtemp: errno \(errno)") }
        let state = String(cString: made)
        defer { try? FileManager.default.removeItem(atPath: state) }
        let namespace = try TestNamespace(prefix: "xscf")
        defer { namespace.delete() }
        let hypervisor = try TestCommand.spawn(binary, ["hypervisor", "--state-dir", state])
        defer {
            _ = hypervisor.signal(SIGTERM)
            _ = hypervisor.wait()
        }
        // Both of the hypervisor's sockets: `domain create` needs the hypervisor's too.
        for _ in 0 ..< 2000 where !["xenstored.socket", "hypervisor.socket"].allSatisfy({ FileManager.default.fileExists(atPath: state + "/" + $0) }) {
            try await Task.sleep(for: .milliseconds(10))
        }
        let create = try TestCommand.run(binary, ["domain", "create", "guest", "--state-dir", state, "--no-hotplug",
                                                  "--nic", "mac=\(mac),bridge=none,rate=1Mb/s"])
        try #require(create.status == 0, "domain create: \(create.stderr)")
        // `ip netns exec` execs netback in place: the PID is netback's.
        let netback = try TestCommand.spawn("/usr/sbin/ip", ["netns", "exec", namespace.name, binary, "netback", "--platform", "local",
                                                             "--state-dir", state, "--workers", "1", "--max-queues", "2"])
        defer {
            _ = netback.signal(SIGTERM)
            _ = netback.wait()
        }
        try await body(state, namespace)
    }

    static func conformance(_ state: String, _ namespace: TestNamespace, _ arguments: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
        let all = ["conformance", "--role", "backend", "--device", "vif", "--platform", "local", "--state-dir", state,
                   "--target", "guest/0", "--vif-namespace", namespace.name, "--plug"] + arguments
        return try await offThePool { try TestCommand.run(binary, all) }
    }

    @Test("every backend-role vif clause matches expected.tsv for ours-netback; the JUnit report says so clause by clause")
    func matchesExpectations() async throws {
        let directory = try ClauseCatalog.defaultDirectory()
        let catalog = try ClauseCatalog(directory: directory)
        let expectations = try Expectations(path: directory + "/expected.tsv", catalog: catalog)
        let inScope = ConformanceScope(role: .backend, device: .vif).clauses(of: catalog)
        #expect(inScope.filter { $0.area == "netif-backend" }.count >= 50)
        try await Self.withNetback { state, namespace in
            let junit = state + "/report.xml"
            let run = try await Self.conformance(state, namespace, ["--expect", "ours-netback", "--format", "junit", "--output", junit])
            // The report's evidence, for a failing run.
            let evidence = (try? String(contentsOfFile: junit, encoding: .utf8))?.split(separator: "\n").filter { $0.contains("<failure") || $0.contains("fail:") } ?? []
            #expect(run.status == 0, "conformance: \(evidence.joined(separator: "\n"))")
            let document = try JUnitReader.read(junit)
            #expect(document.cases.map(\.name).sorted() == inScope.map(\.id).sorted())
            for testcase in document.cases {
                let clause = try #require(catalog.clause(testcase.name))
                let expected = try #require(expectations.entry(clause: clause.id, target: "ours-netback"), "\(clause.id) has no expectation")
                #expect(testcase.result == (expected.outcome == .pass ? "passed" : "skipped"), "\(clause.id): \(testcase)")
            }
            #expect(document.totals.values.map(\.failures).reduce(0, +) == 0)
        }
    }

    @Test("a deviation from expected.tsv fails the vif run with exit status 1 and names it")
    func deviationFails() async throws {
        let source = try ClauseCatalog.defaultDirectory()
        let copy = NSTemporaryDirectory() + "xensplit-vif-clauses-\(getpid())"
        try? FileManager.default.removeItem(atPath: copy)
        try FileManager.default.copyItem(atPath: source, toPath: copy)
        defer { try? FileManager.default.removeItem(atPath: copy) }
        let expected = try String(contentsOfFile: copy + "/expected.tsv", encoding: .utf8)
        let lied = expected.replacingOccurrences(of: "NETIF-BE-041\tours-netback\tpass\t-\t-",
                                                 with: "NETIF-BE-041\tours-netback\tfail\tclaimed for the test\t[conformance]")
        try #require(lied != expected)
        try lied.write(toFile: copy + "/expected.tsv", atomically: true, encoding: .utf8)
        try await Self.withNetback { state, namespace in
            let junit = state + "/report.xml"
            let run = try await Self.conformance(state, namespace, ["--expect", "ours-netback", "--clause-dir", copy,
                                                                    "--clauses", "NETIF-BE-01[01],NETIF-BE-041", "--format", "junit", "--output", junit])
            // The whole report, for a failing run: it holds each clause's evidence.
            let report = (try? String(contentsOfFile: junit, encoding: .utf8)) ?? "(no report)"
            #expect(run.status == 1, "\(report)")
            let document = try JUnitReader.read(junit)
            #expect(document.cases.map(\.name) == ["NETIF-BE-010", "NETIF-BE-011", "NETIF-BE-041"])
            #expect(document.cases.map(\.result) == ["passed", "passed", "failure"], "\(report)")
            #expect(document.cases.last?.message == "expected fail, got pass")
        }
    }
}
