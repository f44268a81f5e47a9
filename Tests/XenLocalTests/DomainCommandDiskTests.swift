import Foundation
import SystemCalls
import Testing
import XenLocal

/// `xensplit domain create --disk` as a user runs it: the hypervisor and the toolstack are
/// separate processes, and Xen's own `xenstore-ls` reads the nodes through XENSTORED_PATH.
@Suite struct DomainCommandDiskTests {
    static var xensplit: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("xensplit").path
    }

    struct Run {
        let status: Int32
        let out: String
        let err: String
    }

    static func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws -> Run {
        let merged = environment.map { ProcessInfo.processInfo.environment.merging($0) { $1 } }
        let p = try ChildProcess(executable, arguments, environment: merged, standardOutput: .pipe, standardError: .pipe)
        let (o, e) = try p.collectOutput()
        return Run(status: p.wait().code, out: String(decoding: o, as: UTF8.self), err: String(decoding: e, as: UTF8.self))
    }

    /// `xenstore-ls -fp PATH` as path -> "value   (perms)".
    static func xenstoreLs(_ path: String, socket: String) throws -> [String: String] {
        let r = try run("/usr/bin/xenstore-ls", ["-fp", path], environment: ["XENSTORED_PATH": socket])
        #expect(r.status == 0, "xenstore-ls \(path): \(r.err)")
        var nodes: [String: String] = [:]
        for line in r.out.split(separator: "\n") {
            guard let eq = line.range(of: " = ") else { continue }
            nodes[String(line[..<eq.lowerBound])] = String(line[eq.upperBound...])
        }
        return nodes
    }

    @Test func createWithDisksThenDestroyAsProcesses() throws {
        #expect(FileManager.default.isExecutableFile(atPath: Self.xensplit), "build the xensplit product first")
        var template = Array("/tmp/xensplit-cli-XXXXXX".utf8CString)
        let dir = String(cString: try #require(mkdtemp(&template)))
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = dir + "/a.img", b = dir + "/b.iso"
        for path in [a, b] {
            #expect(FileManager.default.createFile(atPath: path, contents: Data(count: 4096)))
        }

        let hypervisor = try ChildProcess(Self.xensplit, ["hypervisor", "--state-dir", dir], standardError: .null)
        var stopped = false
        defer {
            if !stopped {
                hypervisor.signal(SIGKILL)
                hypervisor.wait()
            }
        }
        let socket = dir + "/xenstored.socket"
        _ = try eventually("the hypervisor serving \(dir)") { try LocalPlatform(stateDirectory: dir).listDomains() }

        let created = try Self.run(Self.xensplit, ["domain", "create", "--state-dir", dir, "guest",
                                                   "--disk", "\(a),raw,xvda,rw",
                                                   "--disk", "vdev=hdc, devtype=cdrom, no-discard, target=\(b)",
                                                   "--nic", "mac=00:16:3e:00:00:01,bridge=br0", "--no-hotplug"])
        #expect(created.status == 0, "\(created.err)")
        #expect(created.out.hasPrefix("created domain guest with id 1\n"))

        let backend = try Self.xenstoreLs("/local/domain/0/backend/vbd/1", socket: socket)
        let frontend = try Self.xenstoreLs("/local/domain/1/device/vbd", socket: socket)
        let be = "(n0,r1)", fe = "(n1,r0)"
        // xenstore-ls lists what is under the path it is given, not the path itself.
        var expectedBackend: [String: String] = [:]
        for (devid, vdev, target, mode, type, discard) in [(51712, "xvda", a, "w", "disk", "1"), (5632, "hdc", b, "r", "cdrom", "0")] {
            let node = "/local/domain/0/backend/vbd/1/\(devid)"
            let keys = ["": "", "/frontend": "/local/domain/1/device/vbd/\(devid)", "/params": target, "/frontend-id": "1",
                        "/online": "1", "/removable": type == "cdrom" ? "1" : "0", "/bootable": "1", "/state": "1",
                        "/dev": vdev, "/type": "file", "/mode": mode, "/device-type": type, "/discard-enable": discard]
            for (key, value) in keys { expectedBackend[node + key] = "\"\(value)\"   \(be)" }
        }
        #expect(backend == expectedBackend)

        var expectedFrontend: [String: String] = [:]
        for (devid, type) in [(51712, "disk"), (5632, "cdrom")] {
            let node = "/local/domain/1/device/vbd/\(devid)"
            let keys = ["": "", "/backend": "/local/domain/0/backend/vbd/1/\(devid)", "/backend-id": "0", "/state": "1",
                        "/virtual-device": "\(devid)", "/device-type": type, "/trusted": "1"]
            for (key, value) in keys { expectedFrontend[node + key] = "\"\(value)\"   \(fe)" }
        }
        #expect(frontend == expectedFrontend)
        #expect(created.out.contains("nic 0 mac 00:16:3e:00:00:01 bridge br0\n"))
        let vifBackend = try Self.xenstoreLs("/local/domain/0/backend/vif/1/0", socket: socket)
        #expect(vifBackend["/local/domain/0/backend/vif/1/0/mac"] == "\"00:16:3e:00:00:01\"   \(be)")
        #expect(vifBackend["/local/domain/0/backend/vif/1/0/bridge"] == "\"br0\"   \(be)")
        let vifFrontend = try Self.xenstoreLs("/local/domain/1/device/vif/0", socket: socket)
        #expect(vifFrontend["/local/domain/1/device/vif/0/backend"] == "\"/local/domain/0/backend/vif/1/0\"   \(fe)")
        #expect(vifFrontend["/local/domain/1/device/vif/0/handle"] == "\"0\"   \(fe)")

        // A bad spec is refused before anything is created, pointing at the bad parameter.
        let refused = try Self.run(Self.xensplit, ["domain", "create", "--state-dir", dir, "bad", "--disk", "\(a),qcow2,xvdb"])
        #expect(refused.status == 64, "a bad DISKSPEC is a usage error (EX_USAGE)")
        #expect(refused.err.contains("parameter 2 \"qcow2\" (offset \(a.count + 1)): format qcow2 is not supported"), "\(refused.err)")
        #expect(refused.err.contains("Usage: xensplit domain create"), "\(refused.err)")
        let listed = try Self.run(Self.xensplit, ["domain", "list", "--state-dir", dir])
        #expect(listed.out == "ID\tName\n0\tDomain-0\n1\tguest\n")

        let destroyed = try Self.run(Self.xensplit, ["domain", "destroy", "--state-dir", dir, "guest", "--no-hotplug"])
        #expect(destroyed.status == 0, "\(destroyed.err)")
        let after = try Self.xenstoreLs("/local/domain", socket: socket)
        #expect(after.keys.filter { $0.contains("/backend/vbd") || $0.contains("/backend/vif") || $0.hasPrefix("/local/domain/1") }.isEmpty, "\(after)")

        hypervisor.signal(SIGTERM)
        hypervisor.wait()
        stopped = true
        #expect(hypervisor.wait() == .exited(0))
    }

    /// Bad arguments to `xensplit blkfront` are usage errors that name the bad part and
    /// show blkfront's usage, before anything is joined or attached.
    @Test func blkfrontRefusesBadArgumentsWithItsUsage() throws {
        #expect(FileManager.default.isExecutableFile(atPath: Self.xensplit), "build the xensplit product first")
        let cases = [
            (["blkfront", "guest", "xvda", "--nbd", "tcp:99999", "--state-dir", "/nonexistent"],
             "--nbd: address \"tcp:99999\" is not unix:PATH or tcp:[HOST:]PORT"),
            (["blkfront", "guest", "vda", "--nbd", "unix:/tmp/x.sock", "--state-dir", "/nonexistent"],
             "vdev \"vda\": bad vdev: vda is not xvdX[N], hdX[N], sdX[N], dDISKpPART or a number"),
        ]
        for (arguments, message) in cases {
            let r = try Self.run(Self.xensplit, arguments)
            #expect(r.status == 64, "\(arguments): \(r.err)")
            #expect(r.err.contains(message), "\(r.err)")
            #expect(r.err.contains("Usage: xensplit blkfront"), "\(r.err)")
        }
    }
}
