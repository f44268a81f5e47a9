import Blkif
import Testing
import XenLocal
import XenPlatform
import XenStore
@testable import BlockBackend

/// A toolstack removing a disk and adding it again at once (a fast detach/attach, a
/// script retrying): the daemon serves the new device with exactly one driver.
@Suite("blkback: a device removed and added again", .serialized)
struct BlkbackReplugTests {
    static let xvda = try! DiskSpec(parsing: "vdev=xvda,access=rw,target=/dev/null").vdev.number

    /// Both nodes as the toolstack left them (before any driver wrote to them).
    struct Snapshot {
        var backend: [String: String] = [:]
        var frontend: [String: String] = [:]
    }

    static func snapshot(_ store: XenStoreClient, backend: String, frontend: String) async throws -> Snapshot {
        var snap = Snapshot()
        for key in try await store.directory(backend) { snap.backend[key] = try await store.readString(backend + "/" + key) }
        for key in try await store.directory(frontend) { snap.frontend[key] = try await store.readString(frontend + "/" + key) }
        return snap
    }

    /// Removes both nodes and writes them again as the toolstack first did: in one
    /// transaction (so no watcher can see the gap) or in two.
    static func replug(_ store: XenStoreClient, _ snap: Snapshot, backend: String, frontend: String,
                       frontendID: DomainID, atomically: Bool) async throws {
        func remove(_ tx: XenStoreTransaction) async throws {
            try await tx.rm(backend)
            try await tx.rm(frontend)
        }
        func add(_ tx: XenStoreTransaction) async throws {
            try await tx.mkdir(frontend)
            try await tx.setPermissions(frontend, [XenStorePermission(domid: frontendID, access: .none),
                                                   XenStorePermission(domid: 0, access: .read)])
            for (key, value) in snap.frontend { try await tx.write(frontend + "/" + key, value) }
            try await tx.mkdir(backend)
            try await tx.setPermissions(backend, [XenStorePermission(domid: 0, access: .none),
                                                  XenStorePermission(domid: frontendID, access: .read)])
            for (key, value) in snap.backend { try await tx.write(backend + "/" + key, value) }
        }
        if atomically {
            try await store.withTransaction { tx in
                try await remove(tx)
                try await add(tx)
            }
        } else {
            try await store.withTransaction { tx in try await remove(tx) }
            try await store.withTransaction { tx in try await add(tx) }
        }
    }

    @Test("removed and added again, in one transaction or two: one driver serves the new device",
          arguments: [true, false])
    func replug(atomically: Bool) async throws {
        let world = try VbdWorld()
        defer { world.stop() }
        let (id, guest, _) = try await world.guestWithOneDisk(sectors: 2048)
        let store = try world.dom0.connectXenStore()
        defer { store.close() }
        let backendPath = LocalToolstack.backendPath(kind: "vbd", frontend: id, device: Self.xvda)
        let frontendPath = LocalToolstack.frontendPath(kind: "vbd", frontend: id, device: Self.xvda)
        let snap = try await Self.snapshot(store, backend: backendPath, frontend: frontendPath)
        #expect(snap.backend["state"] == "1")

        let running = RunningDaemon(try world.daemon())
        let first = try VbdAttached.start(guest, domain: id, device: Self.xvda)
        try await vbdEventually("first Connected") { first.blkif.state == .connected }
        let bytes = pattern(8192, seed: atomically ? 1 : 2)
        #expect(try first.blkif.write(bytes, sector: 16) == .okay)

        try await Self.replug(store, snap, backend: backendPath, frontend: frontendPath, frontendID: id,
                              atomically: atomically)
        // The old frontend goes away without a word (its xenstore connection closes), as a
        // guest's driver instance does when its device node is replaced.
        first.blkif.dropXenStore()
        _ = await first.blkif.stopped()
        try await first.close()

        let second = try VbdAttached.start(guest, domain: id, device: Self.xvda)
        try await vbdEventually("second Connected") { second.blkif.state == .connected }
        let (status, back) = try second.blkif.read(sector: 16, count: bytes.count)
        #expect(status == .okay)
        #expect(back == bytes)
        // One driver, one queue: two drivers would have mapped the new ring twice.
        #expect(running.daemon.connectedDevices == [backendPath: true])
        #expect(running.daemon.queuesPerWorker.reduce(0, +) == 1)
        #expect(try world.dom0.domainUsage()[id]?.pinnedGrants == 1, "only the new ring page is mapped")
        try await second.close()
        try await running.stop()
    }
}
