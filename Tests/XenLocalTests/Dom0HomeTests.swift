import Foundation
import SystemCalls
import Testing
import XenLocal
import XenPlatform
import XenStore
import XenTesting

/// Runs one of Xen's xenstore tools against the hypervisor's xenstored socket, as dom0's
/// scripts would with XENSTORED_PATH; returns its exit status and standard output.
func xenTool(_ tool: String, _ arguments: [String], socket: String) throws -> (status: Int32, output: String) {
    var env = ProcessInfo.processInfo.environment
    env["XENSTORED_PATH"] = socket
    let p = try ChildProcess("/usr/bin/" + tool, arguments, environment: env, standardOutput: .pipe, standardError: .null)
    let data = try p.collectOutput().standardOutput
    return (p.wait().code, String(decoding: data, as: UTF8.self))
}

/// Dom0's xenstore home exists from the start, as Xen's dom0 set-up writes it.
@Suite struct Dom0HomeTests {
    @Test func dom0sNameAndDomidAreThereOwnedByDom0() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let store = try XenStoreClient(socketPath: LocalHypervisor.xenStorePath(stateDirectory: fx.directory, domain: nil))
        defer { store.close() }
        #expect(try await store.readString("/local/domain/0/name") == "Domain-0")
        #expect(try await store.readString("/local/domain/0/domid") == "0")
        #expect(try await store.directory("/local/domain/0").sorted() == ["domid", "name"])
        // Owned by dom0, no access for anyone else: what a privileged writer gets.
        let dom0Only = [XenStorePermission(domid: 0, access: .none)]
        for path in ["/local", "/local/domain", "/local/domain/0", "/local/domain/0/name", "/local/domain/0/domid"] {
            #expect(try await store.getPermissions(path) == dom0Only, "\(path)")
        }
    }

    @Test func theInProcessDoubleStartsWithTheSameHome() async throws {
        let hypervisor = try InProcessHypervisor()
        let store = try hypervisor.connectXenStore(as: .tool)
        defer { store.close() }
        for node in XenStoreEngine.dom0HomeNodes { #expect(try await store.readString(node.path) == node.value) }
        #expect(try await store.directory("/local/domain/0").sorted() == ["domid", "name"])
        let dom0Only = [XenStorePermission(domid: 0, access: .none)]
        for path in ["/local", "/local/domain", "/local/domain/0", "/local/domain/0/name", "/local/domain/0/domid"] {
            #expect(try await store.getPermissions(path) == dom0Only, "\(path)")
        }
    }

    @Test func aDomUCannotReadOrChangeDom0sHome() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let (_, guest) = try await fx.createDomain("guest")
        let store = try guest.connectXenStore()
        defer { store.close() }
        await #expect(throws: XenStoreError.daemon(.eacces)) { _ = try await store.read("/local/domain/0/name") }
        await #expect(throws: XenStoreError.daemon(.eacces)) { try await store.write("/local/domain/0/name", "mine") }
        let dom0Store = try fx.dom0().connectXenStore()
        defer { dom0Store.close() }
        #expect(try await dom0Store.readString("/local/domain/0/name") == "Domain-0")
    }

    @Test func xensOwnToolsFindDom0() throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let socket = LocalHypervisor.xenStorePath(stateDirectory: fx.directory, domain: nil)
        let read = try xenTool("xenstore-read", ["/local/domain/0/name", "/local/domain/0/domid"], socket: socket)
        #expect(read.status == 0)
        #expect(read.output == "Domain-0\n0\n")
        // xenstore-ls -p prints each node's permissions as xenstored holds them: n0.
        let listed = try xenTool("xenstore-ls", ["-p", "/local/domain/0"], socket: socket)
        #expect(listed.status == 0)
        let lines = listed.output.split(separator: "\n")
        #expect(lines.count == 2)
        #expect(lines.contains { $0.hasPrefix("name = \"Domain-0\"") && $0.hasSuffix("(n0)") }, "\(listed.output)")
        #expect(lines.contains { $0.hasPrefix("domid = \"0\"") && $0.hasSuffix("(n0)") }, "\(listed.output)")
    }
}
