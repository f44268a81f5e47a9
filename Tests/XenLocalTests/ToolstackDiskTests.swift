import Foundation
import Testing
import XenLocal
import XenPlatform
import XenStore

/// `domain create --disk`: the vbd nodes libxl writes, their permissions, and clean removal.
@Suite struct ToolstackDiskTests {
    /// A sparse file in the fixture's directory.
    static func image(_ fx: HypervisorFixture, _ name: String) throws -> String {
        let path = fx.directory + "/" + name
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        try FileHandle(forWritingAtPath: path).map { try $0.truncate(atOffset: 1 << 20); try $0.close() }
        return path
    }

    /// The frontend's permissions: the guest owns it, dom0 reads it.
    static func dom0Reads(_ domU: DomainID) -> [XenStorePermission] {
        [XenStorePermission(domid: domU, access: .none), XenStorePermission(domid: 0, access: .read)]
    }

    /// The backend's permissions: dom0 owns it, the guest reads it.
    static func domUReads(_ domU: DomainID) -> [XenStorePermission] {
        [XenStorePermission(domid: 0, access: .none), XenStorePermission(domid: domU, access: .read)]
    }

    @Test func createWritesBothDirectoriesAsLibxlDoesAndDestroyRemovesThem() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let a = try Self.image(fx, "a.img"), b = try Self.image(fx, "b.img")
        let disks = [try DiskSpec(parsing: "\(a),raw,xvda,rw"),
                     try DiskSpec(parsing: "no-discard, direct-io-safe, untrusted, vdev=xvdb, access=ro, target=\(b)")]
        let dom0 = try fx.dom0()
        let id = try await LocalToolstack(platform: dom0).createDomain(name: "guest", disks: disks)
        let store = try dom0.connectXenStore()
        defer { store.close() }

        let expected: [(Int, [String: String], [String: String])] = [
            (51712,
             ["params": a, "frontend-id": "\(id)", "online": "1", "removable": "0", "bootable": "1", "state": "1",
              "dev": "xvda", "type": "file", "mode": "w", "device-type": "disk", "discard-enable": "1"],
             ["backend-id": "0", "state": "1", "virtual-device": "51712", "device-type": "disk", "trusted": "1"]),
            (51728,
             ["params": b, "frontend-id": "\(id)", "online": "1", "removable": "0", "bootable": "1", "state": "1",
              "dev": "xvdb", "type": "file", "mode": "r", "device-type": "disk", "discard-enable": "0", "direct-io-safe": "1"],
             ["backend-id": "0", "state": "1", "virtual-device": "51728", "device-type": "disk", "trusted": "0"]),
        ]
        #expect(Set(try await store.directory("/local/domain/0/backend/vbd/\(id)")) == ["51712", "51728"])
        #expect(Set(try await store.directory("/local/domain/\(id)/device/vbd")) == ["51712", "51728"])
        for (devid, backKeys, frontKeys) in expected {
            let be = "/local/domain/0/backend/vbd/\(id)/\(devid)"
            let fe = "/local/domain/\(id)/device/vbd/\(devid)"
            var back = backKeys
            back["frontend"] = fe
            var front = frontKeys
            front["backend"] = be
            #expect(Set(try await store.directory(be)) == Set(back.keys))
            #expect(Set(try await store.directory(fe)) == Set(front.keys))
            #expect(try await store.getPermissions(be) == Self.domUReads(id))
            #expect(try await store.getPermissions(fe) == Self.dom0Reads(id))
            for (key, value) in back {
                #expect(try await store.readString(be + "/" + key) == value, "\(be)/\(key)")
                #expect(try await store.getPermissions(be + "/" + key) == Self.domUReads(id), "\(be)/\(key)")
            }
            for (key, value) in front {
                #expect(try await store.readString(fe + "/" + key) == value, "\(fe)/\(key)")
                #expect(try await store.getPermissions(fe + "/" + key) == Self.dom0Reads(id), "\(fe)/\(key)")
            }
        }

        // The guest reads both sides, writes its frontend state, and cannot touch the backend.
        let guest = try LocalPlatform(stateDirectory: fx.directory, domain: "guest")
        let guestStore = try guest.connectXenStore()
        defer { guestStore.close() }
        let fe = "/local/domain/\(id)/device/vbd/51712"
        let be = try await guestStore.readString(fe + "/backend")
        #expect(try await guestStore.readString(be + "/params") == a)
        try await guestStore.write(fe + "/state", "3")
        #expect(try await store.readString(fe + "/state") == "3")
        await #expect(throws: XenStoreError.daemon(.eacces)) { try await guestStore.write(be + "/state", "4") }
        await #expect(throws: XenStoreError.daemon(.eacces)) { try await guestStore.write(be + "/params", "/etc/shadow") }
        await #expect(throws: XenStoreError.daemon(.eacces)) { try await guestStore.rm(be) }
        #expect(try await store.readString(be + "/params") == a)

        try await LocalToolstack(platform: dom0).destroy(name: "guest")
        await #expect(throws: XenStoreError.daemon(.enoent)) { _ = try await store.directory("/local/domain/0/backend/vbd/\(id)") }
        await #expect(throws: XenStoreError.daemon(.enoent)) { _ = try await store.directory("/local/domain/\(id)") }
        #expect(try dom0.listDomains().map(\.name) == ["Domain-0"])
    }

    @Test func destroyLeavesOtherDomainsBackends() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let a = try Self.image(fx, "a.img")
        let dom0 = try fx.dom0()
        let toolstack = LocalToolstack(platform: dom0)
        let one = try await toolstack.createDomain(name: "one", disks: [try DiskSpec(parsing: "\(a),,xvda,ro")])
        let two = try await toolstack.createDomain(name: "two", disks: [try DiskSpec(parsing: "\(a),,xvdb,ro")])
        try await toolstack.destroy(name: "one")
        let store = try dom0.connectXenStore()
        defer { store.close() }
        #expect(try await store.directory("/local/domain/0/backend/vbd") == ["\(two)"])
        #expect(try await store.readString("/local/domain/0/backend/vbd/\(two)/51728/params") == a)
        await #expect(throws: XenStoreError.daemon(.enoent)) { _ = try await store.directory("/local/domain/0/backend/vbd/\(one)") }
        try await toolstack.destroy(name: "two")
        await #expect(throws: XenStoreError.daemon(.enoent)) { _ = try await store.directory("/local/domain/0/backend/vbd") }
    }

    /// The second disk's target is missing: the first disk was attached by then, and the
    /// domain and that disk's backend directory must both be gone.
    @Test func failureMidwayLeavesNoDomain() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let a = try Self.image(fx, "a.img")
        let missing = fx.directory + "/missing.img"
        let dom0 = try fx.dom0()
        let disks = [try DiskSpec(parsing: "\(a),,xvda"), try DiskSpec(parsing: "\(missing),,xvdb")]
        await #expect(throws: DeviceSpecError.targetUnavailable(path: missing, errno: ENOENT)) {
            _ = try await LocalToolstack(platform: dom0).createDomain(name: "guest", disks: disks)
        }
        #expect(try dom0.listDomains().map(\.name) == ["Domain-0"])
        let store = try dom0.connectXenStore()
        defer { store.close() }
        await #expect(throws: XenStoreError.daemon(.enoent)) { _ = try await store.directory("/local/domain/0/backend/vbd") }
        #expect(try await store.directory("/local/domain").filter { $0 != "0" }.isEmpty)

        // A directory is not a disk, and says so.
        await #expect(throws: DeviceSpecError.targetNotDisk(path: fx.directory, kind: "directory")) {
            _ = try await LocalToolstack(platform: dom0).createDomain(name: "guest", disks: [try DiskSpec(parsing: "\(fx.directory),,xvda")])
        }
        #expect(try dom0.listDomains().map(\.name) == ["Domain-0"])
    }

    /// Specs that clash are refused before a domain exists.
    @Test func clashingSpecsCreateNothing() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let a = try Self.image(fx, "a.img")
        let dom0 = try fx.dom0()
        await #expect(throws: DeviceSpecError.duplicateVirtualDevice(vdev: "d0p0", number: 51712, other: "xvda")) {
            _ = try await LocalToolstack(platform: dom0).createDomain(
                name: "guest", disks: [try DiskSpec(parsing: "\(a),,xvda,ro"), try DiskSpec(parsing: "\(a),,d0p0,ro")])
        }
        await #expect(throws: DeviceSpecError.self) {
            _ = try await LocalToolstack(platform: dom0).createDomain(name: "guest", disks: [try DiskSpec(parsing: "\(a),,xvda,backend=driver")])
        }
        #expect(try dom0.listDomains().map(\.name) == ["Domain-0"])
    }

    /// A device id the guest already has is refused, and the existing one is untouched.
    @Test func attachingTheSameVdevTwiceIsRefused() async throws {
        let fx = try HypervisorFixture()
        defer { fx.stop() }
        let a = try Self.image(fx, "a.img"), b = try Self.image(fx, "b.img")
        let dom0 = try fx.dom0()
        let toolstack = LocalToolstack(platform: dom0)
        let id = try await toolstack.createDomain(name: "guest", disks: [try DiskSpec(parsing: "\(a),,xvda")])
        let fe = "/local/domain/\(id)/device/vbd/51712"
        await #expect(throws: DeviceSpecError.deviceExists(path: fe)) {
            try await toolstack.attachDisk(try DiskSpec(parsing: "\(b),,xvda"), to: id)
        }
        let store = try dom0.connectXenStore()
        defer { store.close() }
        #expect(try await store.readString("/local/domain/0/backend/vbd/\(id)/51712/params") == a)
        try await toolstack.destroy(name: "guest")

        // Nor is a disk for a domain that is gone.
        await #expect(throws: PlatformError.invalidArgument("no domain \(id)")) {
            try await toolstack.attachDisk(try DiskSpec(parsing: "\(b),,xvdb"), to: id)
        }
        await #expect(throws: XenStoreError.daemon(.enoent)) { _ = try await store.directory("/local/domain/0/backend/vbd") }
    }
}
