import Foundation
import Glibc
@testable import NBD
import Testing
import XenTesting

/// `xensplit blkback --engine`: io_uring unless the thread pool is asked for, and either one
/// serves a disk end to end (hypervisor, blkback, blkfront and an NBD client as separate
/// processes and a thread).
@Suite("xensplit blkback --engine", .serialized)
struct BlkbackEngineOptionTests {
    /// `nil`: no --engine, which must mean io_uring.
    @Test(arguments: [nil, "threads", "uring"] as [String?])
    func theChosenEngineServesTheDisk(engine: String?) async throws {
        try #require(access(xensplitBinary, X_OK) == 0, "the xensplit binary is not built at \(xensplitBinary)")
        let blockBytes = 64 << 10
        let scenario = try LocalScenario("xensplit-blkback-engine-\(engine ?? "default")", imageBytes: 16 * blockBytes)
        defer { scenario.stop() }
        let state = scenario.state
        let hypervisor = try await scenario.startHypervisorWithGuest()
        let backend = try scenario.start("blkback", ["blkback", "--platform", "local", "--state-dir", state, "--workers", "1"]
            + (engine.map { ["--engine", $0] } ?? []))
        let socket = state + "/nbd.sock"
        let blkfront = try scenario.start("blkfront", ["blkfront", "guest", "xvda", "--nbd", "unix:\(socket)",
                                                       "--platform", "local", "--state-dir", state])
        try await eventually("the NBD socket") { FileManager.default.fileExists(atPath: socket) }
        let expected = engine ?? "uring"
        #expect(backend.output.contains("blkback: block I/O engine") && backend.output.contains("engine=\(expected)"),
                "the backend names its engine, \(expected): \(backend.output)")

        let client = try NBDStreamClient(socketPath: socket)
        let block = NBDWriteStream.block(3, bytes: blockBytes)
        try client.send(.write, cookie: 7, offset: UInt64(3 * blockBytes), length: UInt32(blockBytes), payload: block)
        let answer = try client.reply()
        #expect(answer.error == .success && answer.cookie == 7, "\(answer)")
        try client.send(.flush, cookie: 8, offset: 0, length: 0)
        #expect(try client.reply().error == .success)
        #expect(try client.read(offset: UInt64(3 * blockBytes), length: blockBytes) == block, "read back through NBD")
        client.disconnect()
        let file = [UInt8](try Data(contentsOf: URL(fileURLWithPath: scenario.image)))
        #expect(Array(file[3 * blockBytes ..< 4 * blockBytes]) == block, "the block in the image file")

        blkfront.signal(SIGTERM)
        #expect(await blkfront.wait() == 0, "\(blkfront.output)")
        backend.signal(SIGTERM)
        #expect(await backend.wait() == 0, "\(backend.output)")
        hypervisor.signal(SIGTERM)
        #expect(await hypervisor.wait() == 0, "\(hypervisor.output)")
    }

    @Test func anUnknownEngineIsRefusedNamingIt() async throws {
        try #require(access(xensplitBinary, X_OK) == 0, "the xensplit binary is not built at \(xensplitBinary)")
        let directory = try makeTemporaryDirectory("xensplit-blkback-engine-aio")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let child = try Child(xensplitBinary, ["blkback", "--engine", "aio", "--platform", "local", "--state-dir", directory],
                              outputPath: directory + "/blkback.log")
        #expect(await child.wait() != 0)
        #expect(child.output.contains("'aio'") && child.output.contains("--engine"), "\(child.output)")
    }
}
