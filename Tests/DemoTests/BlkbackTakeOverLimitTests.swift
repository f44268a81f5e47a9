import Foundation
import Glibc
import Testing
import XenTesting
import XenStore

/// A replacement blkback allowing fewer indirect segments than the connection was
/// negotiated with refuses the take-over, with the reason logged and in the error node, instead of
/// refusing the frontend's requests one by one; one allowing as many takes it over.
@Suite("blkback take-over with a smaller --max-indirect-segments", .serialized)
struct BlkbackTakeOverLimitTests {
    @Test(.enabled(if: access(xensplitBinary, X_OK) == 0, "the xensplit binary is not built"))
    func smallerLimitRefusesTheTakeOver() async throws {
        let scenario = try LocalScenario("xensplit-blkback-limits", imageBytes: 16 << 20)
        defer { scenario.stop() }
        let state = scenario.state
        let hypervisor = try await scenario.startHypervisorWithGuest()
        let backend = ["blkback", "--platform", "local", "--state-dir", state, "--workers", "1"]
        let first = try scenario.start("blkback-0", backend + ["--max-indirect-segments", "32"])
        let socket = state + "/nbd.sock"
        let blkfront = try scenario.start("blkfront", ["blkfront", "guest", "xvda", "--nbd", "unix:\(socket)",
                                                       "--platform", "local", "--state-dir", state])
        try await eventually("the NBD socket") { FileManager.default.fileExists(atPath: socket) }
        let store = try XenStoreClient(transport: XenStoreSocketTransport(path: state + "/xenstored.socket"))
        defer { store.close() }
        let frontendDomain = try #require(try await store.directory("/local/domain/0/backend/vbd").first)
        let device = try #require(try await store.directory("/local/domain/0/backend/vbd/\(frontendDomain)").first)
        let node = "/local/domain/0/backend/vbd/\(frontendDomain)/\(device)"
        try await eventually("the backend is Connected") { try await store.readString(node + "/state") == "4" }
        #expect(try await store.readString(node + "/feature-max-indirect-segments") == "32")

        // As many: taken over.
        first.signal(SIGKILL)
        #expect(await first.wait() == SIGKILL)
        let same = try scenario.start("blkback-1", backend + ["--max-indirect-segments", "32"])
        try await eventually("the same limit takes the disk over", seconds: 60) { same.output.contains("took over ") }
        #expect(try await store.readString(node + "/state") == "4")

        // Fewer: refused, and said why.
        same.signal(SIGKILL)
        #expect(await same.wait() == SIGKILL)
        let smaller = try scenario.start("blkback-2", backend + ["--max-indirect-segments", "8"])
        // The refusal is judged by its log line, which lasts: the state passes through
        // Closing and on as the frontend starts over at the new limit, too quickly for a
        // poll on a loaded machine to be sure to see it (the error node's text is checked
        // at the xenbus level, in AdoptionTests).
        let reason = "negotiated feature-max-indirect-segments 32, this backend allows 8"
        try await eventually("the smaller limit refuses the take-over", seconds: 60) {
            smaller.output.contains("fatal: ") && smaller.output.contains(reason)
        }
        #expect(!smaller.output.contains("took over "), "\(smaller.output)")

        blkfront.signal(SIGKILL)
        _ = await blkfront.wait()
        smaller.signal(SIGTERM)
        #expect(await smaller.wait() == 0, "\(smaller.output)")
        hypervisor.signal(SIGTERM)
        #expect(await hypervisor.wait() == 0, "\(hypervisor.output)")
    }
}
