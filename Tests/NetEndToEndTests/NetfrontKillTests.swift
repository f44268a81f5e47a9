import Foundation
import Glibc
import SystemCalls
import Testing
import XenLocal
import XenPlatform
import XenTesting

/// `xensplit netfront` killed with SIGKILL while its guest sends: what the process held
/// the hypervisor lets go at once (its connections and ports); what its domain still holds
/// (the guest's grants, the backend's vif and mappings) goes when the toolstack destroys
/// the domain, as xl does for a guest that died. Another guest is served throughout. The
/// figures are the hypervisor's (`domain usage`), not the backend's own word.
@Suite("a netfront process killed", .serialized)
struct NetfrontKillTests {
    @Test("xensplit netfront killed by SIGKILL under traffic: its ports and connection go at once, after destroy the backend holds nothing of it, another guest is served throughout",
          .enabled(if: access(TestCommand.xensplit, X_OK) == 0, "the xensplit binary is not built"))
    func killedNetfrontLeavesNothingBehind() async throws {
        try await withPair { pair in
            let bystander = try await pair.guest("bystander", host: 10)
            #expect(try await NetPair.ping(from: bystander.namespace, NetPair.bridgeAddress))
            let queuesBefore = pair.daemon.queuesPerWorker.reduce(0, +)
            let before = try pair.usage()

            let traffic = try await NetfrontUnderTraffic(pair, name: "victim", host: 31)
            defer { traffic.stop() }
            let (victim, netfront) = (traffic.domain, traffic.netfront)
            let vif = "vif\(victim).0"
            try await eventually("the victim's frames reach dom0", seconds: 60) {
                (try? pair.namespace.readSysfs("/sys/class/net/\(vif)/statistics/rx_packets")).flatMap { Int($0) } ?? 0 >= 50
            }
            let during = try pair.usage()
            #expect((during[victim]?.ports ?? 0) > 0 && (during[victim]?.pinnedGrants ?? 0) > 0, "\(during)")

            #expect(netfront.process.signal(SIGKILL))
            #expect(await netfront.process.exited() == .signalled(SIGKILL))
            try await eventually("the victim's connections and ports closed") {
                let now = try pair.usage()
                return now[victim]?.connections == 0 && now[victim]?.ports == 0
            }
            #expect(try await NetPair.ping(from: bystander.namespace, NetPair.bridgeAddress), "the bystander after the kill")

            try await pair.toolstack.destroy(name: "victim")
            try await eventually("dom0 holds what it held before the victim", seconds: 60) {
                let now = try pair.usage()
                return now[victim] == nil && now[0] == before[0] && now[bystander.id] == before[bystander.id]
            }
            try await eventually("the backend's queues and vif gone", seconds: 60) {
                pair.daemon.queuesPerWorker.reduce(0, +) == queuesBefore && (try? pair.namespace.hasLink(vif)) == false
            }
            #expect(try await NetPair.ping(from: bystander.namespace, NetPair.bridgeAddress), "the bystander after the destroy")
        }
    }

    @Test("the hypervisor gone under traffic: xensplit netfront exits naming it, and the net backend's run ends saying so",
          .enabled(if: access(TestCommand.xensplit, X_OK) == 0, "the xensplit binary is not built"))
    func lostHypervisorEndsNetfrontAndNetback() async throws {
        try await withPair { pair in
            let traffic = try await NetfrontUnderTraffic(pair, name: "orphan", host: 32)
            defer { traffic.stop() }
            let netfront = traffic.netfront

            pair.loseHypervisor()
            // Bounded: a process or daemon that hangs fails here instead of hanging the test.
            let (status, output) = try await bounded("netfront exits once the hypervisor is gone", seconds: 60) {
                try await netfront.exit()
            }
            #expect(status == 1, "\(output)")
            #expect(output.contains("netfront: lost the hypervisor"), "\(output)")
            let ended = try await bounded("the net backend's run ends once the hypervisor is gone", seconds: 60) {
                switch await pair.running.result {
                case .success: return "returned as if asked to stop"
                case let .failure(error): return "\(error)"
                }
            }
            #expect(ended.hasPrefix("lost the hypervisor"), "\(ended)")
        }
    }
}

/// `xensplit netfront` for a new domain NAME with one vif on the pair's bridge, its TAP
/// device eth0 holding 198.19.64.HOST in a namespace of its own, and a stream of echoes
/// from there to dom0's bridge. ``stop()`` ends what still runs (by PID) and removes the
/// namespace.
final class NetfrontUnderTraffic {
    let domain: DomainID
    let namespace: TestNamespace
    let netfront: NetfrontProcess
    private(set) var pings: ChildProcess?

    init(_ pair: NetPair, name: String, host: Int) async throws {
        let spec = try VifSpec(parsing: "bridge=\(NetPair.bridge),mac=" + String(format: "00:16:3e:40:00:%02x", host))
        domain = try await pair.toolstack.createDomain(name: name, disks: [], nics: [spec])
        namespace = try TestNamespace(prefix: "xse2k")
        do {
            netfront = try NetfrontProcess(["netfront", name, "0", "--tap", "eth0", "--netns", namespace.name,
                                            "--platform", "local", "--state-dir", pair.directory])
        } catch {
            namespace.delete()
            throw error
        }
        do {
            let ns = namespace
            try await eventually("\(name)'s carrier on") { (try? ns.readSysfs("/sys/class/net/eth0/carrier")) == "1" }
            try ns.ip("link", "set", "dev", "lo", "up")
            try ns.ip("addr", "add", "198.19.64.\(host)/24", "dev", "eth0")
            pings = try TestCommand.spawn("/usr/sbin/ip", ["netns", "exec", ns.name, "ping", "-n", "-q", "-i", "0.01",
                                                           NetPair.bridgeAddress])
        } catch {
            stop()
            throw error
        }
    }

    func stop() {
        if let pings, pings.signal(SIGKILL) { pings.wait() }
        netfront.stop()
        namespace.delete()
    }
}
