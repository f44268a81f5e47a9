import Foundation
import SystemCalls
import Testing
import XenLocal
import XenPlatform
import XenStore
import XenTesting

/// The real CLI as processes: `xensplit hypervisor`, `xensplit domain create`, `xensplit
/// blkback`, and the test frontend in this process reading what it wrote through them.
@Suite("xensplit blkback as a process", .serialized)
struct BlkbackCommandTests {
    static var binary: String { TestCommand.xensplit }

    static func spawn(_ arguments: [String]) throws -> ChildProcess {
        try TestCommand.spawn(binary, arguments)
    }

    @Test("hypervisor, domain create --disk, blkback --platform local; SIGTERM walks the device to Closed")
    func endToEnd() async throws {
        let state = NSTemporaryDirectory() + "xensplit-blkback-cli-\(getpid())"
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: state) }
        let image = state + "/disk.img"
        #expect(FileManager.default.createFile(atPath: image, contents: nil))
        #expect(truncate(image, 2048 * 512) == 0)

        let hypervisor = try Self.spawn(["hypervisor", "--state-dir", state])
        defer {
            hypervisor.signal(SIGTERM)
            hypervisor.wait()
        }
        try await vbdEventually("the hypervisor's socket") { FileManager.default.fileExists(atPath: state + "/xenstored.socket") }
        let create = try Self.spawn(["domain", "create", "guest", "--state-dir", state,
                                     "--disk", "vdev=xvda,access=rw,target=\(image)"])
        create.wait()
        #expect(create.wait().code == 0)

        let blkback = try Self.spawn(["blkback", "--platform", "local", "--state-dir", state, "--workers", "1",
                                      "--io-workers", "1"])
        let guest = try LocalPlatform(stateDirectory: state, domain: "guest")
        let dom0 = try LocalPlatform(stateDirectory: state)
        let domain = guest.domainID
        let front = try VbdAttached.start(guest, domain: domain, device: BlkbackDeviceTests.xvda)
        try await vbdEventually("Connected through the daemon") { front.blkif.state == .connected }
        let bytes = pattern(8192, seed: 0xC11)
        #expect(try front.blkif.write(bytes, sector: 64) == .okay)
        #expect(try front.blkif.read(sector: 64, count: 8192) == (.okay, bytes))

        blkback.signal(SIGTERM)
        // Off the pool: closing, the process waits for this test's frontend, which needs
        // a thread of the pool to follow.
        #expect(try await offThePool { blkback.wait() } == .exited(0))
        let store = try dom0.connectXenStore()
        defer { store.close() }
        #expect(try await readNode(store, front.backendPath + "/state") == "6", "the daemon walked the device to Closed")
        try await vbdEventually("the frontend let go") { front.blkif.disconnects == 1 }
        try await vbdEventually("no ring page still mapped") { front.blkif.endPinnedAccess() }
        try await front.close()

        // The data reached the file itself.
        let handle = try #require(FileHandle(forReadingAtPath: image))
        try handle.seek(toOffset: 64 * 512)
        #expect(Array(try handle.read(upToCount: 8192) ?? Data()) == bytes)
        try handle.close()
    }
}
