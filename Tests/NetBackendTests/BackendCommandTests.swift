import Foundation
import Glibc
import SystemCalls
import Testing
import XenLocal
import XenPlatform
import XenTesting

/// `xensplit backend` as a process: one daemon for both device kinds.
@Suite("xensplit backend as a process", .serialized)
struct BackendCommandTests {
    static var binary: String { TestCommand.xensplit }

    static func spawn(_ executable: String, _ arguments: [String]) throws -> ChildProcess {
        try TestCommand.spawn(executable, arguments)
    }

    @Test("backend --devices vbd,vif serves a guest's disk and vif (TAP made in its namespace); SIGTERM closes both and removes the TAP")
    func bothKindsInOneProcess() async throws {
        let state = NSTemporaryDirectory() + "xensplit-backend-cli-\(getpid())"
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: state) }
        let namespace = try TestNamespace(prefix: "xsbe")
        defer { namespace.delete() }
        let image = state + "/disk.img"
        #expect(FileManager.default.createFile(atPath: image, contents: nil))
        #expect(truncate(image, 2048 * 512) == 0)
        let hypervisor = try Self.spawn(Self.binary, ["hypervisor", "--state-dir", state])
        defer {
            hypervisor.signal(SIGTERM)
            hypervisor.wait()
        }
        try await eventually("the hypervisor's socket") { FileManager.default.fileExists(atPath: state + "/xenstored.socket") }
        let create = try Self.spawn(Self.binary, ["domain", "create", "guest", "--state-dir", state, "--no-hotplug",
                                                  "--disk", "vdev=xvda,access=rw,target=\(image)", "--nic", "bridge=none"])
        create.wait()
        #expect(create.wait().code == 0)

        let backend = try Self.spawn("/usr/sbin/ip", ["netns", "exec", namespace.name, Self.binary, "backend",
                                                      "--devices", "vbd,vif", "--workers", "1", "--platform", "local",
                                                      "--state-dir", state])
        let dom0 = try LocalPlatform(stateDirectory: state)
        let store = try dom0.connectXenStore()
        defer { store.close() }
        let guest = try LocalPlatform(stateDirectory: state, domain: "guest")
        let vbd = LocalToolstack.backendPath(kind: "vbd", frontend: guest.domainID, device: 51712)
        let vif = LocalToolstack.backendPath(kind: "vif", frontend: guest.domainID, device: 0)
        for path in [vbd, vif] {
            try await eventually("\(path) reaches InitWait") { (try? await store.readString(path + "/state")) == "2" }
        }
        #expect(try namespace.hasLink("vif\(guest.domainID).0"))

        backend.signal(SIGTERM)
        #expect(try await offThePool { backend.wait() }.code == 0)
        for path in [vbd, vif] { #expect((try? await store.readString(path + "/state")) == "6", "\(path) Closed") }
        #expect(try !namespace.hasLink("vif\(guest.domainID).0"), "the TAP device went with the backend")
    }

    @Test("an unknown device type is refused before anything starts")
    func unknownDeviceType() throws {
        let process = try ChildProcess(Self.binary, ["backend", "--devices", "vbd,vfb"], standardOutput: .null, standardError: .pipe)
        let text = String(decoding: try process.collectOutput().standardError, as: UTF8.self)
        #expect(process.wait().code != 0)
        #expect(text.contains("'vfb' is not a device type"), "\(text)")
    }
}
