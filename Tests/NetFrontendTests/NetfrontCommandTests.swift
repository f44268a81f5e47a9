import Foundation
import Glibc
import Netif
import SystemCalls
import Testing
import XenBus
import XenLocal
import XenPlatform
import XenStore
import XenTesting
@testable import NetFrontend

/// The real CLI as processes: `xensplit hypervisor`, `xensplit domain create --nic`,
/// `xensplit netfront` with its TAP device in the test's namespace, and the scripted
/// backend in this process, acting as dom0 on that hypervisor.
@Suite("xensplit netfront as a process", .serialized)
struct NetfrontCommandTests {
    static var binary: String { TestCommand.xensplit }

    static func spawn(_ arguments: [String]) throws -> ChildProcess {
        try TestCommand.spawn(binary, arguments)
    }

    @Test("netfront NAME DEVID --tap IF --netns NS: the vif as a TAP device; SIGTERM walks it to Closed and removes the TAP")
    func endToEnd() async throws {
        let state = NSTemporaryDirectory() + "xensplit-netfront-cli-\(getpid())"
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: state) }
        let ns = try TestNamespace()
        defer { ns.delete() }

        let hypervisor = try Self.spawn(["hypervisor", "--state-dir", state])
        defer {
            hypervisor.signal(SIGTERM)
            hypervisor.wait()
        }
        try await eventually("the hypervisor's socket") { FileManager.default.fileExists(atPath: state + "/xenstored.socket") }
        let create = try Self.spawn(["domain", "create", "guest", "--state-dir", state, "--no-hotplug",
                                     "--nic", "mac=\(NetRig.mac), mtu=1400"])
        create.wait()
        #expect(create.wait().code == 0)

        let dom0 = try LocalPlatform(stateDirectory: state)
        let store = try dom0.connectXenStore()
        defer { store.close() }
        let guest = try LocalPlatform(stateDirectory: state, domain: "guest")
        let paths = try XenbusDevicePaths(type: NetFrontend.deviceType, devid: "0", backendID: .dom0, frontendID: guest.domainID)
        let hooks = ScriptedNetBackend(platform: dom0, offered: NetRig.features())
        let backend = XenbusBackendDevice(store: store, backend: paths.backend, hooks: hooks, logger: testLogger)

        let netfront = try Self.spawn(["netfront", "guest", "0", "--tap", "nfcli0", "--netns", ns.name,
                                       "--platform", "local", "--state-dir", state])
        try await eventually("Connected through the process") { hooks.connected != nil && backend.state == .connected }
        let rings = try #require(hooks.connected)
        try await eventually("rx pages posted") { try rings.postedRx() == 256 }
        let show = try Command.run("/usr/sbin/ip", ["-n", ns.name, "link", "show", "dev", "nfcli0"])
        #expect(show.stdout.contains(NetRig.mac) && show.stdout.contains("mtu 1400"))
        try ns.ip("addr", "add", "198.18.0.1/24", "dev", "nfcli0")
        let receiver = try GuestSide.udpSocket(in: ns, bindPort: GuestSide.port)
        defer { close(receiver) }
        let payload = Frames.payload(700, seed: 4)
        try rings.deliver(Frames.udp4(payload: payload, port: GuestSide.port), flags: .dataValidated)
        #expect(GuestSide.receive(receiver) == payload)

        netfront.signal(SIGTERM)
        // Off the pool: walking to Closed, the process waits for the backend here, which
        // needs a thread of the pool to answer.
        #expect(try await offThePool { netfront.wait() } == .exited(0))
        try await eventually("the backend followed to Closed") { backend.state == .closed }
        #expect(!hooks.disconnects.withLock { $0.isEmpty })
        let frontendState = try await store.readString(paths.frontend + "/state")
        #expect(frontendState == XenbusState.closed.nodeValue)
        #expect(try Command.run("/usr/sbin/ip", ["-n", ns.name, "link", "show", "dev", "nfcli0"]).status != 0)
        await backend.close()
    }
}
