import Foundation
import SystemCalls
import Testing
import XenLocal
import XenPlatform
import XenStore
import XenTesting

/// `xensplit domain create --nic` and `domain destroy` running vif hotplug scripts as xl
/// does, inside a network namespace the test makes: a bridge, a TAP named as the net backend
/// names it, and a stand-in backend that answers the toolstack's waits.
@Suite(.serialized, .enabled(if: getuid() == 0, "network namespaces need root"))
struct DomainCommandVifHotplugTests {
    /// The repository's scripts/hotplug (this file is <repo>/Tests/XenLocalTests/...).
    static let scriptDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("scripts/hotplug").path

    /// Stands in for the net backend's xenstore side: every vif backend in Initialising goes
    /// to InitWait (the TAP exists by then: the test made it), and one told to close
    /// (Closing) goes to Closed. Decides from the nodes' current values on every event.
    final class StandInNetback: Sendable {
        let task: Task<Void, any Error>
        /// The stand-in answers on a thread of its own: on the cooperative pool, blocking
        /// tests elsewhere in the run kept it from answering Closing within the
        /// toolstack's 10 s, and its late Closed then wrote a removed device back.
        let executor = ThreadExecutor(name: "stand-in vif backend")

        init(_ platform: LocalPlatform) async throws {
            let store = try platform.connectXenStore()
            let root = "/local/domain/0/backend/vif"
            let watch = try await store.watch(root)
            task = Task(executorPreference: executor) {
                defer { store.close() }
                for await _ in watch {
                    for domain in (try? await store.directory(root)) ?? [] {
                        for devid in (try? await store.directory(root + "/" + domain)) ?? [] {
                            let state = root + "/" + domain + "/" + devid + "/state"
                            // In a transaction, as a backend must: a device the toolstack
                            // removed meanwhile is not written back.
                            _ = try? await store.withTransaction { tx in
                                switch try? await tx.readString(state) {
                                case "1"?: try await tx.write(state, "2")
                                case "5"?: try await tx.write(state, "6")
                                default: break
                                }
                            }
                        }
                    }
                }
            }
        }

        func stop() async {
            task.cancel()
            _ = await task.result
            executor.shutdown()
        }
    }

    /// `ip ARGS` inside namespace `ns`; the result, expected to succeed unless told.
    @discardableResult
    static func ip(_ ns: String, _ arguments: [String], mustSucceed: Bool = true) throws -> DomainCommandDiskTests.Run {
        let r = try DomainCommandDiskTests.run("/usr/sbin/ip", ["netns", "exec", ns, "ip"] + arguments)
        if mustSucceed { #expect(r.status == 0, "ip \(arguments): \(r.err)") }
        return r
    }

    /// `xensplit ARGS` inside namespace `ns`, waited for off the cooperative pool: the
    /// stand-in backend needs the pool while the toolstack waits for it.
    static func xensplit(_ ns: String, _ arguments: [String]) async throws -> DomainCommandDiskTests.Run {
        try await offThePool {
            try DomainCommandDiskTests.run("/usr/sbin/ip", ["netns", "exec", ns, DomainCommandDiskTests.xensplit] + arguments)
        }
    }

    static func write(script path: String, _ body: String) throws {
        try ("#!/bin/sh\n" + body + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        #expect(chmod(path, 0o755) == 0)
    }

    /// The recorded lines of a recording script, one invocation per line group.
    static func recorded(_ path: String) -> [String] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    @Test func createAndDestroyRunVifScriptsInANamespace() async throws {
        #expect(FileManager.default.isExecutableFile(atPath: DomainCommandDiskTests.xensplit), "build the xensplit product first")
        var template = Array("/tmp/xensplit-vif-XXXXXX".utf8CString)
        let dir = String(cString: try #require(mkdtemp(&template)))
        defer { try? FileManager.default.removeItem(atPath: dir) }

        let ns = "xsvif\(getpid())"
        let added = try DomainCommandDiskTests.run("/usr/sbin/ip", ["netns", "add", ns])
        try #require(added.status == 0, "ip netns add \(ns): \(added.err)")
        // Deleting the namespace removes the bridge and the TAPs in it.
        defer { _ = try? DomainCommandDiskTests.run("/usr/sbin/ip", ["netns", "del", ns]) }
        try Self.ip(ns, ["link", "add", "xsbr0", "type", "bridge"])
        try Self.ip(ns, ["link", "set", "dev", "xsbr0", "up"])
        try Self.ip(ns, ["addr", "add", "198.18.0.1/24", "dev", "xsbr0"])
        // The TAPs the net backend would make before InitWait: vifDOMID.DEVID, or vifname=.
        try Self.ip(ns, ["tuntap", "add", "dev", "vif1.0", "mode", "tap"])
        try Self.ip(ns, ["tuntap", "add", "dev", "xsrec1", "mode", "tap"])

        let record = dir + "/record.log", failRecord = dir + "/fail.log"
        let variables = ["script", "XENBUS_TYPE", "XENBUS_PATH", "XENBUS_BASE_PATH", "netdev", "vif", "XENSTORED_PATH"]
        try Self.write(script: dir + "/record", """
            { echo "args=$*"; for v in \(variables.joined(separator: " ")); do eval "echo $v=\\${$v-UNSET}"; done; } >> \(record)
            [ "$1" = online ] && xenstore-write "/local/domain/0/$XENBUS_PATH/hotplug-status" connected
            exit 0
            """)
        try Self.write(script: dir + "/fail", """
            echo "args=$*" >> \(failRecord)
            [ "$1" = online ] && { echo "no bridge for you" >&2; exit 3; }
            exit 0
            """)

        let hypervisor = try ChildProcess(DomainCommandDiskTests.xensplit, ["hypervisor", "--state-dir", dir], standardError: .null)
        defer {
            hypervisor.signal(SIGKILL)
            hypervisor.wait()
        }
        let dom0 = try eventually("the hypervisor serving \(dir)") { try LocalPlatform(stateDirectory: dir) }
        let backend = try await StandInNetback(dom0)
        let store = try dom0.connectXenStore()
        defer { store.close() }

        let created = try await Self.xensplit(ns, ["domain", "create", "--state-dir", dir, "guest", "--script-dir", Self.scriptDirectory,
                                             "--nic", "bridge=xsbr0,rate=10Mb/s",
                                             "--nic", "vifname=xsrec1,gatewaydev=eth9,script=\(dir)/record"])
        #expect(created.status == 0, "\(created.err)")
        #expect(created.out.hasPrefix("created domain guest with id 1\n"), "\(created.out)")

        // The real vif-bridge put vif1.0 on the bridge, brought it up and said so.
        let link = try Self.ip(ns, ["-o", "link", "show", "dev", "vif1.0"]).out
        #expect(link.contains(" master xsbr0 "), "\(link)")
        #expect(link.contains(",UP") || link.contains("<UP"), "\(link)")
        let be0 = LocalToolstack.backendPath(kind: "vif", frontend: 1, device: 0)
        #expect(try await store.readString(be0 + "/hotplug-status") == "connected")
        #expect(try await store.readString(be0 + "/script") == Self.scriptDirectory + "/vif-bridge")
        #expect(try await store.readString(be0 + "/rate") == "62500,50000")

        // xl's arguments and environment, plus the local xenstore's socket.
        let environment = ["script=\(dir)/record", "XENBUS_TYPE=vif", "XENBUS_PATH=backend/vif/1/1", "XENBUS_BASE_PATH=backend",
                           "netdev=eth9", "vif=xsrec1", "XENSTORED_PATH=\(dir)/xenstored.socket"]
        #expect(Self.recorded(record) == ["args=online type_if=vif"] + environment)

        let destroyed = try await Self.xensplit(ns, ["domain", "destroy", "--state-dir", dir, "guest"])
        #expect(destroyed.status == 0, "\(destroyed.err)")
        #expect(destroyed.err.contains("vif 1/0: backend Closed"), "\(destroyed.err)")
        #expect(Self.recorded(record) == ["args=online type_if=vif"] + environment + ["args=offline type_if=vif"] + environment)
        let after = try Self.ip(ns, ["-o", "link", "show", "dev", "vif1.0"]).out
        #expect(!after.contains(" master "), "vif-bridge offline takes the TAP off the bridge: \(after)")
        await #expect(throws: XenStoreError.daemon(.enoent)) { _ = try await store.directory("/local/domain/0/backend/vif") }

        // A script that fails: the error names the device, the script and its stderr, and
        // the domain is gone again after its scripts ran offline.
        let failed = try await Self.xensplit(ns, ["domain", "create", "--state-dir", dir, "bad", "--nic", "script=\(dir)/fail"])
        #expect(failed.status != 0)
        #expect(failed.err.contains("hotplug script \(dir)/fail online failed (exit status 3); its stderr: no bridge for you"),
                "\(failed.err)")
        #expect(failed.err.contains(#/vif \d+/0: /#), "\(failed.err)")
        #expect(Self.recorded(failRecord) == ["args=online type_if=vif", "args=offline type_if=vif"])
        #expect(!(try dom0.listDomains().contains { $0.name == "bad" }))
        await #expect(throws: XenStoreError.daemon(.enoent)) { _ = try await store.directory("/local/domain/0/backend/vif") }

        // The real vif-bridge refuses a bridge that does not exist, and says so in xenstore too.
        let noBridge = try await Self.xensplit(ns, ["domain", "create", "--state-dir", dir, "nobridge", "--script-dir", Self.scriptDirectory,
                                              "--nic", "bridge=xsnobr"])
        #expect(noBridge.status != 0)
        #expect(noBridge.err.contains("vif-bridge online failed (exit status 1), hotplug-error: bridge xsnobr does not exist;"
                                      + " its stderr: vif-bridge: bridge xsnobr does not exist"), "\(noBridge.err)")
        #expect(!(try dom0.listDomains().contains { $0.name == "nobridge" }))

        await backend.stop()
    }
}

/// The library's side of the waits, with no backend at all.
@Suite struct ToolstackHotplugTests {
    /// A vif whose backend never reaches InitWait fails creation naming the device and the
    /// wait, and leaves no domain and no backend directory behind.
    @Test func createFailsWhenNoBackendComes() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let dom0 = try fx.dom0()
        var toolstack = LocalToolstack(platform: dom0, scriptDirectory: "/nonexistent")
        toolstack.timeouts.initWait = .milliseconds(200)
        await #expect(throws: DeviceSpecError.backendTimedOut(device: "vif 1/0", wanted: "InitWait (2)", timeout: .milliseconds(200), state: "1")) {
            _ = try await toolstack.createDomain(name: "guest", disks: [], nics: [try VifSpec(parsing: "script=/bin/true")])
        }
        #expect(try dom0.listDomains().map(\.name) == ["Domain-0"])
        let store = try dom0.connectXenStore()
        defer { store.close() }
        await #expect(throws: XenStoreError.daemon(.enoent)) { _ = try await store.directory("/local/domain/0/backend/vif") }
    }

    /// A script that is not there is refused before anything is created.
    @Test func missingScriptIsRefusedUpFront() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let dom0 = try fx.dom0()
        let toolstack = LocalToolstack(platform: dom0, scriptDirectory: "/nonexistent")
        await #expect(throws: DeviceSpecError.scriptNotExecutable(device: "vif devid 0", script: "/nonexistent/vif-bridge")) {
            _ = try await toolstack.createDomain(name: "guest", disks: [], nics: [try VifSpec(parsing: "")])
        }
        #expect(try dom0.listDomains().map(\.name) == ["Domain-0"])
    }

    /// $XENSPLIT_SCRIPT_DIR first, then the nearest scripts/hotplug above the executable.
    @Test func defaultScriptDirectoryResolution() throws {
        var template = Array("/tmp/xensplit-scripts-XXXXXX".utf8CString)
        let root = String(cString: try #require(mkdtemp(&template)))
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createDirectory(atPath: root + "/scripts/hotplug", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/.build/debug", withIntermediateDirectories: true)
        let executable = root + "/.build/debug/xensplit"
        #expect(LocalToolstack.defaultScriptDirectory(environment: ["XENSPLIT_SCRIPT_DIR": "/srv/s"], executable: executable) == "/srv/s")
        #expect(LocalToolstack.defaultScriptDirectory(environment: [:], executable: executable) == root + "/scripts/hotplug")
        // Outside any tree, the source tree this was built from has one.
        #expect(LocalToolstack.defaultScriptDirectory(environment: [:], executable: "/nonexistent/bin/xensplit")
                == DomainCommandVifHotplugTests.scriptDirectory)
    }
}
