import Foundation
import Testing
import XenTesting

/// `xensplit blkfront --abi` against the `xensplit blkback` process: the backend reads the
/// frontend's `protocol` node and serves that ring layout, and data written through NBD
/// reads back and lands in the image.
@Suite("blkfront ABIs against the blkback process", .serialized)
struct BlkfrontABIProcessTests {
    @Test(.enabled(if: toolExists("qemu-io"), "qemu-io (qemu-utils) is not installed"),
          arguments: [("native", "x86_64-abi"), ("x86_32", "x86_32-abi"), ("x86_64", "x86_64-abi")])
    func dataRoundTripsInEachABI(abi: String, protocolName: String) async throws {
        let scenario = try LocalScenario("xensplit-blkfront-abi", imageBytes: 8 << 20)
        defer { scenario.stop() }
        let (state, image) = (scenario.state, scenario.image)
        let start = scenario.start
        let hypervisor = try await scenario.startHypervisorWithGuest()
        let blkback = try start("blkback", ["blkback", "--platform", "local", "--state-dir", state, "--workers", "1"])
        let socket = state + "/nbd.sock"
        let blkfront = try start("blkfront", ["blkfront", "guest", "xvda", "--nbd", "unix:\(socket)", "--abi", abi,
                                              "--platform", "local", "--state-dir", state])
        try await eventually("the NBD socket") { FileManager.default.fileExists(atPath: socket) }
        #expect(blkback.output.contains("protocol=\(protocolName)"), "the backend serves \(protocolName): \(blkback.output)")

        // Direct (4 KiB, 44 KiB) and indirect (128 KiB, 1 MiB) requests, flushed, read back.
        let io = try await runTool(["qemu-io", "-f", "raw",
                                    "-c", "write -P 0x11 0 4k", "-c", "write -P 0x22 64k 44k",
                                    "-c", "write -P 0x33 1m 128k", "-c", "write -P 0x44 4m 1m", "-c", "flush",
                                    "-c", "read -P 0x11 0 4k", "-c", "read -P 0x22 64k 44k",
                                    "-c", "read -P 0x33 1m 128k", "-c", "read -P 0x44 4m 1m",
                                    "nbd+unix:///?socket=\(socket)"], in: state)
        #expect(io.status == 0 && !io.output.contains("Pattern verification failed"), "\(io.output)")
        var expected = [UInt8](repeating: 0, count: 8 << 20)
        for (byte, offset, length) in [(UInt8(0x11), 0, 4 << 10), (0x22, 64 << 10, 44 << 10),
                                       (0x33, 1 << 20, 128 << 10), (0x44, 4 << 20, 1 << 20)] {
            expected.replaceSubrange(offset ..< offset + length, with: [UInt8](repeating: byte, count: length))
        }
        #expect([UInt8](try Data(contentsOf: URL(fileURLWithPath: image))) == expected, "the image holds what was written")

        blkfront.signal(SIGTERM)
        #expect(await blkfront.wait() == 0, "\(blkfront.output)")
        blkback.signal(SIGTERM)
        #expect(await blkback.wait() == 0, "\(blkback.output)")
        hypervisor.signal(SIGTERM)
        #expect(await hypervisor.wait() == 0, "\(hypervisor.output)")
    }
}
