import Foundation
import Glibc
import Testing
import XenLocal
import XenPlatform
import XenTesting

/// `xensplit backend` as a process: one daemon for both device kinds.
@Suite("xensplit backend as a process", .serialized)
struct BackendCommandTests {
    static var binary: String { TestCommand.xensplit }

    static func spawn(_ executable: String, _ arguments: [String]) throws -> Process {
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
            kill(hypervisor.processIdentifier, SIGTERM)
            hypervisor.waitUntilExit()
        }
        try await eventually("the hypervisor's socket") { FileManager.default.fileExists(atPath: state + "/xenstored.socket") }
        let create = try Self.spawn(Self.binary, ["domain", "create", "guest", "--state-dir", state, "--no-hotplug",
                                                  "--disk", "vdev=xvda,access=rw,target=\(image)", "--nic", "bridge=none"])
        create.waitUntilExit()
        #expect(create.terminationStatus == 0)

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

        kill(backend.processIdentifier, SIGTERM)
        backend.waitUntilExit()
        #expect(backend.terminationStatus == 0)
        for path in [vbd, vif] { #expect((try? await store.readString(path + "/state")) == "6", "\(path) Closed") }
        #expect(try !namespace.hasLink("vif\(guest.domainID).0"), "the TAP device went with the backend")
    }

    @Test("an unknown device type is refused before anything starts")
    func unknownDeviceType() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = ["backend", "--devices", "vbd,vfb"]
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus != 0)
        #expect(text.contains("'vfb' is not a device type"), "\(text)")
    }
}
