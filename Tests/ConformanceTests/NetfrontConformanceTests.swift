import Foundation
import Testing
import XenTesting
import SystemCalls
@testable import Conformance

/// The suite's frontend role for vif as a process (a scripted netback in dom0) against our
/// netfront as a process (its TAP device in a namespace of the test's), both on a local
/// hypervisor that is a third. No netback runs.
@Suite("xensplit conformance against our netfront", .serialized)
struct NetfrontConformanceTests {
    static var binary: String { TestCommand.xensplit }

    /// A local hypervisor and our netfront on guest `guest`'s vif 0 (MAC `mac`), its TAP
    /// device `tap` in a namespace of the test's, for `body`; everything started is stopped after.
    static func withNetfront(mac: String, tap: String, _ body: (_ state: String, _ ns: TestNamespace, _ netfront: ChildProcess) async throws -> Void) async throws {
        var template = Array("/tmp/xensplit-conformance-nf-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw JUnitReaderError(description: "mkdtemp: errno \(errno)") }
        let state = String(cString: made)
        defer { try? FileManager.default.removeItem(atPath: state) }
        let ns = try TestNamespace()
        defer { ns.delete() }
        let hypervisor = try TestCommand.spawn(binary, ["hypervisor", "--state-dir", state])
        defer {
            _ = hypervisor.signal(SIGTERM)
            _ = hypervisor.wait()
        }
        try await eventually("the hypervisor's socket") { FileManager.default.fileExists(atPath: state + "/xenstored.socket") }
        let create = try TestCommand.run(binary, ["domain", "create", "guest", "--state-dir", state, "--no-hotplug",
                                                  "--nic", "mac=\(mac), mtu=1400"])
        try #require(create.status == 0, "domain create: \(create.stderr)")
        let netfront = try TestCommand.spawn(binary, ["netfront", "guest", "0", "--tap", tap, "--netns", ns.name,
                                                      "--platform", "local", "--state-dir", state])
        defer {
            _ = netfront.signal(SIGTERM)
            _ = netfront.wait()
        }
        try await body(state, ns, netfront)
    }

    @Test("every frontend-role vif clause matches expected.tsv for ours-netfront; the netfront survives the lies")
    func matchesExpectations() async throws {
        try await Self.withNetfront(mac: "00:16:3e:5a:01:02", tap: "nfconf0") { state, ns, netfront in
            let junit = state + "/report.xml"
            let run = try await offThePool { [ns] in
                try TestCommand.run(Self.binary, ["conformance", "--role", "frontend", "--device", "vif", "--platform", "local", "--state-dir", state,
                                             "--target", "guest/0", "--tap", "nfconf0", "--vif-namespace", ns.name,
                                             "--expect", "ours-netfront", "--format", "junit", "--output", junit])
            }
            #expect(run.status == 0, "conformance: \(run.stderr)")
            let executed = try JUnitReader.checkAgainstExpectations(junit, target: "ours-netfront", scope: ConformanceScope(role: .frontend, device: .vif))
            // Every check written so far has an outcome, none a gap.
            #expect(executed == NetifFrontendSuite.checks.count)
            // Lying keys and states refused, not fatal.
            #expect(netfront.isRunning, "netfront exited: \(netfront.status.map { "\($0)" } ?? "running")")
        }
    }
}
