import Foundation
import Testing
import XenLocal
import XenPlatform

/// ``LocalToolstack/scriptNetworkNamespace``: the vif script runs in the namespace named.
@Suite(.serialized, .enabled(if: getuid() == 0, "network namespaces need root"))
struct ToolstackScriptNamespaceTests {
    /// The network namespace identity (`net:[INODE]`) of a process started in `ns`, or of
    /// this process when nil.
    static func namespaceIdentity(_ ns: String?) throws -> String {
        guard let ns else { return try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net") }
        let r = try DomainCommandDiskTests.run("/usr/sbin/ip", ["netns", "exec", ns, "readlink", "/proc/self/ns/net"])
        return r.out.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func vifScriptRunsInTheNamedNamespace() async throws {
        let fixture = try HypervisorFixture()
        defer { fixture.stop() }
        let ns = "xstsns\(getpid())"
        let added = try DomainCommandDiskTests.run("/usr/sbin/ip", ["netns", "add", ns])
        try #require(added.status == 0, "ip netns add \(ns): \(added.err)")
        defer { _ = try? DomainCommandDiskTests.run("/usr/sbin/ip", ["netns", "del", ns]) }
        let record = fixture.directory + "/recorded"
        let script = fixture.directory + "/record-netns"
        try DomainCommandVifHotplugTests.write(script: script, """
            readlink /proc/self/ns/net >> \(record)
            [ "$1" = online ] && xenstore-write "/local/domain/0/$XENBUS_PATH/hotplug-status" connected
            exit 0
            """)
        let dom0 = try fixture.dom0()
        let backend = try await DomainCommandVifHotplugTests.StandInNetback(dom0)
        var toolstack = LocalToolstack(platform: dom0)
        toolstack.scriptNetworkNamespace = "/var/run/netns/" + ns
        _ = try await toolstack.createDomain(name: "g", disks: [], nics: [try VifSpec(parsing: "bridge=none,script=\(script)")])
        try await toolstack.destroy(name: "g")
        await backend.stop()

        let inside = try Self.namespaceIdentity(ns)
        #expect(inside.hasPrefix("net:["))
        #expect(inside != (try Self.namespaceIdentity(nil)))
        #expect(DomainCommandVifHotplugTests.recorded(record) == [inside, inside], "online and offline both ran in \(ns)")
    }

    @Test func aMissingNamespaceFailsTheScriptAndCreatesNothing() async throws {
        let fixture = try HypervisorFixture()
        defer { fixture.stop() }
        let dom0 = try fixture.dom0()
        let backend = try await DomainCommandVifHotplugTests.StandInNetback(dom0)
        var toolstack = LocalToolstack(platform: dom0)
        toolstack.scriptNetworkNamespace = "/var/run/netns/xs-no-such-namespace-\(getpid())"
        await #expect {
            try await toolstack.createDomain(name: "g", disks: [], nics: [try VifSpec(parsing: "bridge=none,script=/bin/true")])
        } throws: { error in
            guard case let DeviceSpecError.scriptSpawnFailed(_, _, errno)? = error as? DeviceSpecError else { return false }
            return errno == ENOENT
        }
        #expect(try dom0.listDomains().allSatisfy { $0.name != "g" })
        await backend.stop()
    }
}
