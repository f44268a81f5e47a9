import Foundation
import Testing
import XenTesting

/// `xensplit demo` and `xensplit blkfront` as processes.
@Suite("xensplit demo and blkfront as processes", .serialized)
struct DemoCommandTests {
    /// Processes whose command line mentions `text` (other than this test process).
    static func processes(mentioning text: String) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { pid in
            guard pid != getpid(), let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            return String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self).contains(text)
        }
    }

    @Test("demo prints every step, exits 0 and leaves nothing behind")
    func demoRunsAndCleansUp() async throws {
        let parent = try makeTemporaryDirectory("xensplit-demo-cli")
        defer { try? FileManager.default.removeItem(atPath: parent) }
        let log = try makeTemporaryDirectory("xensplit-demo-cli-log")
        defer { try? FileManager.default.removeItem(atPath: log) }
        let demo = try Child(xensplitBinary, ["demo", "--xvda-mib", "8", "--xvdb-mib", "4", "--tmpdir", parent],
                             outputPath: log + "/demo.log")
        let status = await demo.wait()
        let output = demo.output
        #expect(status == 0, "\(output)")
        let lines = output.split(separator: "\n").map(String.init)
        let steps = ["demo: hypervisor started (state dir \(parent)/xensplit-demo-",
                     "demo: block backend started (",
                     "demo: domain guest created with xvda (8 MiB) and xvdb (4 MiB)",
                     "demo: xvda connected: ring ",
                     "demo: xvdb connected: ring ",
                     "demo: xvda: wrote 8 MiB, flushed, read it back: checksums match, image file matches (",
                     "demo: xvdb: wrote 4 MiB, flushed, read it back: checksums match, image file matches (",
                     "demo: net backend started in network namespace xsdemo-\(demo.pid)-dom0, bridge ",
                     "demo: vif 0 of guest attached; vif-bridge put vif1.0 on ",
                     "demo: vif 0 connected: netfront eth0 in namespace xsdemo-\(demo.pid)-guest ",
                     "demo: ping guest to dom0: 3 packets transmitted, 3 received, 0% packet loss",
                     "demo: ping dom0 to guest: 3 packets transmitted, 3 received, 0% packet loss",
                     "demo: TCP guest to dom0: sent 8 MiB, received 8 MiB, checksums match (",
                     "demo: TCP dom0 to guest: sent 8 MiB, received 8 MiB, checksums match (",
                     "demo: net torn down: ",
                     "demo: torn down: ",
                     "demo: done"]
        var remaining = lines[...]
        for step in steps {
            guard let index = remaining.firstIndex(where: { $0.hasPrefix(step) }) else {
                Issue.record("no line starting '\(step)' after the previous step in:\n\(output)")
                break
            }
            remaining = remaining[(index + 1)...]
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: parent).isEmpty, "the demo's directory is gone")
        #expect(Self.processes(mentioning: parent).isEmpty, "no process of the demo is left")
        let namespaces = (try? FileManager.default.contentsOfDirectory(atPath: "/var/run/netns")) ?? []
        #expect(!namespaces.contains { $0.hasPrefix("xsdemo-\(demo.pid)-") }, "the demo's network namespaces are gone")
    }

    @Test("a signal mid-run fails the demo naming the step, and still leaves nothing behind")
    func demoInterruptedCleansUp() async throws {
        let parent = try makeTemporaryDirectory("xensplit-demo-cli-int")
        defer { try? FileManager.default.removeItem(atPath: parent) }
        let log = try makeTemporaryDirectory("xensplit-demo-cli-int-log")
        defer { try? FileManager.default.removeItem(atPath: log) }
        let demo = try Child(xensplitBinary, ["demo", "--xvda-mib", "4", "--xvdb-mib", "4", "--tmpdir", parent,
                                              "--pause-after-attach"], outputPath: log + "/demo.log")
        defer { demo.signal(SIGKILL) }
        try await eventually("the demo pauses") { demo.output.contains("demo: paused") }
        demo.signal(SIGTERM)
        #expect(await demo.wait() == 1, "\(demo.output)")
        #expect(demo.output.contains("demo: FAILED while paused after attaching the disks: interrupted by signal 15"),
                "\(demo.output)")
        #expect(demo.output.contains("demo: torn down: "), "\(demo.output)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: parent).isEmpty, "the demo's directory is gone")
    }

    @Test("blkfront serves a domain's disk over NBD, says what is missing, and closes on SIGTERM",
          .enabled(if: toolExists("nbdinfo"), "nbdinfo (libnbd-bin) is not installed"))
    func blkfrontServesNBD() async throws {
        let scenario = try LocalScenario("xensplit-blkfront-cli", imageBytes: 4 << 20)
        defer { scenario.stop() }
        let state = scenario.state
        let start = scenario.start
        let hypervisor = try await scenario.startHypervisorWithGuest()

        let noDomain = try start("nodomain", ["blkfront", "nobody", "xvda", "--nbd", "unix:\(state)/x.sock",
                                              "--platform", "local", "--state-dir", state])
        #expect(await noDomain.wait() == 1)
        #expect(noDomain.output.contains("no domain named 'nobody'"), "\(noDomain.output)")
        let noDisk = try start("nodisk", ["blkfront", "guest", "xvdc", "--nbd", "unix:\(state)/x.sock",
                                          "--platform", "local", "--state-dir", state])
        #expect(await noDisk.wait() == 1)
        #expect(noDisk.output.contains("domain 'guest' has no disk xvdc"), "\(noDisk.output)")

        // The frontend first, so it has to wait for the backend.
        let socket = state + "/nbd.sock"
        let blkfront = try start("blkfront", ["blkfront", "guest", "xvda", "--nbd", "unix:\(socket)",
                                              "--platform", "local", "--state-dir", state])
        try await eventually("blkfront says it waits") { blkfront.output.contains("waiting for the backend") }
        let blkback = try start("blkback", ["blkback", "--platform", "local", "--state-dir", state, "--workers", "1"])
        try await eventually("the NBD socket") { FileManager.default.fileExists(atPath: socket) }

        let info = try await runTool(["nbdinfo", "--size", "nbd+unix:///?socket=\(socket)"], in: state)
        #expect(info.status == 0 && info.output.trimmingCharacters(in: .whitespacesAndNewlines) == "\(4 << 20)",
                "\(info.output)")

        blkfront.signal(SIGTERM)
        #expect(await blkfront.wait() == 0, "\(blkfront.output)")
        #expect(blkfront.output.contains("Closing -> Closed"), "the frontend walked to Closed: \(blkfront.output)")
        #expect(!FileManager.default.fileExists(atPath: socket), "the NBD socket is removed")
        blkback.signal(SIGTERM)
        #expect(await blkback.wait() == 0, "\(blkback.output)")
        hypervisor.signal(SIGTERM)
        #expect(await hypervisor.wait() == 0, "\(hypervisor.output)")
    }
}
