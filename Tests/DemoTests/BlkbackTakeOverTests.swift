import Dispatch
import Foundation
import Glibc
import Testing
import XenStore
import XenTesting

/// The block backend killed (or asked to hand over) again and again under a write stream,
/// each time replaced by a new process that takes the Connected disk over from its
/// persistent state (Protocols/blkback-restart.md): the NBD writer sees no error, every
/// acknowledged write is on the disk, and the frontend never leaves Connected. The kills
/// land wherever the stream is, often with requests in the backend's hands, which the new
/// processes report ("took over N requests, re-executed M", printed). The backend's state
/// node is never written meanwhile: each new process adopts the Connected device as it is.
@Suite("blkback killed and taken over, repeatedly", .serialized)
struct BlkbackTakeOverTests {
    /// How each backend is replaced: killed, or asked to hand over by `--take-over`.
    enum Replacement: String, CaseIterable { case sigkill, takeOver }

    @Test(.enabled(if: access(xensplitBinary, X_OK) == 0, "the xensplit binary is not built"),
          arguments: Replacement.allCases)
    func repeatedReplacementsLoseNoWrite(replacement: Replacement) async throws {
        let blocks = 1024
        let blockBytes = 64 << 10
        let kills = 8
        let scenario = try LocalScenario("xensplit-blkback-\(replacement.rawValue)", imageBytes: blocks * blockBytes)
        defer { scenario.stop() }
        let (state, image) = (scenario.state, scenario.image)
        let hypervisor = try await scenario.startHypervisorWithGuest()
        let backend = ["blkback", "--platform", "local", "--state-dir", state, "--workers", "1"]
        var current = try scenario.start("blkback-0", backend)
        let socket = state + "/nbd.sock"
        let blkfront = try scenario.start("blkfront", ["blkfront", "guest", "xvda", "--nbd", "unix:\(socket)",
                                                       "--platform", "local", "--state-dir", state])
        try await eventually("the NBD socket") { FileManager.default.fileExists(atPath: socket) }

        // Every write to the backend's state node from here on is counted (xenstored fires
        // the watch on each write, even of the same value).
        let store = try XenStoreClient(transport: XenStoreSocketTransport(path: state + "/xenstored.socket"))
        defer { store.close() }
        let frontendDomain = try #require(try await store.directory("/local/domain/0/backend/vbd").first)
        let device = try #require(try await store.directory("/local/domain/0/backend/vbd/\(frontendDomain)").first)
        let statePath = "/local/domain/0/backend/vbd/\(frontendDomain)/\(device)/state"
        try await eventually("the backend is Connected") { try await store.readString(statePath) == "4" }
        let stateWrites = try await XenStoreWriteCounter(store, statePath)
        defer { stateWrites.cancel() }

        let client = try NBDStreamClient(socketPath: socket)
        // Never paused: the kills land wherever the stream is.
        let stream = NBDWriteStream(client: client, count: blocks, blockBytes: blockBytes, window: 32, pauseAt: blocks)
        stream.start()
        var tookOver = 0
        var reexecuted = 0
        for round in 1...kills {
            try await eventually("block \(round * blocks / (kills + 2)) acknowledged", seconds: 120) {
                stream.acknowledged.load(ordering: .relaxed) >= round * blocks / (kills + 2)
                    || stream.ended.load(ordering: .acquiring)
            }
            if replacement == .sigkill {
                current.signal(SIGKILL)
                #expect(await current.wait() == SIGKILL)
                current = try scenario.start("blkback-\(round)", backend)
            } else {
                let previous = current
                current = try scenario.start("blkback-\(round)", backend + ["--take-over"])
                // It drains, answers and exits of its own accord, its devices left Connected.
                try await eventually("backend \(round - 1) handed over and exited", seconds: 60) { !previous.process.isRunning }
                #expect(await previous.wait() == 0, "\(previous.output)")
                #expect(previous.output.contains("handed over; exiting without closing devices"))
            }
            do {
                try await eventually("backend \(round) took the disk over", seconds: 60) {
                    current.output.contains("took over ")
                }
            } catch {
                Issue.record("backend \(round) did not take over: \(current.output)\nfrontend: \(blkfront.output)")
                throw error
            }
            let line = current.output.split(separator: "\n").first { $0.contains("took over ") } ?? ""
            if let range = line.range(of: "took over ") {
                let words = line[range.upperBound...].split(separator: " ")
                tookOver += Int(words.first ?? "") ?? 0
                reexecuted += Int(words.dropFirst(3).first?.trimmingCharacters(in: .punctuationCharacters) ?? "") ?? 0
            }
        }
        try await eventually("the stream finishes", seconds: 120) { stream.ended.load(ordering: .acquiring) }
        print("blkback \(replacement.rawValue): \(kills) replacements, took over \(tookOver) requests, re-executed \(reexecuted)")
        #expect(stream.failures.withLock { $0 } == [], "the NBD client saw no error")
        #expect(stream.acknowledged.load(ordering: .relaxed) == blocks)
        // Whether a kill found requests in the backend's hands is up to timing here (one
        // disk, 8 kills); the fio run (4 disks at depth 32, 20 kills) requires it.
        // The frontend never saw the backend leave: connected once, never closed.
        #expect(blkfront.output.components(separatedBy: "-> Connected").count - 1 == 1, "\(blkfront.output)")
        #expect(!blkfront.output.contains("-> Closing"), "\(blkfront.output)")
        #expect(stateWrites.values == [], "writes to \(statePath) during \(kills) take-overs")

        var mismatches: [Int] = []
        for index in 0 ..< blocks
        where try client.read(offset: UInt64(index * blockBytes), length: blockBytes) != NBDWriteStream.block(index, bytes: blockBytes) {
            mismatches.append(index)
        }
        #expect(mismatches == [], "blocks that read back wrong through NBD")
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
        // The same watch sees the closing writes: it would have seen a take-over's.
        try await eventually("the state node's closing writes counted") { stateWrites.values.contains("6") }
        // A clean stop closes the device and leaves no restart state behind.
        let left = (try? FileManager.default.contentsOfDirectory(atPath: state + "/blkback")) ?? []
        #expect(left == [], "state files left after SIGTERM: \(left)")
        hypervisor.signal(SIGTERM)
        #expect(await hypervisor.wait() == 0, "\(hypervisor.output)")
    }
}
