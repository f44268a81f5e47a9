import Foundation
import Glibc
import Testing
import XenStore
import XenTesting

/// `xensplit backend` (vbds and vifs in one process) killed under a write stream and
/// replaced by a new `xensplit backend`: the new process takes the Connected disk over from
/// the restart state (as `xensplit blkback` does), with no write to the backend's state
/// node; the writer sees no error and every acknowledged write is on the disk.
@Suite("xensplit backend killed and taken over", .serialized)
struct BackendTakeOverTests {
    @Test(.enabled(if: access(xensplitBinary, X_OK) == 0, "the xensplit binary is not built"))
    func killedBackendsDisksAreTakenOver() async throws {
        let blocks = 512
        let blockBytes = 64 << 10
        let kills = 3
        let scenario = try LocalScenario("xensplit-backend-takeover", imageBytes: blocks * blockBytes)
        defer { scenario.stop() }
        let (state, image) = (scenario.state, scenario.image)
        let hypervisor = try await scenario.startHypervisorWithGuest()
        let backend = ["backend", "--devices", "vbd,vif", "--platform", "local", "--state-dir", state, "--workers", "1"]
        var current = try scenario.start("backend-0", backend)
        let socket = state + "/nbd.sock"
        let blkfront = try scenario.start("blkfront", ["blkfront", "guest", "xvda", "--nbd", "unix:\(socket)",
                                                       "--platform", "local", "--state-dir", state])
        try await eventually("the NBD socket") { FileManager.default.fileExists(atPath: socket) }

        let store = try XenStoreClient(transport: XenStoreSocketTransport(path: state + "/xenstored.socket"))
        defer { store.close() }
        let frontendDomain = try #require(try await store.directory("/local/domain/0/backend/vbd").first)
        let device = try #require(try await store.directory("/local/domain/0/backend/vbd/\(frontendDomain)").first)
        let statePath = "/local/domain/0/backend/vbd/\(frontendDomain)/\(device)/state"
        try await eventually("the backend is Connected") { try await store.readString(statePath) == "4" }
        let stateWrites = try await XenStoreWriteCounter(store, statePath)
        defer { stateWrites.cancel() }

        let client = try NBDStreamClient(socketPath: socket)
        let stream = NBDWriteStream(client: client, count: blocks, blockBytes: blockBytes, window: 32, pauseAt: blocks)
        stream.start()
        for round in 1...kills {
            try await eventually("block \(round * blocks / (kills + 2)) acknowledged", seconds: 120) {
                stream.acknowledged.load(ordering: .relaxed) >= round * blocks / (kills + 2)
                    || stream.ended.load(ordering: .acquiring)
            }
            current.signal(SIGKILL)
            #expect(await current.wait() == SIGKILL)
            current = try scenario.start("backend-\(round)", backend)
            do {
                try await eventually("backend \(round) took the disk over", seconds: 60) { current.output.contains("took over ") }
            } catch {
                Issue.record("backend \(round) did not take over: \(current.output)\nfrontend: \(blkfront.output)")
                throw error
            }
        }
        try await eventually("the stream finishes", seconds: 120) { stream.ended.load(ordering: .acquiring) }
        #expect(stream.failures.withLock { $0 } == [], "the NBD client saw no error")
        #expect(stream.acknowledged.load(ordering: .relaxed) == blocks)
        #expect(blkfront.output.components(separatedBy: "-> Connected").count - 1 == 1, "\(blkfront.output)")
        #expect(!blkfront.output.contains("-> Closing"), "\(blkfront.output)")
        #expect(stateWrites.values == [], "writes to \(statePath) during \(kills) take-overs")
        client.disconnect()
        let file = [UInt8](try Data(contentsOf: URL(fileURLWithPath: image)))
        let wrongInFile = (0 ..< blocks).filter {
            Array(file[$0 * blockBytes ..< ($0 + 1) * blockBytes]) != NBDWriteStream.block($0, bytes: blockBytes)
        }
        #expect(wrongInFile == [], "blocks the image file holds wrong")

        blkfront.signal(SIGTERM)
        #expect(await blkfront.wait() == 0, "\(blkfront.output)")
        current.signal(SIGTERM)
        #expect(await current.wait() == 0, "\(current.output)")
        try await eventually("the state node's closing writes counted") { stateWrites.values.contains("6") }
        let left = (try? FileManager.default.contentsOfDirectory(atPath: state + "/blkback")) ?? []
        #expect(left == [], "state files left after SIGTERM: \(left)")
        hypervisor.signal(SIGTERM)
        #expect(await hypervisor.wait() == 0, "\(hypervisor.output)")
    }
}
